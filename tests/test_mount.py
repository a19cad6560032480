"""vz7native.mount: read-only mounts of real ploop images through real FUSE,
loop devices and ext4, the helper's life cycle, leftovers of killed processes,
and the CLI's mount / umount / cleanup."""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import ct_tree
from ct_tree import assert_same_tree
from host_helpers import own_run_dir
from ploop_tools import snapshotted_image
from test_cli import ok, run
from vz7native import devices, image, mount, ploop, procfs
from vz7native.mount import state

pytestmark = pytest.mark.root

MiB = 1 << 20
DISK_SIZE = 128 * MiB

# A process that mounts and then waits to be killed; prints the set's id.
HOLDER = r"""
import json, os, sys, time
from vz7native import mount
m = mount.mount_readonly(sys.argv[1], sys.argv[2], guid=sys.argv[3] or None,
                         backend=sys.argv[4])
print(json.dumps({"id": getattr(m, "id", None), "info": getattr(m, "info", None)}), flush=True)
time.sleep(600)
"""


# -- images and trees ------------------------------------------------------------

def _raw_mode_image(old_raw, new_raw, directory):
    """A raw-mode image made by libploop: the raw base holds ``old_raw``, a
    libploop snapshot names it, and the live top (a ploop1 delta) is changed
    by our writer to read like ``new_raw``. Returns (dd, snapshot GUID)."""
    os.mkdir(directory)
    dd = ploop.create_image(os.path.join(directory, b"root.hds"), DISK_SIZE, fmt="raw")
    with open(old_raw, "rb") as src, open(os.path.join(directory, b"root.hds"), "r+b") as dst:
        shutil.copyfileobj(src, dst, MiB)
    with ploop.Disk.open(dd) as disk:
        guid = disk.create_snapshot()
    image.write_clusters(dd, new_raw)
    return dd, guid


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return os.fsencode(str(tmp_path_factory.mktemp("mount")))


@pytest.fixture(scope="module", autouse=True)
def run_dir(work):
    """A run dir of this module's own: other people's sets are never seen."""
    with own_run_dir(os.path.join(work, b"run")) as base:
        yield base


@pytest.fixture(scope="module")
def trees(work):
    """{"old": the tree at snapshot time, "new": the same after change_tree}."""
    found = {}
    for name in ("old", "new"):
        found[name] = os.path.join(work, name.encode() + b"-tree")
        os.mkdir(found[name])
        ct_tree.build_tree(found[name])
    ct_tree.change_tree(found["new"])
    return found


@pytest.fixture(scope="module")
def raws(work, trees):
    """{"old", "new"}: raw container disks (GPT + ext4, make_ct_raw_disk) of the two trees."""
    found = {}
    for name in ("old", "new"):
        found[name] = os.path.join(work, name.encode() + b".raw")
        image.make_ct_raw_disk(trees[name], DISK_SIZE, found[name])
    return found


@pytest.fixture(scope="module")
def images(work, raws):
    """{format: (dd, snapshot GUID)}: the snapshot shows the old tree, the live top
    the new one. "v1"/"v2": our import_raw, a libploop snapshot (offline), our
    writer changing the top. "raw": the same on a raw-mode image libploop made."""
    found = {"raw": _raw_mode_image(raws["old"], raws["new"], os.path.join(work, b"raw"))}
    for version in (1, 2):
        found["v%d" % version] = snapshotted_image(
            raws["old"], raws["new"], os.path.join(work, b"v%d" % version), version=version)
    return found


@pytest.fixture(scope="module")
def v1(images):
    return images["v1"]


@pytest.fixture(scope="module")
def raw_image(images):
    return images["raw"]


@pytest.fixture
def target(work):
    """A fresh mount point under this module's work dir (see _ours)."""
    return tempfile.mkdtemp(prefix=b"mnt-", dir=work)


# -- what of ours is left ----------------------------------------------------------

