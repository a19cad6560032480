"""``vz7ploop selftest`` as far as this machine allows: the kernel steps are
skipped with the reason, every other step passes (the backup and the restore
of a sandbox container by the Bareos plugin through the FD simulator among
them), nothing is left behind, and a directory it did not make is refused. A
failing simulator job fails its step with the job's log; a failing restore
leaves nothing of the new container; one whose paths exist already touches none
of them. A missing plugin or simulator fails the backup step, saying why."""
import json
import os
import re
import subprocess
import sys

import pytest

from host_helpers import own_run_dir
from vz7native import cli, devices, procfs, selftest
from vz7native.host import STOPPED
from vz7native.host.sandbox import Sandbox
from vz7native.mount import state as mount_state
from vz7native.restore import STAGING_PREFIX

pytestmark = pytest.mark.root

KERNEL_STEPS = ("create", "mount-rw", "write", "mount-kernel", "umount")
HERE = ("reference-tree", "build-image", "snapshot", "mount-portable", "merge", "verify",
        "ploop-check", "backup", "restore", "clean-up")
# An ok job step's detail: the simulator job's JobId, status, files and bytes.
JOB_DETAIL = {"backup": r"Bareos backup job 1: T, \d+ files, \d+ bytes",
              "restore": r"Bareos restore job 2: T, \d+ files, \d+ bytes"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(ROOT, "src", "plugin")


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    """One run through the CLI with --json: (exit code, report, run dir, --dir)."""
    base = tmp_path_factory.mktemp("selftest")
    run_dir = base / "run"
    run_dir.mkdir()
    target = str(base / "scratch")
    # A prlctl of "the host" that says when it is run: the self-test must never run it.
    host_bin = base / "host-bin"
    host_bin.mkdir()
    ran = base / "host-prlctl-ran"
    (host_bin / "prlctl").write_text("#!/bin/sh\necho \"$@\" >> %s\nexit 1\n" % ran)
    (host_bin / "prlctl").chmod(0o755)
    with own_run_dir(os.fsencode(str(run_dir))):
        proc = subprocess.run(
            [sys.executable, "-m", "vz7native.cli", "selftest", "--dir", target, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            env=dict(os.environ, PATH=str(host_bin) + os.pathsep + os.environ["PATH"]))
    return proc, str(run_dir), target, str(ran)


def test_the_kernel_steps_are_skipped_with_the_reason_and_the_others_pass(json_run):
    proc, _, target, _ = json_run
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["dir"] == os.path.realpath(target)
    steps = {step["name"]: step for step in report["steps"]}
    assert [s["name"] for s in report["steps"]][-3:] == ["backup", "restore", "clean-up"]
    for name in KERNEL_STEPS:
        assert steps[name]["status"] == "skipped", steps[name]
        assert steps[name]["detail"] == \
            "no ploop kernel driver (/proc/vz/ploop_minor missing)"
        assert steps[name]["seconds"] is None
    for name in HERE:
        assert steps[name]["status"] == "ok", steps[name]
        assert re.fullmatch(JOB_DETAIL.get(name, ""), steps[name]["detail"]), steps[name]
        assert steps[name]["seconds"] >= 0
    assert set(steps) == set(KERNEL_STEPS) | set(HERE)


def test_the_host_prlctl_is_never_run(json_run):
    """The restore registers through the sandbox's prlctl, first in the simulator's PATH."""
    proc, _, _, ran = json_run
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(ran)


def test_nothing_is_left_behind(json_run):
    _, run_dir, target, _ = json_run
    assert not os.path.exists(target)
    prefix = os.fsencode(os.path.realpath(target))
    assert [m for m in procfs.mounts() if m.mount_point.startswith(prefix)] == []
    # The portable mount's loop device reads a flat disk file in the run dir.
    ours = (prefix, os.fsencode(os.path.realpath(run_dir)))
    assert [d for d in devices.loop_devices()
            if d.backing_file and d.backing_file.startswith(ours)] == []
    assert mount_state.load_all(os.fsencode(run_dir)) == []


def test_an_empty_dir_is_used_and_left_empty_and_the_text_report_lists_the_skips(
        tmp_path, capsys):
    target = tmp_path / "empty"
    target.mkdir()
    with own_run_dir(os.fsencode(str(tmp_path))):
        assert cli.main(["selftest", "--dir", str(target)]) == 0
    assert os.listdir(str(target)) == []
    out = capsys.readouterr().out
    assert "skipped  no ploop kernel driver (/proc/vz/ploop_minor missing)" in out
    assert out.rstrip().endswith("result: every step that could run passed")


def test_a_foreign_dir_is_refused_and_untouched(tmp_path, capsys):
    target = tmp_path / "data"
    target.mkdir()
    (target / "important").write_bytes(b"keep me\n")
    assert cli.main(["selftest", "--dir", str(target)]) == cli.EXIT_BUSY
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 1 and "exists and is not empty" in err[0], err
    assert os.listdir(str(target)) == ["important"]
    assert (target / "important").read_bytes() == b"keep me\n"


def test_a_dir_that_cannot_go_on_path_is_refused(tmp_path):
    with pytest.raises(selftest.DirectoryRefused, match="has a ':' in its path"):
        selftest.run(str(tmp_path / "a:b"))
    assert os.listdir(str(tmp_path)) == []


def test_a_dir_inside_a_container_is_refused(tmp_path):
    with Sandbox.build(str(tmp_path / "host"), count=1, running=()) as box:
        inside = os.path.join(box.containers[0].private, b"selftest")
        with pytest.raises(selftest.DirectoryRefused, match="container"):
            selftest.run(inside, host=box.host)
        assert not os.path.exists(inside)


def test_a_failing_step_fails_the_run_and_still_cleans_up(tmp_path, monkeypatch):
    """A tree that differs from what was written: the portable mount's comparison fails."""
    real_build = selftest._build_image

    def build_then_change(run):
        real_build(run)
        with open(os.path.join(run.tree, b"etc/hostname"), "wb") as f:
            f.write(b"changed\n")

    monkeypatch.setattr(selftest, "_build_image", build_then_change)
    target = tmp_path / "scratch"
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(target))
    steps = {s.name: s for s in report.steps}
    assert report.ok is False
    assert steps["mount-portable"].status == "failed"
    assert "etc/hostname" in steps["mount-portable"].detail
    assert (steps["merge"].status, steps["merge"].detail) == \
        ("skipped", "step mount-portable failed")
    assert steps["backup"].status == "ok"
    assert steps["clean-up"].status == "ok"     # the snapshot merged, the disk removed
    assert not os.path.exists(str(target))


def test_a_failing_backup_skips_the_restore(tmp_path, monkeypatch):
    def no_backup(run):
        raise OSError("no sandbox here")

    monkeypatch.setattr(selftest, "_backup", no_backup)
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(tmp_path / "scratch"))
    steps = {s.name: s for s in report.steps}
    assert steps["backup"].status == "failed"
    assert (steps["restore"].status, steps["restore"].detail) == \
        ("skipped", "step backup failed")
    assert steps["clean-up"].status == "ok"


