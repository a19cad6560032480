"""`vz7ploop ct-mount-snapshot` / `ct-umount-snapshot`: a snapshot view of a
container that outlives the command, on a sandbox host with real images, and
how later backups and `vz7ploop cleanup` see it (live or left over)."""
import json
import os
import signal
import subprocess
import time

import pytest

import ct_tree
from fanotify_gate import FAN_ACCESS_PERM, Gate
from host_helpers import own_run_dir
from mid_merge import MergeCopy, disk_hash, in_use, write_after_the_snapshot
from ploop_tools import check_deltas
from restore_helpers import edit_image
from test_cli import VZ7PLOOP, run
from vz7native import devices, ploop, procfs
from vz7native.backup import STATE_DIR, BackupSession, ViewInUse
from vz7native.host.sandbox import Sandbox
from vz7native.mount import state as mount_state

pytestmark = pytest.mark.root

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ctsnap")


@pytest.fixture(scope="module", autouse=True)
def run_dir(work):
    """A run dir of this module's own: other people's mounts are never seen."""
    with own_run_dir(os.fsencode(str(work / "run"))) as base:
        yield base


@pytest.fixture(scope="module")
def box(work):
    """web01 running, db02 stopped."""
    sandbox = Sandbox.build(str(work / "host"), count=2, seed=3, running=(0,))
    yield sandbox
    sandbox.close()


@pytest.fixture
def target(work, request):
    path = work / ("mnt-" + request.node.name.replace("[", "-").strip("]"))
    path.mkdir()
    return str(path)


def host_root(box):
    return os.fsdecode(box.root)


def snapshots(ct):
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        return [s.guid for s in disk.snapshots]


def leftovers(box, ct, run_dir, target):
    """Everything a view of ``ct`` at ``target`` could leave: snapshots besides the
    base, mounts at the target or in our run dir, loop devices reading our FUSE
    files, mount records, the state file."""
    target = os.fsencode(os.path.realpath(target))
    found = ["snapshot %s" % g for g in snapshots(ct)[1:]]
    found += ["mount %s" % m.mount_point for m in procfs.mounts()
              if m.mount_point == target or m.mount_point.startswith(run_dir)]
    found += ["loop %s" % l.node for l in devices.loop_devices()
              if l.backing_file.startswith(run_dir)]
    found += ["record %s" % r.id for r in mount_state.load_all(run_dir)]
    state = box.host.real(os.path.join(STATE_DIR, ct.uuid.encode() + b".json"))
    if os.path.exists(state):
        found.append("state file")
    return found


def mount_view(box, ct, target):
    """`ct-mount-snapshot --json` of ``ct`` at ``target``: what it recorded."""
    rc, out, err = run("ct-mount-snapshot", "--json", "--host-root", host_root(box), ct.uuid,
                       target)
    assert rc == 0, err
    return json.loads(out)