def _ours(run_dir, work):
    """Everything of the sets of this module still there (records, FUSE dirs,
    mounts, loop devices), as a list of strings."""
    found = ["record %s" % r.id for r in state.load_all(run_dir)]
    try:
        found += ["fuse dir %s" % n for n in os.listdir(state.fuse_root(run_dir))]
    except FileNotFoundError:
        pass
    found += ["mount %s (%s)" % (m.mount_point, m.fstype) for m in procfs.mounts()
              if m.mount_point.startswith((run_dir, work))
              and m.fstype in (b"ext4", b"fuse.vz7native")]
    found += ["loop %s on %s" % (l.node, l.backing_file) for l in devices.loop_devices()
              if l.backing_file.startswith((run_dir, work))]
    return found


@pytest.fixture(autouse=True)
def nothing_left(run_dir, work):
    """Every test leaves nothing behind (and a failing one does not spoil the next)."""
    yield
    left = _ours(run_dir, work)
    if left:
        with state.locked(run_dir):
            from vz7native.mount import teardown
            for record in state.load_all(run_dir):
                teardown.dismantle(record)
                state.remove(run_dir, record.id)
            teardown.remove_leftovers(run_dir)
        pytest.fail("left behind: %s" % left)


def _wait_until(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


def _record(run_dir, mount_id):
    found = [r for r in state.load_all(run_dir) if r.id == mount_id]
    return found[0] if found else None


def _start_holder(dd, target, guid=None, backend="portable"):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dd, target, guid or "", backend],
                            stdout=subprocess.PIPE, start_new_session=True)
    line = proc.stdout.readline()
    assert line, "the holder process failed to mount"
    return proc, json.loads(line.decode())


def _kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


# -- backends ------------------------------------------------------------------------

def test_auto_picks_portable_without_the_ploop_driver(v1, target):
    assert not os.path.exists(mount.PLOOP_MINOR)
    assert mount.choose_backend("auto") == "portable"
    dd, _ = v1
    with mount.mount_readonly(dd, target) as m:
        assert m.backend == "portable"
        assert m.target == target and m.dd == os.path.realpath(dd)


def test_kernel_backend_fails_with_device_error_and_leaves_no_record(v1, target,
                                                                     run_dir):
    dd, guid = v1
    with pytest.raises(ploop.DeviceError):
        mount.mount_readonly(dd, target, guid=guid, backend="kernel")
    assert state.load_all(run_dir) == []
    assert procfs.mounts_at(target) == []


@pytest.mark.kernel_ploop
def test_kernel_backend_mounts_the_snapshot_read_only(v1, trees, target, run_dir):
    dd, guid = v1
    with mount.mount_readonly(dd, target, guid=guid, backend="kernel") as m:
        assert m.backend == "kernel" and m.device.startswith(b"/dev/ploop")
        assert [r.backend for r in state.load_all(run_dir)] == ["kernel"]
        assert_same_tree(trees["old"], target)
        with pytest.raises(OSError) as raised:
            open(os.path.join(target, b"etc/hostname"), "r+b")
        assert raised.value.errno == errno.EROFS
    assert state.load_all(run_dir) == [] and procfs.mounts_at(target) == []


@pytest.mark.kernel_ploop
def test_a_kernel_mount_left_by_a_killed_process_goes_with_the_next_mount(v1, target,
                                                                         run_dir):
    dd, guid = v1
    proc, _ = _start_holder(dd, target, guid, backend="kernel")
    _kill_group(proc)
    old, = state.load_all(run_dir)
    assert not old.is_live() and procfs.mounts_at(target)
    with mount.mount_readonly(dd, target, guid=guid, backend="kernel") as m:
        assert [r.id for r in state.load_all(run_dir)] != [old.id]
        assert len(procfs.mounts_at(target)) == 1 and os.listdir(m.target)
    assert state.load_all(run_dir) == [] and procfs.mounts_at(target) == []


