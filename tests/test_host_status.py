"""Container status from the signals a sandbox host stages, as on a real VZ7 host.

One sandbox with real ploop images for the module: web01 runs (ve.state, freezer,
a ploop device, VE_ROOT really mounted), db02 and mail03 are stopped; each test
puts db02 into a state and back."""
import os
import subprocess
import sys

import pytest

from conftest import require
from vz7native import procfs
from vz7native.host import (
    MOUNTED, RUNNING, STOPPED, SUSPENDED, TRANSITIONAL, Host, StatusError, find_blockers)
from vz7native.host.sandbox import Sandbox

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    require(os.geteuid() == 0, "needs root (device nodes, owners, bind mounts)")
    sandbox = Sandbox.build(str(tmp_path_factory.mktemp("status") / "host"), count=3, seed=7,
                            running=(0,))
    yield sandbox
    sandbox.close()


@pytest.fixture
def db(box):
    ct = box.containers[1]
    yield ct
    box.stage(ct, STOPPED)
    box.stage_vzctl_lock(ct, None)


def signals(status):
    return {s.name: s.value for s in status.signals}


def test_a_running_container(box):
    web = box.containers[0]
    status = box.host.status(web)
    assert status.state == RUNNING
    assert status.reason == "the kernel says RUNNING and its root is mounted"
    seen = signals(status)
    assert seen["ve.state"] == "RUNNING"
    assert seen["freezer.state"] == "THAWED"
    top = procfs.mounts_at(web.root)[-1]
    assert seen["root mount"] == "%s %s on %s" % (
        top.fstype.decode("ascii"), os.fsdecode(top.source), os.fsdecode(web.root))
    assert seen["ploop device"] == "ploop12345 holds %s, running" % os.fsdecode(web.base_image)
    assert seen["vzctl lock"] == "no %s.lck" % web.ctid
    sources = {s.name: s.source for s in status.signals}
    assert sources["ve.state"] == "/sys/fs/cgroup/ve/%s/ve.state" % web.ctid
    assert sources["root mount"] == "/proc/self/mountinfo"
    # VE_ROOT shows the container's files, as a running container's does.
    assert os.path.isfile(os.path.join(web.root, b"etc/os-release"))
    assert find_blockers(web.root, "home/user/srv/set*") == [b"/home/user/srv/setgid",
                                                             b"/home/user/srv/setuid"]


def test_a_stopped_container(box, db):
    status = box.host.status(db)
    assert status.state == STOPPED
    seen = signals(status)
    assert seen["ve.state"] == "absent"
    assert seen["root mount"] == "none on %s" % os.fsdecode(db.root)
    assert seen["ploop device"] == "none holds %s" % os.fsdecode(db.base_image)
    assert seen["dump"] == "absent"
    assert os.listdir(db.root) == []


def test_mounted(box, db):
    box.stage(db, MOUNTED)
    status = box.host.status(db)
    assert (status.state, status.reason) == (MOUNTED, "not running, its root is mounted")
    assert status.signal("ve.state") == "absent"


@pytest.mark.parametrize("state,expected,reason", [
    (SUSPENDED, SUSPENDED, "not running, a checkpoint dump is waiting"),
    ("frozen", SUSPENDED, "running but frozen"),
    ("starting", TRANSITIONAL, "the kernel says STARTING"),
    ("stopping", TRANSITIONAL, "the kernel says STOPPING"),
])
def test_suspended_and_transitional_states(box, db, state, expected, reason):
    box.stage(db, state)
    status = box.host.status(db)
    assert (status.state, status.reason) == (expected, reason)


def test_vzctl_at_work_is_transitional(box, db):
    box.stage(db, RUNNING)
    box.stage_vzctl_lock(db, "stopping")
    status = box.host.status(db)
    assert (status.state, status.reason) == (TRANSITIONAL, "vzctl is stopping it (pid %d)"
                                             % os.getpid())
    assert status.signal("vzctl lock") == "stopping by pid %d" % os.getpid()


def test_a_stale_vzctl_lock_is_ignored(box, db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    box.stage_vzctl_lock(db, "starting", pid=dead.pid)
    status = box.host.status(db)
    assert status.state == STOPPED
    assert status.signal("vzctl lock") == "starting by pid %d, stale" % dead.pid


def test_one_signal_alone_does_not_make_a_running_container(box, db):
    # ve.state says RUNNING, but nothing is mounted: a start or stop is half done.
    state_dir = box.host.real(b"/sys/fs/cgroup/ve/" + db.ctid.encode())
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, b"ve.state"), "w") as f:
        f.write("RUNNING\n")
    status = box.host.status(db)
    assert (status.state, status.reason) == (
        TRANSITIONAL, "the kernel says RUNNING but neither VE_ROOT nor its root disk is mounted")


def test_a_ploop_device_alone_means_mounted_and_only_if_running(box, db):
    box.stage(db, MOUNTED)
    subprocess.check_call(["umount", os.fsdecode(db.root)])
    assert box.host.status(db).state == MOUNTED
    device, = [d for d in os.listdir(box.host.real(b"/sys/block"))
               if open(box.host.real(b"/sys/block/%s/pdelta/0/image" % d), "rb").read().strip()
               == os.path.realpath(db.base_image)]
    with open(box.host.real(b"/sys/block/%s/pstate/running" % device), "w") as f:
        f.write("0\n")
    status = box.host.status(db)
    assert status.state == STOPPED
    assert status.signal("ploop device").endswith(", not running")


def test_an_unknown_kernel_state_is_an_error(box, db):
    box.stage(db, RUNNING)
    with open(box.host.real(b"/sys/fs/cgroup/ve/%s/ve.state" % db.ctid.encode()), "w") as f:
        f.write("DEAD\n")
    with pytest.raises(StatusError, match="unknown ve.state 'DEAD' in /sys/fs/cgroup/ve/"):
        box.host.status(db)


def test_no_ve_cgroup_no_status(box, tmp_path):
    # A host without the VZ7 kernel's ve cgroup: nothing is decided from absent files.
    other = Host(box.root)
    ve = box.host.real(b"/sys/fs/cgroup/ve")
    os.rename(ve, ve + b".away")
    try:
        with pytest.raises(StatusError) as e:
            other.status(box.containers[2])
        assert str(e.value) == (
            "cannot tell the status of container %s: there is no ve cgroup hierarchy at "
            "/sys/fs/cgroup/ve, so this is not a running Virtuozzo 7 kernel"
            % box.containers[2].label)
    finally:
        os.rename(ve + b".away", ve)
