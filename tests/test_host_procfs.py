"""What the kernel says about mounts, processes and flocks, and where cgroups live."""
import fcntl
import os
import subprocess
import sys
import time

import pytest

from conftest import require
from vz7native.host import Host, procfs
from vz7native.host.status import cgroup_dir


def test_the_mount_table_has_the_root_and_proc():
    points = {m.mount_point: m for m in procfs.mounts()}
    assert b"/" in points
    assert points[b"/proc"].fstype == "proc"


@pytest.mark.root
def test_mount_points_with_blanks_and_odd_bytes(tmp_path):
    require(os.geteuid() == 0, "needs root to mount")
    target = os.path.join(os.fsencode(str(tmp_path)), b"a dir\twith\\odd \xe9")
    os.mkdir(target)
    subprocess.check_call([b"mount", b"-t", b"tmpfs", b"sandbox-test", target])
    try:
        mount, = [m for m in procfs.mounts() if m.mount_point == target]
        assert (mount.fstype, mount.source) == ("tmpfs", b"sandbox-test")
    finally:
        subprocess.check_call([b"umount", target])


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


def test_cgroup_hierarchies_from_the_mount_table(tmp_path):
    host = Host(str(tmp_path))
    root = os.fsencode(str(tmp_path))
    mounts = [
        procfs.Mount(b"/sys/fs/cgroup/ve", "cgroup", b"cgroup", "rw,nosuid,ve"),  # not this host
        procfs.Mount(root + b"/cg/v", "cgroup", b"cgroup", "rw,relatime,ve"),
        procfs.Mount(root + b"/cg/fr", "cgroup", b"cgroup", "rw,freezer"),
        procfs.Mount(root + b"/cg/unified", "cgroup2", b"cgroup2", "rw,nsdelegate"),
    ]
    assert cgroup_dir(host, "ve", mounts) == root + b"/cg/v"
    assert cgroup_dir(host, "freezer", mounts) == root + b"/cg/fr"
    assert cgroup_dir(host, "memory", mounts) == root + b"/sys/fs/cgroup/memory"
    assert cgroup_dir(Host("/"), "ve", mounts) == b"/sys/fs/cgroup/ve"
    assert cgroup_dir(Host("/"), "ve", []) == b"/sys/fs/cgroup/ve"