# -- what a mount shows --------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["v1", "v2", "raw"])
def test_snapshot_shows_the_old_tree_and_the_top_the_new_one(images, trees, fmt, target):
    """Entry by entry, content and metadata (ct_tree.compare_trees)."""
    dd, guid = images[fmt]
    with mount.mount_readonly(dd, target, guid=guid, backend="portable") as m:
        assert m.guid == guid
        assert_same_tree(trees["old"], target)
    with mount.mount_readonly(dd, target, backend="portable") as m:
        assert m.guid == image.TOP_GUID
        assert_same_tree(trees["new"], target)


def test_a_raw_base_goes_straight_to_a_loop_device(raw_image, target):
    dd, guid = raw_image
    with mount.mount_readonly(dd, target, guid=guid.upper().strip("{}"),
                              backend="portable") as m:
        assert m.guid == guid
        assert m.info["fuse_dir"] is None and m.info["libfuse"] is None
        loop = devices.loop_device(os.stat(m.device).st_rdev)
        assert loop.backing_file == os.path.realpath(image.read_descriptor(dd).images[guid].file)
        assert (loop.offset, loop.read_only, loop.autoclear) == (MiB, True, True)
        entry, = procfs.mounts_at(target)
        assert entry.fstype == b"ext4"
        assert set(entry.options.split(b",")) >= {b"ro", b"nosuid", b"nodev", b"noexec"}


def test_a_disk_without_partition_table_is_mounted_whole(work, target):
    # libploop's "without_partition" layout: the ext4 starts at byte 0.
    tree = tempfile.mkdtemp(dir=work)
    with open(os.path.join(tree, b"hello"), "wb") as f:
        f.write(b"no GPT here\n")
    raw = os.path.join(work, b"whole.raw")
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.check_call([b"mkfs.ext4", b"-q", b"-F", b"-d", tree, raw])
    dd = image.import_raw(raw, tempfile.mkdtemp(dir=work))
    with mount.mount_readonly(dd, target, backend="portable") as m:
        assert (m.info["offset"], m.info["size"]) == (0, 32 * MiB)
        with open(os.path.join(target, b"hello"), "rb") as f:
            assert f.read() == b"no GPT here\n"


def test_a_delta_chain_is_served_through_fuse(v1, target, run_dir):
    dd, _ = v1
    with mount.mount_readonly(dd, target, backend="portable") as m:
        fuse_dir = os.fsencode(m.info["fuse_dir"])
        assert os.path.dirname(fuse_dir) == state.fuse_root(run_dir)
        fuse_mount, = procfs.mounts_at(fuse_dir)
        assert fuse_mount.fstype == b"fuse.vz7native"
        assert fuse_mount.source == b"vz7native:" + m.id.encode()
        assert fuse_mount.options.split(b",")[0] == b"ro"
        loop = devices.loop_device(os.stat(m.device).st_rdev)
        assert loop.backing_file == os.path.join(fuse_dir, b"disk")
        assert (loop.offset, loop.read_only, loop.autoclear) == (MiB, True, True)
        assert loop.direct_io and m.info["direct_io"]
    assert not os.path.exists(fuse_dir)


def test_writes_into_the_mount_fail_with_erofs(v1, target):
    dd, _ = v1
    with mount.mount_readonly(dd, target, backend="portable"):
        attempts = {
            "create": lambda: open(os.path.join(target, b"new"), "wb"),
            "write": lambda: open(os.path.join(target, b"etc/hostname"), "r+b"),
            "mkdir": lambda: os.mkdir(os.path.join(target, b"newdir")),
            "unlink": lambda: os.unlink(os.path.join(target, b"etc/empty")),
            "rename": lambda: os.rename(os.path.join(target, b"etc/empty"),
                                        os.path.join(target, b"moved")),
            "chmod": lambda: os.chmod(os.path.join(target, b"etc/hostname"), 0o600),
            "setxattr": lambda: os.setxattr(os.path.join(target, b"srv/xattr"), b"user.x", b"y"),
            "utime": lambda: os.utime(os.path.join(target, b"etc/empty"), (1, 1)),
        }
        for name, attempt in attempts.items():
            with pytest.raises(OSError) as raised:
                attempt()
            assert raised.value.errno == errno.EROFS, name