# -- the restore step -----------------------------------------------------------------

def restored_paths(sandbox):
    """What of the new container can be on the sandbox host: its registration
    links, private area and root directory, and restore staging directories."""
    host = sandbox.host
    uuid = selftest.RESTORED_UUID.encode()
    private_dir = host.real(b"/vz/private")
    return sandbox.registration_links(selftest.RESTORED_UUID, selftest.RESTORED_NAME) + [
        host.real(b"/vz/private/" + uuid), host.real(b"/vz/root/" + uuid)] + [
        os.path.join(private_dir, name) for name in os.listdir(private_dir)
        if name.startswith(STAGING_PREFIX)]


def sandbox_mounts(sandbox):
    """Mounts below the sandbox host other than its running container's root."""
    prefix = sandbox.root + b"/"
    running = os.path.realpath(sandbox.containers[0].root)
    return [m.mount_point for m in procfs.mounts()
            if m.mount_point.startswith(prefix) and m.mount_point != running]


def run_watching_the_restore(tmp_path, monkeypatch, check):
    """selftest.run with ``check(run, error)`` called right after the restore
    step (``error`` what it raised, or None), before the run's clean-up."""
    real_restore = selftest._restore

    def restore_then_check(run):
        try:
            real_restore(run)
        except Exception as e:
            check(run, e)
            raise
        check(run, None)

    monkeypatch.setattr(selftest, "_restore", restore_then_check)
    target = tmp_path / "scratch"
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(target))
    assert not os.path.exists(str(target))
    return {s.name: s for s in report.steps}


def jobs_seen(monkeypatch):
    """The simulator's answers to the self-test, in order."""
    seen = []
    real_simulate = selftest._simulate

    def simulate(run, command, *args):
        answer = real_simulate(run, command, *args)
        seen.append((command, answer))
        return answer

    monkeypatch.setattr(selftest, "_simulate", simulate)
    return seen


