"""What the kernel says about mounts, processes and flocks, and where cgroups live."""
import fcntl
import os
import shutil
import subprocess
import sys
import time

import pytest

from vz7native import procfs
from vz7native.host import Host
from vz7native.host.status import cgroup_dir


def _wait_until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


# -- mounts ----------------------------------------------------------------------

def test_the_mount_table_has_the_root_and_proc():
    points = {m.mount_point: m for m in procfs.mounts()}
    assert b"/" in points
    assert points[b"/proc"].fstype == b"proc"
    assert points[b"/proc"].devnum == os.stat("/proc").st_dev


@pytest.mark.root
def test_mountinfo_unescapes_awkward_mount_points(tmpfs_at, tmp_path):
    path = tmpfs_at(b"a b\tc\\d\xe9\nx", source=b"src with space", options=b"nosuid,size=2m")
    found = procfs.mounts_at(path)
    assert len(found) == 1
    entry = found[0]
    assert entry.mount_point == os.path.realpath(path)
    assert (entry.fstype, entry.source, entry.root) == (b"tmpfs", b"src with space", b"/")
    assert entry.devnum == os.stat(path).st_dev
    # nosuid is an option of this mount, the size one of the filesystem.
    assert b"nosuid" in entry.options.split(b",") and b"size=2048k" not in entry.options
    assert b"size=2048k" in entry.super_options.split(b",")
    assert entry in procfs.mounts()
    parent, = [m for m in procfs.mounts() if m.mount_id == entry.parent_id]
    assert parent.devnum == os.stat(str(tmp_path)).st_dev


@pytest.mark.root
def test_mounts_at_lists_stacked_mounts_bottom_first(tmpfs_at):
    path = tmpfs_at(b"stacked", source=b"lower")
    subprocess.check_call([b"mount", b"-t", b"tmpfs", b"upper", path])
    assert [m.source for m in procfs.mounts_at(path)] == [b"lower", b"upper"]
    assert procfs.mounts_at(path + b"/") == procfs.mounts_at(path)


def test_cgroup_hierarchies_from_the_mount_table(tmp_path):
    host = Host(str(tmp_path))
    root = os.fsencode(str(tmp_path))

    def mount(point, fstype, super_options):
        # A v1 hierarchy names its controllers in the filesystem's options only.
        return procfs.MountEntry(mount_id=30, parent_id=20, devnum=os.makedev(0, 30), root=b"/",
                                 mount_point=point, options=b"rw,nosuid,nodev,relatime",
                                 fstype=fstype, source=fstype, super_options=super_options)

    mounts = [
        mount(b"/sys/fs/cgroup/ve", b"cgroup", b"rw,ve"),  # not this host
        mount(root + b"/cg/v", b"cgroup", b"rw,ve"),
        mount(root + b"/cg/fr", b"cgroup", b"rw,freezer"),
        mount(root + b"/cg/unified", b"cgroup2", b"rw,nsdelegate"),
    ]
    assert cgroup_dir(host, "ve", mounts) == root + b"/cg/v"
    assert cgroup_dir(host, "freezer", mounts) == root + b"/cg/fr"
    assert cgroup_dir(host, "memory", mounts) == root + b"/sys/fs/cgroup/memory"
    assert cgroup_dir(host, "nosuid", mounts) == root + b"/sys/fs/cgroup/nosuid"
    assert cgroup_dir(Host("/"), "ve", mounts) == b"/sys/fs/cgroup/ve"
    assert cgroup_dir(Host("/"), "ve", []) == b"/sys/fs/cgroup/ve"


# -- processes -------------------------------------------------------------------

def test_processes():
    code = "print('ready', flush=True); import time; time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code, "arg two"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"     # exec'd: its command line is final
        assert procfs.pid_alive(proc.pid)
        assert procfs.argv(proc.pid) == [os.fsencode(sys.executable), b"-c", code.encode(),
                                         b"arg two"]
        assert procfs.describe(proc.pid) == "pid %d (%s -c %s arg two)" % (
            proc.pid, sys.executable, code)
        assert procfs.describe(proc.pid, limit=10).endswith("(%s...)" % sys.executable[:10])
        assert abs(procfs.start_time(proc.pid) - time.time()) < 30
        assert proc.pid in procfs.pids()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not procfs.pid_alive(proc.pid)
    assert procfs.argv(proc.pid) == [] and procfs.comm(proc.pid) is None
    assert procfs.start_time(proc.pid) is None
    assert procfs.describe(proc.pid) == "pid %d" % proc.pid
    assert procfs.comm(os.getpid()) == os.path.basename(sys.executable)[:15]  # the name it was run by


def test_a_command_name_with_parentheses_and_blanks(tmp_path):
    # The name in /proc/PID/stat is "(a) b (c)": the fields after it still count.
    name = str(tmp_path / "a) b (c")
    os.symlink(shutil.which("sleep"), name)
    proc = subprocess.Popen([name, "30"])
    try:
        _wait_until(lambda: procfs.comm(proc.pid) == "a) b (c", "sleep to be exec'd")
        assert procfs.process_stat(proc.pid).state in (b"R", b"S", b"D")  # D: still paging in its binary
        assert abs(procfs.start_time(proc.pid) - time.time()) < 30
    finally:
        proc.kill()
        proc.wait()


def test_a_process_is_its_pid_and_start_and_a_zombie_no_longer_runs():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ident = procfs.process_id(proc.pid)
        assert ident == (proc.pid, procfs.process_stat(proc.pid).start_ticks)
        assert procfs.is_running(ident)
        # The same pid started at another time is another process.
        assert not procfs.is_running(ident._replace(start_ticks=ident.start_ticks + 1))
        proc.kill()
        # Killed but not yet waited for: it still exists, as a zombie.
        _wait_until(lambda: procfs.process_stat(proc.pid).state == b"Z", "a zombie")
        assert procfs.process_id(proc.pid) is None and not procfs.is_running(ident)
        assert procfs.pid_alive(proc.pid) and procfs.start_time(proc.pid) is not None
    finally:
        proc.kill()
        proc.wait()
    assert procfs.process_stat(proc.pid) is None and procfs.process_id(proc.pid) is None
    assert not procfs.is_running(ident) and not procfs.is_running(None)


# -- locks -----------------------------------------------------------------------

def test_flock_holders(tmp_path):
    path = str(tmp_path / "f")
    with open(path, "w") as f:
        assert procfs.flock_holders(os.stat(path)) == []
        fcntl.flock(f, fcntl.LOCK_EX)
        assert procfs.flock_holders(os.stat(path)) == [os.getpid()]
        # A waiter is listed too ("-> FLOCK ..."), but it is not a holder.
        waiter = subprocess.Popen(["flock", path, "true"])
        time.sleep(0.2)
        assert procfs.flock_holders(os.stat(path)) == [os.getpid()]
    waiter.wait()
    assert procfs.flock_holders(os.stat(path)) == []