def test_other_users_read_through_the_loop_device(v1):
    # The FUSE mount has no allow_other: the loop driver reads as root, so an
    # unprivileged reader of the ext4 gets the data all the same.
    dd, _ = v1
    parent = tempfile.mkdtemp(prefix="vz7n-mount-test-", dir="/tmp")
    try:
        os.chmod(parent, 0o755)
        target = os.path.join(os.fsencode(parent), b"mnt")
        os.mkdir(target)
        with mount.mount_readonly(dd, target, backend="portable"):
            path = os.path.join(target, b"home/user/random.bin")
            proc = subprocess.run([b"sha256sum", path], stdout=subprocess.PIPE,
                                  preexec_fn=_become_nobody)
            with open(path, "rb") as f:
                expected = hashlib.sha256(f.read()).hexdigest()
            assert proc.returncode == 0 and proc.stdout.split()[0].decode() == expected
    finally:
        shutil.rmtree(parent)


def _become_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_the_mount_api_imports_no_ctypes(v1, target):
    """What the plugin calls keeps ctypes, pyudev and the FUSE binding out of
    its process (bareos-fd-contract §12.1), all the way through a mount."""
    dd, guid = v1
    code = r"""
import json, os, sys
from vz7native import mount
with mount.mount_readonly(sys.argv[1], sys.argv[2], backend="auto") as m:
    assert m.backend == "portable" and os.listdir(sys.argv[2])
with mount.mount_readonly(sys.argv[1], sys.argv[2], guid=sys.argv[3]):
    pass
mount.cleanup()
print(json.dumps(sorted(name for name in sys.modules
                        if name.split(".")[0] in ("ctypes", "_ctypes", "pyudev", "mfusepy"))))
"""
    proc = subprocess.run([sys.executable, "-c", code, dd, target, guid],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout.decode()) == []


# -- life cycle ----------------------------------------------------------------------

def test_umount_is_idempotent_and_the_target_is_free_again(v1, target, run_dir):
    dd, _ = v1
    m = mount.mount_readonly(dd, target, backend="portable")
    assert len(state.load_all(run_dir)) == 1
    m.umount()
    assert not m.mounted
    m.umount()
    assert procfs.mounts_at(target) == []
    with mount.mount_readonly(dd, target, backend="portable") as again:
        assert os.listdir(again.target)


def test_umount_waits_for_a_busy_target_to_be_left(v1, target):
    dd, _ = v1
    m = mount.mount_readonly(dd, target, backend="portable")
    # Someone sits in the mount for a while when we unmount.
    squatter = subprocess.Popen(["sleep", "1.5"], cwd=target)
    try:
        m.umount()
    finally:
        squatter.wait()
    assert procfs.mounts_at(target) == []


def test_sigterm_to_the_helper_takes_the_set_down(v1, target, run_dir):
    dd, _ = v1
    m = mount.mount_readonly(dd, target, backend="portable")
    helper = _record(run_dir, m.id).helper
    os.kill(helper.pid, signal.SIGTERM)
    _wait_until(lambda: not procfs.mounts_at(target) and not state.load_all(run_dir),
                what="the helper's teardown")
    m.umount()


def test_a_killed_helper_is_cleaned_up_by_umount(v1, target, run_dir):
    dd, _ = v1
    m = mount.mount_readonly(dd, target, backend="portable")
    helper = _record(run_dir, m.id).helper
    os.kill(helper.pid, signal.SIGKILL)
    _wait_until(lambda: not procfs.is_running(helper), what="the helper to die")
    assert procfs.mounts_at(target), "the mount outlived its helper"
    m.umount()
    assert procfs.mounts_at(target) == []