def kill_view_mount(run_dir, view):
    """SIGKILL the mount helper of ``view``: its mount goes with it."""
    helper = [r for r in mount_state.load_all(run_dir) if r.id == view["mount_id"]][0].helper
    os.kill(helper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while procfs.is_running(helper) and time.monotonic() < deadline:
        time.sleep(0.1)


def ploop_check(ct):
    """The ploop tool's own check of every delta of the disk."""
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        check_deltas(list(disk.images.values()))


@pytest.mark.parametrize("index, by", [(0, "name"), (1, "uuid")])
def test_mount_view_umount_leaves_nothing(box, run_dir, target, index, by):
    ct = box.containers[index]
    rc, out, err = run("ct-mount-snapshot", "--host-root", host_root(box), "--json",
                       getattr(ct, by), target)
    assert rc == 0, err
    view = json.loads(out)
    assert (view["uuid"], view["target"]) == (ct.uuid, os.path.realpath(target))
    assert view["state"] == ("running" if index == 0 else "stopped")
    # the command has exited; the view is there, of a snapshot, read-only
    assert view["snapshot"] in snapshots(ct)
    assert procfs.mounts_at(os.fsencode(os.path.realpath(target)))
    ct_tree.assert_same_tree(box.tree(ct), target)
    with pytest.raises(OSError):
        open(os.path.join(target, "etc", "written-through-the-view"), "wb")

    rc, out, err = run("ct-umount-snapshot", "--host-root", host_root(box), getattr(ct, by))
    assert rc == 0, err
    assert "merged back the snapshot %s" % view["snapshot"] in out
    assert leftovers(box, ct, run_dir, target) == []
    assert os.listdir(target) == []
    ploop_check(ct)


def test_errors_are_one_line_with_a_sysexit_code(box, target):
    root = host_root(box)
    web, db = box.containers
    rc, out, err = run("ct-mount-snapshot", "--host-root", root, "nosuchct", target)
    assert (rc, out, len(err.splitlines())) == (38, "", 1)
    assert err.startswith("vz7ploop: cannot mount a snapshot of container nosuchct at ")
    assert "no container with name 'nosuchct'" in err

    rc, out, err = run("ct-umount-snapshot", "--host-root", root, web.name)
    assert (rc, len(err.splitlines())) == (40, 1)
    assert "has no snapshot view" in err

    rc, out, err = run("ct-mount-snapshot", "--backend", "kernel", "--host-root", root,
                       web.name, target)
    assert rc == 38 and "use --backend portable" in err

    # a blocker file in the live root of the running container
    blocker = os.path.join(web.root, b"tmp", b"backup_blocker")
    open(blocker, "wb").close()
    try:
        rc, out, err = run("ct-mount-snapshot", "--blocker", "tmp/backup_blocker",
                           "--host-root", root, web.uuid, target)
    finally:
        os.unlink(blocker)
    assert (rc, len(err.splitlines())) == (17, 1)
    assert "has blocker files (tmp/backup_blocker)" in err
    assert snapshots(web)[1:] == [] and not procfs.mounts_at(os.fsencode(target))

    # a container that already has a view
    assert run("ct-mount-snapshot", "--host-root", root, db.name, target)[0] == 0
    try:
        second = target + "-second"
        os.mkdir(second)
        rc, out, err = run("ct-mount-snapshot", "--host-root", root, db.name, second)
        assert (rc, len(err.splitlines())) == (17, 1)
        assert "has a snapshot view mounted at %s" % os.path.realpath(target) in err
        assert len(snapshots(db)) == 2
    finally:
        assert run("ct-umount-snapshot", "--host-root", root, db.name)[0] == 0


def test_a_backup_refuses_a_live_view_and_cleans_one_whose_mount_is_gone(box, run_dir,
                                                                         target, work):
    ct = box.containers[0]
    root = host_root(box)
    view = mount_view(box, ct, target)
    session = BackupSession(box.host, name=ct.name, backend="portable",
                            mount_base=str(work / "bareos"))
    with pytest.raises(ViewInUse) as refused:
        session.open()
    assert "vz7ploop ct-umount-snapshot %s" % ct.uuid in str(refused.value)
    assert view["snapshot"] in snapshots(ct)
    # `vz7ploop cleanup` leaves a live view alone
    rc, out, err = run("cleanup", "--json", "--host-root", root)
    assert (rc, json.loads(out)) == (0, [])
    assert procfs.mounts_at(os.fsencode(os.path.realpath(target)))

    # the view's helper is killed: its mount goes with it, the snapshot stays
    kill_view_mount(run_dir, view)
    with session:
        assert any("merged back the snapshot %s of the snapshot view at %s" % (
            view["snapshot"], os.path.realpath(target)) in s for s in session.cleaned)
        assert session.snapshot not in (None, view["snapshot"])
    assert leftovers(box, ct, run_dir, target) == []
    ploop_check(ct)


def test_cleanup_merges_the_snapshot_of_a_view_whose_mount_is_gone(box, run_dir, target):
    ct = box.containers[1]
    root = host_root(box)
    view = mount_view(box, ct, target)
    kill_view_mount(run_dir, view)
    rc, out, err = run("cleanup", "--json", "--host-root", root)
    assert rc == 0, err
    report = json.loads(out)
    assert [e["id"] for e in report if "id" in e] == [view["mount_id"]]
    assert [(e["container"], len(e["cleaned"])) for e in report if "container" in e] == [
        (ct.label, 1)]
    assert leftovers(box, ct, run_dir, target) == []
    ploop_check(ct)


def test_umount_after_the_mount_died_still_merges(box, run_dir, target):
    ct = box.containers[0]
    root = host_root(box)
    view = mount_view(box, ct, target)
    kill_view_mount(run_dir, view)
    rc, out, err = run("ct-umount-snapshot", "--host-root", root, ct.uuid)
    assert rc == 0, err
    assert "merged back the snapshot %s" % view["snapshot"] in out
    assert leftovers(box, ct, run_dir, target) == []
    ploop_check(ct)


def test_a_failed_mount_leaves_nothing(box, run_dir, work):
    ct = box.containers[0]
    missing = str(work / "no-such-dir")
    rc, out, err = run("ct-mount-snapshot", "--host-root", host_root(box), ct.name, missing)
    assert (rc, out, len(err.splitlines())) == (1, "", 1)
    assert "is not a directory" in err
    assert leftovers(box, ct, run_dir, missing) == []


@pytest.fixture
def lone(tmp_path):
    """A host of its own with one stopped container, whose disk a test may change."""
    sandbox = Sandbox.build(str(tmp_path / "host"), count=1, seed=7, running=())
    yield sandbox
    sandbox.close()


def test_a_umount_killed_in_the_merge_is_finished_by_the_next(lone, run_dir, target, tmp_path):
    """kill -9 of `vz7ploop ct-umount-snapshot` in the middle of its merge, after
    the container wrote into its disk: the next one finishes the merge, and the
    disk reads as it did."""
    ct = lone.containers[0]
    root = host_root(lone)
    view = mount_view(lone, ct, target)
    edit_image(ct.disk_descriptor, str(tmp_path / "edit"), write_after_the_snapshot)
    written = disk_hash(ct.disk_descriptor)
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        top, snapshot_delta = disk.top_delta, disk.images[view["snapshot"]]
    with Gate(MergeCopy(top, snapshot_delta)) as gate:
        gate.watch(top, FAN_ACCESS_PERM)
        umount = subprocess.Popen([VZ7PLOOP, "ct-umount-snapshot", "--host-root", root,
                                   ct.uuid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        held = gate.wait_held(120)
        umount.kill()
        out, err = umount.communicate()
        assert held is not None and held.pid == umount.pid, (out, err)
    assert in_use(snapshot_delta) and view["snapshot"] in snapshots(ct)

    rc, out, err = run("ct-umount-snapshot", "--host-root", root, ct.uuid)
    assert rc == 0, err
    assert "merged back the snapshot %s" % view["snapshot"] in out
    assert "its merge had been interrupted" in out
    assert leftovers(lone, ct, run_dir, target) == []
    assert disk_hash(ct.disk_descriptor) == written
    ploop_check(ct)


def test_cleanup_removes_the_delta_a_merge_killed_at_its_very_end_left(lone, run_dir, target):
    """A merge killed after libploop wrote the new descriptor, before it removed
    the merged delta: the snapshot is gone, the file is not (both as libploop
    leaves them, the file kept by a second link). `vz7ploop cleanup` removes
    the file, not the disk's own."""
    ct = lone.containers[0]
    root = host_root(lone)
    view = mount_view(lone, ct, target)
    kill_view_mount(run_dir, view)
    path = lone.host.real(os.path.join(STATE_DIR, ct.uuid.encode() + b".json"))
    with open(path, "rb") as f:
        state = json.loads(f.read().decode("utf-8"))
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        merged = disk.top_delta
        kept = merged + b".kept"
        os.link(merged, kept)
        state.update(phase="merge", merging=os.fsdecode(merged))
        with open(path, "wb") as f:
            f.write(json.dumps(state).encode("utf-8"))
        disk.delete_snapshot(view["snapshot"])
        files = sorted(disk.images.values())
    os.rename(kept, merged)

    rc, out, err = run("cleanup", "--json", "--host-root", root)
    assert rc == 0, err
    cleaned = [e["cleaned"] for e in json.loads(out) if "container" in e]
    assert cleaned == [["removed %s, which the interrupted merge of the snapshot %s had merged "
                        "already" % (lone.host.view(merged).decode(), view["snapshot"])]]
    assert not os.path.exists(merged)
    with ploop.Disk.open(ct.disk_descriptor) as disk:
        assert sorted(disk.images.values()) == files
    assert leftovers(lone, ct, run_dir, target) == []
    ploop_check(ct)
