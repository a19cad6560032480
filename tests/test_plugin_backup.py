"""The plugin's backup side through the FD simulator, on sandbox hosts with real
ploop images read through the portable mount (no ploop driver here)."""
import contextlib
import json
import os
import stat

import pytest

from fanotify_gate import FAN_ACCESS_PERM, FAN_EVENT_ON_CHILD, FAN_OPEN_PERM, Gate
from fdsim import constants as C
from fdsim.director import FdsimError
from mid_merge import MergeCopy, disk_hash, in_use, write_after_the_snapshot
from restore_helpers import edit_image
from plugin_helpers import (director, fs_name, job_options, line, records,
                            stored, tree_picture)
from vz7bareos import attrs, names
from vz7native import image, mount, ploop, procfs
from vz7native.backup import STATE_DIR
from vz7native.host.sandbox import Sandbox

pytestmark = pytest.mark.root
FT = C.FT
TYPE_OF = {"file": FT["FT_REG"], "dir": FT["FT_DIREND"], "symlink": FT["FT_LNK"],
           "fifo": FT["FT_SPEC"], "chardev": FT["FT_SPEC"], "blockdev": FT["FT_SPEC"]}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    sandbox = Sandbox.build(str(tmp_path_factory.mktemp("host") / "root"), count=2, seed=3,
                            running=(0,))
    yield sandbox
    sandbox.close()


@pytest.fixture
def fresh_host(tmp_path):
    sandbox = Sandbox.build(str(tmp_path / "root"), count=1, seed=5, running=())
    yield sandbox
    sandbox.close()


def assert_nothing_left(sandbox, ct):
    """No snapshot, mount, loop device of the image, state file, helper or lock."""
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        assert [s.guid for s in disk.snapshots] == [disk.top_guid]
    target = sandbox.host.real(os.path.join(b"/mnt/bareos", ct.uuid.encode()))
    assert not procfs.mounts_at(target)
    assert not os.path.exists(target)
    assert not os.path.exists(sandbox.host.real(os.path.join(
        STATE_DIR, ct.uuid.encode() + b".json")))
    assert mount.cleanup(ct.disk_descriptor) == []
    assert ploop_check(ct.disk_descriptor) == 0
    with sandbox.host.container_lock(ct, 0):
        pass