def test_kill_9_of_the_mounting_process_helper_takes_the_set_down(v1, target, run_dir,
                                                                   work):
    dd, _ = v1
    proc, _ = _start_holder(dd, target)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    _wait_until(lambda: not _ours(run_dir, work), what="the orphaned helper's teardown")
    with mount.mount_readonly(dd, target, backend="portable") as m:
        assert os.listdir(m.target)


def test_kill_9_of_mounter_and_helper_next_mount_removes_the_leftovers(v1, trees,
                                                                        target, run_dir, work):
    dd, _ = v1
    proc, held = _start_holder(dd, target)
    old_loop = os.stat(held["info"]["loop"]).st_rdev
    _kill_group(proc)
    left = _ours(run_dir, work)
    assert any(s.startswith("mount " + repr(target)) or os.fsdecode(target) in s for s in left)
    assert any(s.startswith("fuse dir") for s in left)
    with mount.mount_readonly(dd, target, backend="portable") as m:
        assert [r.id for r in state.load_all(run_dir)] == [m.id]
        assert os.listdir(state.fuse_root(run_dir)) == [os.fsencode(m.id)]
        entry, = procfs.mounts_at(target)
        assert entry.devnum == os.stat(m.device).st_rdev
        assert not os.path.exists(os.fsencode(held["info"]["fuse_dir"]))
        ours = [l for l in devices.loop_devices() if l.backing_file.startswith(run_dir)]
        assert [l.devnum for l in ours] == [os.stat(m.device).st_rdev]
        if old_loop != entry.devnum:
            loop = devices.loop_device(old_loop)
            assert loop is None or not loop.backing_file.startswith(run_dir)
        assert_same_tree(trees["new"], target)


def test_cli_cleanup_removes_what_killed_processes_left(raw_image, target, run_dir, work):
    dd, guid = raw_image
    other = target + b"-raw"
    os.mkdir(other)
    first, held_fuse = _start_holder(dd, target)
    second, held_raw = _start_holder(dd, other, guid)
    for proc in (first, second):
        _kill_group(proc)
    assert len(_ours(run_dir, work)) >= 5
    report = json.loads(ok("cleanup", "--json"))
    assert sorted(r["id"] for r in report) == sorted([held_fuse["id"], held_raw["id"]])
    assert all(r["problems"] == [] for r in report)
    assert _ours(run_dir, work) == []


def test_cleanup_removes_a_set_whose_record_is_lost(v1, target, run_dir, work):
    dd, _ = v1
    proc, held = _start_holder(dd, target)
    _kill_group(proc)
    os.unlink(state.record_path(run_dir, held["id"]))
    report = mount.cleanup()
    assert [(r["id"], r["problems"]) for r in report] == [(held["id"], [])]
    assert _ours(run_dir, work) == []


def test_cleanup_removes_only_the_record_temporaries_of_dead_sets(run_dir):
    live = state.MountRecord(id="1111111111111111", backend="portable", target=b"/nowhere",
                             owner=procfs.process_id(os.getpid()))
    with state.locked(run_dir):
        state.save(run_dir, live)
    temporaries = {i: state.record_path(run_dir, i) + b".tmp"
                   for i in (live.id, "2222222222222222")}
    try:
        for path in temporaries.values():
            open(path, "w").close()
        assert mount.cleanup() == []
        assert os.path.exists(temporaries[live.id])     # its set may be writing it
        assert not os.path.exists(temporaries["2222222222222222"])
    finally:
        for path in temporaries.values():
            if os.path.exists(path):
                os.unlink(path)
        state.remove(run_dir, live.id)