def test_the_restore_makes_a_registered_stopped_container_and_removes_it(
        tmp_path, monkeypatch):
    """Seen just before the step removes it: registered under the new name, stopped,
    its disk made in place by the portable backend and sealed; then nothing is left."""
    seen = {}
    real_remove = selftest._remove_new_container
    jobs = jobs_seen(monkeypatch)

    def look_then_remove(sandbox, private, root):
        ct = sandbox.host.find(uuid=selftest.RESTORED_UUID)
        seen.update(name=ct.name, state=sandbox.host.status(ct).state, private=ct.private)
        real_remove(sandbox, private, root)

    def check(run, error):
        seen["error"] = error
        seen["left"] = [p for p in restored_paths(run.sandbox) if os.path.lexists(p)]
        seen["mounts"] = sandbox_mounts(run.sandbox)

    monkeypatch.setattr(selftest, "_remove_new_container", look_then_remove)
    steps = run_watching_the_restore(tmp_path, monkeypatch, check)
    assert steps["restore"].status == "ok", steps["restore"].detail
    assert seen["error"] is None
    assert (seen["name"], seen["state"]) == (selftest.RESTORED_NAME, STOPPED)
    assert seen["private"].endswith(b"/vz/private/" + selftest.RESTORED_UUID.encode())
    assert [(command, job["status"]) for command, job in jobs if command != "files"] == \
        [("backup", "T"), ("restore", "T")]
    restored = [text for kind, text in jobs[-1][1]["log"] if "restored:" in text]
    assert len(restored) == 1 and "registered, stopped" in restored[0], jobs[-1]
    assert ", seal " in restored[0]          # the portable backend: the image sealed
    assert seen["left"] == [] and seen["mounts"] == []
    assert steps["clean-up"].status == "ok"


def change_the_original_after_the_backup(monkeypatch):
    """The original container's tree differs from its image once the backup
    step passed: the restore's comparison finds it (after registering)."""
    real_backup = selftest._backup

    def backup_then_change(run):
        real_backup(run)
        tree = run.sandbox.tree(run.sandbox.containers[0])
        with open(os.path.join(tree, b"etc/hostname"), "wb") as f:
            f.write(b"changed\n")

    monkeypatch.setattr(selftest, "_backup", backup_then_change)
    return "etc/hostname: sha256"


def fail_the_registration(monkeypatch):
    """The sandbox's prlctl fails: the plugin's restore job ends Fatal, and the
    step fails with its job log."""
    def failing_prlctl(self, bin_dir):
        path = os.path.join(bin_dir, b"prlctl")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho prlctl is not here >&2\nexit 1\n")
        os.chmod(path, 0o755)
        return path

    monkeypatch.setattr(Sandbox, "write_prlctl", failing_prlctl)
    return "Bareos restore job 2 ended f (Fatal error); job log: "


@pytest.mark.parametrize("fail", [change_the_original_after_the_backup, fail_the_registration])
def test_a_failing_restore_is_reported_and_leaves_nothing_of_the_new_container(
        tmp_path, monkeypatch, fail):
    expected = fail(monkeypatch)
    seen = {}

    def check(run, error):
        seen["error"] = error
        seen["left"] = [p for p in restored_paths(run.sandbox) if os.path.lexists(p)]
        seen["mounts"] = sandbox_mounts(run.sandbox)
        seen["original"] = run.sandbox.host.find(uuid=run.sandbox.containers[0].uuid)

    steps = run_watching_the_restore(tmp_path, monkeypatch, check)
    assert steps["backup"].status == "ok"
    assert steps["restore"].status == "failed"
    assert expected in steps["restore"].detail
    if fail is fail_the_registration:
        assert re.search(r"M_FATAL .*prlctl is not here", steps["restore"].detail), \
            steps["restore"].detail
    assert steps["restore"].seconds >= 0
    assert seen["error"] is not None
    assert seen["left"] == [] and seen["mounts"] == []
    assert seen["original"] is not None
    assert steps["clean-up"].status == "ok"


def test_a_restore_whose_paths_exist_refuses_and_touches_none_of_them(tmp_path, monkeypatch):
    """An empty root directory where the new container's would be: the restore
    would take it over; the self-test refuses instead and leaves it."""
    real_backup = selftest._backup
    seen = {}

    def backup_then_occupy(run):
        real_backup(run)
        root = run.sandbox.host.real(b"/vz/root/" + selftest.RESTORED_UUID.encode())
        os.mkdir(root, 0o711)
        seen["root"] = root

    def check(run, error):
        seen["kept"] = os.path.isdir(seen["root"]) and os.listdir(seen["root"]) == []
        seen["left"] = [p for p in restored_paths(run.sandbox) if os.path.lexists(p)]
        seen["mounts"] = sandbox_mounts(run.sandbox)

    monkeypatch.setattr(selftest, "_backup", backup_then_occupy)
    steps = run_watching_the_restore(tmp_path, monkeypatch, check)
    assert steps["restore"].status == "failed"
    assert "refused: " in steps["restore"].detail
    assert "/vz/root/%s exists and the self-test did not make it" % selftest.RESTORED_UUID \
        in steps["restore"].detail
    assert seen["kept"] is True
    assert seen["left"] == [seen["root"]] and seen["mounts"] == []
    assert steps["clean-up"].status == "ok"