def ploop_check(dd):
    import subprocess
    return subprocess.call(["ploop", "check", "-r", "-f", "-c", os.fsdecode(dd)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def full_backup(sandbox, ct, workdir, version=23, **kwargs):
    d = director(workdir, version)
    result = d.backup(line(sandbox), fd_plugin_options=job_options(ct, **kwargs))
    return d, result


@pytest.mark.parametrize("index", [0, 1], ids=["running", "stopped"])
def test_full_backup_stores_the_container_entry_by_entry(host, tmp_path, index):
    ct = host.containers[index]
    d, result = full_backup(host, ct, tmp_path / "fd")
    assert result.status == "T", result.report()
    files, objects = stored(tmp_path / "fd", result.jobid)
    expected = tree_picture(host.tree(ct))
    seen_inodes = {}
    for rel, facts in expected.items():
        name = fs_name(ct, rel)
        if facts["type"] == "socket":
            assert name not in files
            assert any("socket" in m.text for m in result.log), result.report()
            continue
        entry = files[name]
        exact = entry.exact
        assert (exact.mode, exact.uid, exact.gid, exact.mtime_ns) == (
            facts["mode"], facts["uid"], facts["gid"], facts["mtime_ns"]), rel
        if facts["nlink"] > 1 and facts["type"] != "dir":
            seen_inodes.setdefault(facts["ino"], []).append(entry)
            if entry.type == FT["FT_LNKSAVED"]:
                continue
        assert entry.type == TYPE_OF[facts["type"]], rel
        assert entry.stat["mode"] == facts["mode"] & 0xFFFF
        if facts["type"] == "dir":
            assert entry.link == name + "/"
        elif facts["type"] == "file":
            assert entry.stat["size"] == facts["size"]
            import hashlib
            assert hashlib.sha256(entry.data).hexdigest() == facts["sha"], rel
        elif facts["type"] == "symlink":
            assert names.decode_target(entry.link) == facts["target"]
        elif facts["type"] in ("chardev", "blockdev"):
            assert exact.rdev == facts["rdev"]
        if facts["type"] != "symlink":
            kept = {n: v for n, v in entry.xattrs.items()
                    if n != attrs.ATTRS_NAME.encode("ascii")}
            acl = entry.acl or {}
            plain = {n: v for n, v in facts["xattrs"].items()
                     if n.decode() not in attrs.ACL_NAMES}
            assert kept == plain, rel
            assert {n.encode(): v for n, v in acl.items()} == {
                n: v for n, v in facts["xattrs"].items() if n.decode() in attrs.ACL_NAMES}, rel
    # a hard-linked inode is stored once, its other names link to that one
    for group in seen_inodes.values():
        saved = [e for e in group if e.type != FT["FT_LNKSAVED"]]
        assert len(saved) == 1, group
        assert all(e.link == saved[0].fname for e in group if e is not saved[0]), group
    # every stored name of the filesystem is one of the tree (plus lost+found)
    prefix = fs_name(ct, b"")
    fs_names = {n for n in files if n.startswith(prefix)}
    expected_names = {fs_name(ct, rel) for rel, f in expected.items() if f["type"] != "socket"}
    assert {n for n in fs_names - expected_names if "lost+found" not in n} == set()
    # the private area: configuration yes, the disk no
    private = names.encode_path(ct.ve_private)
    assert private + "/ve.conf" in files
    assert private + "/root.hdd/DiskDescriptor.xml" not in files
    assert not [n for n in files if n.endswith(".hds")]
    assert files[private].link == private + "/"
    record = records(objects)[ct.uuid]
    assert (record["name"], record["disk_size"], record["layout"]) == (
        ct.name, ct.disk_size, 5)
    assert record["state"] == ("running" if index == 0 else "stopped")
    assert bool(record["snapshot"]) == (index == 0)
    assert_nothing_left(host, ct)


def test_names_that_are_not_utf8_are_escaped_reversibly(host, tmp_path):
    ct = host.containers[1]
    d, result = full_backup(host, ct, tmp_path / "fd")
    files, _ = stored(tmp_path / "fd", result.jobid)
    escaped = [n for n in files if names.MARKER in n]
    assert escaped, "the tree has names that are not UTF-8"
    prefix = fs_name(ct, b"") + "/"
    for name in escaped:
        rel = names.decode_path(name)[len(prefix.encode()):]
        assert os.path.lexists(os.path.join(host.tree(ct), rel)), name
        name.encode("utf-8")  # always encodable


@pytest.mark.parametrize("version", [20, 22, 25])
def test_backup_on_other_bareos_versions(host, tmp_path, version):
    ct = host.containers[1]
    d, result = full_backup(host, ct, tmp_path / "fd", version=version)
    assert result.status == "T", result.report()
    files, _ = stored(tmp_path / "fd", result.jobid)
    entry = files[fs_name(ct, b"etc/hostname")]
    assert entry.data.startswith(b"ct")
    assert not result.warnings, result.warnings


def test_c_locale(host, tmp_path):
    ct = host.containers[0]
    d = director(tmp_path / "fd", c_locale=True)
    result = d.backup(line(host), fd_plugin_options=job_options(ct))
    assert result.status == "T", result.report()
    assert result.filesystem_encoding == "ascii"
    assert result.crashed is None


def test_incremental_and_differential_store_exactly_what_changed(fresh_host, tmp_path):
    sandbox = fresh_host
    ct = sandbox.containers[0]
    d = director(tmp_path / "fd")
    opts = job_options(ct)
    full = d.backup(line(sandbox), fd_plugin_options=opts, accurate=True)
    assert full.status == "T", full.report()

    def edit(root):
        with open(os.path.join(root, b"etc/hostname"), "wb") as f:
            f.write(b"changed\n")
        with open(os.path.join(root, b"root/new.txt"), "wb") as f:
            f.write(b"new file\n")
        os.unlink(os.path.join(root, b"root/.bash_history"))
        os.chmod(os.path.join(root, b"etc/os-release"), 0o600)
    edit_image(ct.disk_descriptor, str(tmp_path / "edit"), edit)
    incr = d.backup(line(sandbox), fd_plugin_options=opts, level="I", accurate=True)
    assert incr.status == "T", incr.report()
    files, objects = stored(tmp_path / "fd", incr.jobid)
    fs = {n for n in files if n.startswith(fs_name(ct, b"")) and files[n].type != FT["FT_DELETED"]}
    changed = {fs_name(ct, p) for p in (b"etc/hostname", b"root/new.txt", b"etc/os-release")}
    # the directories whose entries changed are stored again, the files nothing else
    dirs = {n for n in fs if files[n].type == FT["FT_DIREND"]}
    assert fs - dirs == changed, sorted(fs - dirs)
    assert dirs <= {fs_name(ct, b"etc"), fs_name(ct, b"root"), fs_name(ct, b"")}
    deleted = [r["path"] for r in d.files(incr.jobid) if r["deleted"]]
    assert deleted == [fs_name(ct, b"root/.bash_history")]
    again = d.backup(line(sandbox), fd_plugin_options=opts, level="I", accurate=True)
    assert again.status == "T" and again.files == 0, again.report()
    diff = d.backup(line(sandbox), fd_plugin_options=opts, level="D", accurate=True)
    files, _ = stored(tmp_path / "fd", diff.jobid)
    assert changed <= set(files)
    assert_nothing_left(sandbox, ct)


@pytest.mark.parametrize("problem, expected", [
    ({"name": "nosuchct"}, "no container"),
    ({"uuid": "00000000-0000-4000-8000-000000000000"}, "do not belong to the same container"),
    ({"bogus": "1"}, "unknown plugin option bogus"),
    ({"lock_timeout": "soon"}, "lock_timeout=soon"),
    ({"mount_backend": "magic"}, "mount_backend=magic"),
], ids=["unknown-ct", "mismatch", "unknown-option", "bad-timeout", "bad-backend"])
def test_bad_input_is_one_fatal_and_leaves_nothing(host, tmp_path, problem, expected):
    ct = host.containers[0]
    opts = dict(name=ct.name, uuid=ct.uuid)
    opts.update(problem)
    d = director(tmp_path / "fd")
    result = d.backup(line(host), fd_plugin_options=[
        "python3:" + ":".join("%s=%s" % kv for kv in opts.items())])
    assert result.status == "f", result.report()
    fatals = [m for m in result.messages("M_FATAL") if "vz7:" in m]
    assert len(fatals) == 1 and expected in fatals[0], result.report()
    assert_nothing_left(host, ct)


def test_missing_name_or_uuid_is_fatal(host, tmp_path):
    d = director(tmp_path / "fd")
    result = d.backup(line(host))
    assert result.status == "f"
    assert any("name and uuid" in m for m in result.messages("M_FATAL")), result.report()


def test_blocker_in_a_running_container_stops_before_any_snapshot(host, tmp_path):
    ct = host.containers[0]
    blocker = os.path.join(ct.root, b"tmp/backup_blocker")
    with open(blocker, "wb"):
        pass
    try:
        d, result = full_backup(host, ct, tmp_path / "fd")
    finally:
        os.unlink(blocker)
    assert result.status == "f"
    assert any("blocker" in m for m in result.messages("M_FATAL")), result.report()
    assert_nothing_left(host, ct)


def test_two_jobs_on_one_container_the_second_is_refused(host, tmp_path):
    ct = host.containers[1]
    with host.host.container_lock(ct, 0, note="another backup"):
        d, result = full_backup(host, ct, tmp_path / "fd", ct_lock_timeout=0)
    assert result.status == "f"
    text = " ".join(result.messages("M_FATAL"))
    assert "still held" in text and "another backup" in text, result.report()


def test_several_containers_in_one_job(host, tmp_path):
    d = director(tmp_path / "fd")
    lines = [line(host, name=ct.name, uuid=ct.uuid) for ct in host.containers]
    result = d.backup(lines)
    assert result.status == "T", result.report()
    files, objects = stored(tmp_path / "fd", result.jobid)
    assert set(records(objects)) == {ct.uuid for ct in host.containers}
    for ct in host.containers:
        assert fs_name(ct, b"etc/hostname") in files
        assert_nothing_left(host, ct)
    summaries = [m for m in result.messages("M_INFO") if "entries" in m]
    assert len(summaries) == 2


def test_excludes_and_balloon(host, tmp_path):
    ct = host.containers[1]
    d = director(tmp_path / "fd")
    result = d.backup(line(host, exclude="*.bin"), fd_plugin_options=job_options(
        ct, excluded_backup_paths="'/var/many,/deep'"))
    assert result.status == "T", result.report()
    files, _ = stored(tmp_path / "fd", result.jobid)
    assert not [n for n in files if "/var/many" in n or "/deep" in n or n.endswith(".bin")]
    assert fs_name(ct, b"var") in files and fs_name(ct, b"etc/hostname") in files


@pytest.mark.parametrize("stage", ["snapshot", "mount", "walk", "merge"])
def test_a_crashed_job_is_cleaned_by_the_next(fresh_host, tmp_path, stage):
    """kill -9 of the FD once the snapshot is recorded, once the view is mounted,
    in the middle of the walk, and in the middle of the merge after the
    container wrote into its disk: the next job merges the snapshot back,
    removes what is left and says so; the disk reads as before the kill."""
    sandbox = fresh_host
    ct = sandbox.containers[0]
    from vz7native.host import status
    sandbox.stage(ct, status.RUNNING)
    d = director(tmp_path / "fd")
    target = sandbox.host.real(os.path.join(b"/mnt/bareos", ct.uuid.encode()))
    state = sandbox.host.real(os.path.join(STATE_DIR, ct.uuid.encode() + b".json"))
    with d.file_daemon() as fd, contextlib.ExitStack() as stack:
        if stage == "merge":
            merge = stack.enter_context(MidMerge(sandbox, ct, fd.pid, str(tmp_path / "edit")))
        reached = {
            "snapshot": lambda: os.path.exists(state),
            "mount": lambda: procfs.mounts_at(target),
            "walk": lambda: _volume_size(tmp_path / "fd") > (2 << 20),
            "merge": lambda: merge.reached(),
        }[stage]
        job = fd.start_backup(line(sandbox), fd_plugin_options=job_options(ct))
        while not reached():
            try:
                result = job.wait(timeout=0.005)
            except FdsimError:
                continue  # still running
            pytest.fail("the job ended before the %s stage was seen: %s"
                        % (stage, result.report()))
        os.kill(fd.pid, 9)
        job.wait()
    if stage == "merge":
        # what the killed merge left: the snapshot, marked in use, half merged
        assert _read_json(state)["phase"] == "merge"
        with ploop.Disk.open(ct.disk_descriptor) as disk:
            assert merge.guid in [s.guid for s in disk.snapshots]
        assert in_use(merge.snapshot_delta)
        assert disk_hash(ct.disk_descriptor) == merge.written
    result = d.backup(line(sandbox), fd_plugin_options=job_options(ct))
    assert result.status == "T", result.report()
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        snapshots = len(disk.snapshots)
    assert snapshots == 1
    if stage != "snapshot":  # a snapshot is recorded before it is made: it may not exist yet
        cleaned = [m for m in result.messages("M_INFO") if "merged back" in m]
        assert cleaned, result.report()
    if stage == "merge":
        assert "its merge had been interrupted" in cleaned[0], cleaned
        assert disk_hash(ct.disk_descriptor) == merge.written
    assert_nothing_left(sandbox, ct)


class MidMerge(object):
    """Holds a backup job of ``ct`` in the FD ``pid`` in the middle of the merge
    of its snapshot (:mod:`fanotify_gate`: no timing). First as it records the
    merge in its state file: meanwhile the container writes into its disk (the
    live top, as a running container does after the snapshot). Then in the
    merge, with clusters copied (:class:`mid_merge.MergeCopy`). Afterwards
    ``guid`` is the snapshot, ``snapshot_delta`` its file and ``written`` the
    disk's content after the writes (:func:`mid_merge.disk_hash`)."""

    def __init__(self, sandbox, ct, pid, scratch):
        self.dd = ct.disk_descriptor
        self.state = os.path.realpath(sandbox.host.real(
            os.path.join(STATE_DIR, ct.uuid.encode() + b".json")))
        self.pid = pid
        self.scratch = scratch
        self.guid = self.snapshot_delta = self.written = self.copy = None
        self.gate = Gate(self._hold)
        os.makedirs(os.path.dirname(self.state), exist_ok=True)
        self.gate.watch(os.path.dirname(self.state), FAN_OPEN_PERM | FAN_EVENT_ON_CHILD)

    def _hold(self, event):
        if self.copy is not None:
            return self.copy(event)
        # the state file is written before the snapshot and before the merge
        return (event.pid == self.pid and event.path == self.state + b".new"
                and len(image.read_descriptor(self.dd).images) == 2)

    def reached(self):
        if self.gate.wait_held(0) is None:
            return False
        if self.copy is not None:
            return True
        self.guid = _read_json(self.state)["snapshot"]
        edit_image(self.dd, self.scratch, write_after_the_snapshot)
        self.written = disk_hash(self.dd)
        with ploop.Disk.open(self.dd) as disk:
            self.snapshot_delta = disk.images[self.guid]
            top = disk.top_delta
        self.copy = MergeCopy(top, self.snapshot_delta, self.pid)
        self.gate.watch(top, FAN_ACCESS_PERM)
        self.gate.release()
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.gate.close()


def _read_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def _volume_size(workdir):
    volumes = os.path.join(str(workdir), "volumes")
    if not os.path.isdir(volumes):
        return 0
    return sum(os.path.getsize(os.path.join(volumes, n)) for n in os.listdir(volumes))


def odd_tree(root, seed):
    """What a StatPacket cannot hold: times before 1970 and after 2106 with
    nanoseconds, ids above 2^31."""
    root = os.fsencode(root)
    for name, seconds in ODD_TIMES:
        with open(os.path.join(root, name), "wb") as f:
            f.write(name)
        os.utime(os.path.join(root, name), ns=(seconds * 10 ** 9 + 123456789,
                                               seconds * 10 ** 9 + 987654321))
    with open(os.path.join(root, b"bigid"), "wb") as f:
        f.write(b"uid")
    os.chown(os.path.join(root, b"bigid"), 4294967294, 4294967293)


ODD_TIMES = ((b"y1901", -2147483648), (b"y1960", -315619200), (b"minus1", -1),
             (b"y2100", 4102444800), (b"y2446", 15191013600))


def many_links_tree(root, seed):
    root = os.fsencode(root)
    with open(os.path.join(root, b"0"), "wb") as f:
        f.write(b"many links")
    for n in range(1, LINKS):
        os.link(os.path.join(root, b"0"), os.path.join(root, b"%d" % n))


LINKS = 32769  # one more than a signed 16-bit link count holds


def backup_and_picture(tmp_path, tree_builder, versions):
    """Back a one-container sandbox built by ``tree_builder`` up on each Bareos
    version; yield (version, stored files, picture of the image, container)."""
    from vz7native import mount as mount_room
    sandbox = Sandbox.build(str(tmp_path / "root"), count=1, seed=1, running=(),
                            tree_builder=tree_builder, disk_size=256 << 20)
    try:
        ct = sandbox.containers[0]
        view = os.path.join(os.fsencode(str(tmp_path)), b"view")
        os.mkdir(view)
        with mount_room.mount_readonly(ct.disk_descriptor, view, backend="portable"):
            picture = tree_picture(view)
        for version in versions:
            workdir = tmp_path / ("fd%d" % version)
            result = director(workdir, version).backup(line(sandbox),
                                                       fd_plugin_options=job_options(ct))
            assert result.status == "T", result.report()
            assert not result.warnings, result.warnings
            yield version, stored(workdir, result.jobid)[0], picture, ct
    finally:
        sandbox.close()


def test_times_and_ids_a_statpacket_cannot_hold_are_carried_exactly(tmp_path):
    for version, files, picture, ct in backup_and_picture(tmp_path, odd_tree, (23, 25)):
        for rel in [name for name, _ in ODD_TIMES] + [b"bigid"]:
            entry, facts = files[fs_name(ct, rel)], picture[rel]
            assert (entry.exact.mtime_ns, entry.exact.uid, entry.exact.gid) == (
                facts["mtime_ns"], facts["uid"], facts["gid"]), rel
            seconds = facts["mtime_ns"] // 10 ** 9
            if version < 25:  # unsigned 32 bits: the nearest value, never a wrapped one
                assert entry.stat["mtime"] == min(max(seconds, 0), 2 ** 32 - 1), rel
            else:
                assert entry.stat["mtime"] == seconds, rel


def test_more_hard_links_than_the_catalog_counts(tmp_path):
    for version, files, picture, ct in backup_and_picture(tmp_path, many_links_tree, (23,)):
        group = [e for n, e in files.items()
                 if n.startswith(fs_name(ct, b"") + "/") and e.type != FT["FT_DIREND"]
                 and "lost+found" not in n]
        assert len(group) == LINKS
        assert sum(e.type != FT["FT_LNKSAVED"] for e in group) == 1
        assert all(e.exact.nlink == LINKS and e.stat["nlink"] == 0x7FFF for e in group)


def test_a_container_in_transition_is_refused(fresh_host, tmp_path):
    ct = fresh_host.containers[0]
    fresh_host.stage(ct, "starting")
    try:
        result = director(tmp_path / "fd").backup(line(fresh_host),
                                                  fd_plugin_options=job_options(ct))
    finally:
        fresh_host.stage(ct, "stopped")
    assert result.status == "f"
    fatals = [m for m in result.messages("M_FATAL") if "vz7:" in m]
    assert len(fatals) == 1 and "transitional" in fatals[0], result.report()
    assert_nothing_left(fresh_host, ct)


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_user_snapshots_neither_block_nor_change(fresh_host, tmp_path, state):
    ct = fresh_host.containers[0]
    fresh_host.stage(ct, state)
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        mine = disk.create_snapshot()
        before = [(s.guid, s.parent_guid) for s in disk.snapshots]
    try:
        result = director(tmp_path / "fd").backup(line(fresh_host),
                                                  fd_plugin_options=job_options(ct))
        assert result.status == "T", result.report()
        with ploop.Disk.open(ct.disk_descriptor) as disk:
            assert [(s.guid, s.parent_guid) for s in disk.snapshots] == before
        assert ploop_check(ct.disk_descriptor) == 0
    finally:
        with ploop.Disk.open(ct.disk_descriptor) as disk:
            disk.delete_snapshot(mine)
        fresh_host.stage(ct, "stopped")