def test_cleanup_leaves_live_sets_and_other_peoples_loop_devices_alone(raw_image, target,
                                                                      run_dir, work):
    dd, guid = raw_image
    base_file = os.path.realpath(image.read_descriptor(dd).images[guid].file)
    # Someone else's read-only mount of the very same raw image, same offset.
    foreign = os.path.join(work, b"foreign")
    os.makedirs(foreign, exist_ok=True)
    subprocess.check_call([b"mount", b"-o", b"ro,loop,offset=%d" % MiB, base_file, foreign])
    foreign_entry, = procfs.mounts_at(foreign)
    try:
        live = mount.mount_readonly(dd, target, guid=guid, backend="portable")
        other = target + b"-killed"
        os.mkdir(other)
        proc, held = _start_holder(dd, other, guid)
        _kill_group(proc)
        report = mount.cleanup()
        assert [r["id"] for r in report] == [held["id"]]
        assert procfs.mounts_at(other) == []
        assert procfs.mounts_at(foreign) == [foreign_entry]
        assert devices.loop_device(foreign_entry.devnum).backing_file == base_file
        assert [r.id for r in state.load_all(run_dir)] == [live.id]
        assert os.listdir(target)
        live.umount()
    finally:
        devices.umount(foreign)


# -- bad input -------------------------------------------------------------------------

def test_a_busy_target_is_refused(v1, target, run_dir):
    dd, _ = v1
    subprocess.check_call([b"mount", b"-t", b"tmpfs", b"vz7n-test", target])
    try:
        with pytest.raises(mount.TargetBusyError, match="already a mount point"):
            mount.mount_readonly(dd, target, backend="portable")
        assert state.load_all(run_dir) == []
    finally:
        devices.umount(target)


def test_a_target_claimed_by_a_live_set_is_refused(v1, target, run_dir):
    # A live set that has not mounted yet: its record (owned by this very
    # process, so it counts as live) already claims the target.
    dd, _ = v1
    claim = state.MountRecord(id="0123456789abcdef", backend="portable", dd=b"/elsewhere",
                              target=target, owner=procfs.process_id(os.getpid()))
    state.save(run_dir, claim)
    try:
        with pytest.raises(mount.TargetBusyError, match="0123456789abcdef"):
            mount.mount_readonly(dd, target, backend="portable")
        assert [r.id for r in state.load_all(run_dir)] == [claim.id]
    finally:
        state.remove(run_dir, claim.id)


@pytest.mark.parametrize("change,error", [
    ({"dd_path": b"/nonexistent/DiskDescriptor.xml"}, image.ImageError),
    ({"guid": "{12345678-1234-1234-1234-123456789abc}"}, image.SnapshotNotFound),
    ({"guid": "not-a-guid"}, image.SnapshotNotFound),
    ({"target": b"/nonexistent/mnt"}, mount.MountError),
    ({"backend": "fast"}, ValueError),
    ({"backend": "kernel", "persistent": True}, ValueError),
])
def test_bad_arguments_fail_clearly_and_leave_nothing(v1, target, run_dir, change, error):
    dd, _ = v1
    args = dict({"dd_path": dd, "target": target, "backend": "portable"}, **change)
    with pytest.raises(error):
        mount.mount_readonly(**args)
    assert state.load_all(run_dir) == []
    assert procfs.mounts_at(target) == []


# -- CLI -----------------------------------------------------------------------------------

def test_cli_mount_stays_until_cli_umount(v1, trees, target, run_dir, work):
    dd, guid = v1
    out = ok("mount", "-r", "--backend", "portable", "-u", guid, "-m", target, dd)
    entry, = procfs.mounts_at(target)
    assert out.strip() == devices.loop_device(entry.devnum).node.decode()
    record, = state.load_all(run_dir)
    assert record.owner is None and procfs.is_running(record.helper)
    assert_same_tree(trees["old"], target)
    ok("umount", "-m", target)
    assert not procfs.is_running(record.helper)
    assert _ours(run_dir, work) == []


def test_cli_import_raw_then_portable_mount_shows_the_tree(raws, trees, target, run_dir, work):
    """The whole road without libploop's driver: a make_ct_raw_disk disk, import-raw,
    a portable mount, a recursive compare, umount."""
    dd = ok("import-raw", raws["old"], tempfile.mkdtemp(dir=work)).strip()
    ok("mount", "-r", "--backend", "portable", "-m", target, dd)
    assert_same_tree(trees["old"], target)
    ok("umount", "-m", target)
    assert _ours(run_dir, work) == []