# -- the plugin and the simulator ---------------------------------------------------

def test_a_failing_backup_job_fails_the_step_with_its_job_log(tmp_path, monkeypatch):
    """A blocker file in the container: the plugin vetoes the backup."""
    real_build = Sandbox.build

    def build_with_a_blocker(cls, *args, **kwargs):
        box = real_build(*args, **kwargs)
        with open(os.path.join(box.tree(box.containers[0]), b"tmp/backup_blocker"), "wb"):
            pass
        return box

    monkeypatch.setattr(Sandbox, "build", classmethod(build_with_a_blocker))
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(tmp_path / "scratch"))
    steps = {s.name: s for s in report.steps}
    assert report.ok is False
    assert steps["backup"].status == "failed"
    assert steps["backup"].detail.startswith(
        "SelftestError: Bareos backup job 1 ended f (Fatal error); job log: M_FATAL "), \
        steps["backup"].detail
    assert "tmp/backup_blocker" in steps["backup"].detail
    assert (steps["restore"].status, steps["restore"].detail) == \
        ("skipped", "step backup failed")
    assert steps["clean-up"].status == "ok"
    assert not os.path.exists(str(tmp_path / "scratch"))


def test_a_plugin_dir_without_the_plugin_fails_the_backup_and_says_so(tmp_path, capsys):
    empty = tmp_path / "plugins"
    empty.mkdir()
    target = tmp_path / "scratch"
    with own_run_dir(os.fsencode(str(tmp_path))):
        assert cli.main(["selftest", "--dir", str(target), "--plugin-dir", str(empty),
                         "--json"]) == 1
    steps = {s["name"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    assert steps["backup"]["status"] == "failed"
    assert steps["backup"]["detail"] == \
        "NotInstalled: --plugin-dir %s holds no bareos-fd-vz7_ct_fs.py" % empty
    assert (steps["restore"]["status"], steps["restore"]["detail"]) == \
        ("skipped", "step backup failed")
    assert steps["mount-portable"]["status"] == "ok"
    assert steps["clean-up"]["status"] == "ok"
    assert not os.path.exists(str(target))


def test_without_a_checkout_the_plugin_is_looked_for_where_the_rpm_puts_it(
        tmp_path, monkeypatch):
    """No source checkout around vz7native and no plugin in Bareos's plugin
    directory: the backup step fails and names the package to install."""
    monkeypatch.setattr(selftest, "_CHECKOUT", str(tmp_path / "no-checkout"))
    monkeypatch.setattr(selftest, "DEFAULT_PLUGIN_DIR", os.fsencode(str(tmp_path / "bareos")))
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(tmp_path / "scratch"))
    steps = {s.name: s for s in report.steps}
    assert report.ok is False
    assert steps["backup"].detail == (
        "NotInstalled: the Bareos plugin is not installed: no bareos-fd-vz7_ct_fs.py in "
        "%s/bareos (install the package vz7native-bareos-plugin, or name its directory "
        "with --plugin-dir)" % tmp_path)
    assert steps["restore"].status == "skipped"


def test_a_missing_simulator_fails_the_backup_and_says_so(tmp_path, monkeypatch):
    """Neither an installed simulator nor a checkout's tests/fdsim."""
    monkeypatch.setattr(selftest, "_INSTALLED_SIMULATOR", "vz7native.fdsim_missing")
    monkeypatch.setattr(selftest, "_CHECKOUT", str(tmp_path / "no-checkout"))
    with own_run_dir(os.fsencode(str(tmp_path))):
        report = selftest.run(str(tmp_path / "scratch"), plugin_dir=PLUGIN_DIR)
    steps = {s.name: s for s in report.steps}
    assert report.ok is False
    assert steps["backup"].status == "failed"
    assert steps["backup"].detail.startswith(
        "NotInstalled: the FD simulator vz7native.fdsim_missing is missing from vz7native "
        "in "), \
        steps["backup"].detail
    assert steps["clean-up"].status == "ok"
    assert not os.path.exists(str(tmp_path / "scratch"))