def test_cli_umount_by_descriptor(v1, target, run_dir, work):
    dd, _ = v1
    ok("mount", "-r", "-m", target, dd)     # auto: portable here
    ok("umount", dd)
    assert _ours(run_dir, work) == []


def test_cli_portable_mount_needs_read_only_and_no_component(v1, target):
    dd, _ = v1
    rc, _, err = run("mount", "--backend", "portable", "-m", target, dd)
    assert rc == 38 and "add -r" in err
    rc, _, err = run("mount", "-r", "--backend", "portable", "-c", "backup", "-m", target, dd)
    assert rc == 38 and "kernel backend only" in err
    assert procfs.mounts_at(target) == []


def test_cli_mount_errors_name_the_problem(v1, target):
    dd, _ = v1
    rc, _, err = run("mount", "-r", "--backend", "portable", "-u",
                     "{12345678-1234-1234-1234-123456789abc}", "-m", target, dd)
    assert rc == 43      # SYSEXIT_NOSNAP, as ploop says it
    assert err.startswith("vz7ploop: cannot mount ") and err.count("\n") == 1
    assert "12345678-1234-1234-1234-123456789abc" in err
    rc, _, err = run("mount", "-r", "--backend", "kernel", "-m", target, dd)
    assert rc == 2 and "SYSEXIT_DEVICE" in err


# -- hostile images and a full run dir ----------------------------------------------

def _image_copy(v1, work):
    """A copy of the v1 image (descriptor and deltas) to damage: (dd, top delta)."""
    dd, _ = v1
    copy = os.path.join(tempfile.mkdtemp(dir=work), b"ct")
    shutil.copytree(os.path.dirname(dd), copy)
    copied = image.read_descriptor(copy)
    return copied.path, copied.chain()[0].file


def test_a_delta_that_is_a_fifo_fails_the_mount_at_once(v1, work, target, run_dir):
    dd, top = _image_copy(v1, work)
    os.unlink(top)
    os.mkfifo(top)
    started = time.monotonic()
    with pytest.raises(image.FormatError, match="delta %s is a FIFO, not a regular file"
                       % os.fsdecode(top)):
        mount.mount_readonly(dd, target, backend="portable")
    assert time.monotonic() - started < 20
    assert state.load_all(run_dir) == []
    with mount.mount_readonly(v1[0], target, backend="portable"):    # the target is free
        assert procfs.mounts_at(target)


def test_a_corrupt_delta_fails_the_mount_as_check_says(v1, work, target, run_dir):
    dd, top = _image_copy(v1, work)
    with open(top, "r+b") as f:
        f.write(b"WithoutFreeSpacf")
    with pytest.raises(image.FormatError) as err:
        mount.mount_readonly(dd, target, backend="portable")
    assert "%s has no ploop1 signature" % os.fsdecode(top) in str(err.value)
    rc, out, _ = run("check", dd)
    assert rc == 11 and str(err.value) in out
    rc, _, err_text = run("mount", "-r", "--backend", "portable", "-m", target, dd)
    assert rc == 11 and str(err.value) in err_text
    assert state.load_all(run_dir) == [] and procfs.mounts_at(target) == []


def test_a_full_run_dir_is_named(v1, target, tmpfs_at, monkeypatch):
    full = tmpfs_at(b"run", options=b"size=64k")
    fd = os.open(os.path.join(full, b"filler"), os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as filled:
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    assert filled.value.errno == errno.ENOSPC
    monkeypatch.setenv(state.RUN_DIR_ENV, os.fsdecode(full))
    with pytest.raises(mount.RunDirError, match="cannot write %s/mounts/[0-9a-f]+\\.json\\.tmp "
                       "in the run dir %s: No space left on device"
                       % (os.fsdecode(full), os.fsdecode(full))):
        mount.mount_readonly(v1[0], target, backend="portable")
    assert procfs.mounts_at(target) == []
    assert os.listdir(os.path.join(full, b"mounts")) == []
