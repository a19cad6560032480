"""``vz7ploop selftest`` as far as this machine allows: the kernel steps are
skipped with the reason, every other step passes, nothing is left behind, and a
directory it did not make is refused."""
import json
import os
import subprocess
import sys

import pytest

from host_helpers import own_run_dir
from vz7native import cli, devices, procfs, selftest
from vz7native.host.sandbox import Sandbox
from vz7native.mount import state as mount_state

pytestmark = pytest.mark.root

KERNEL_STEPS = ("create", "mount-rw", "write", "mount-kernel", "umount")
HERE = ("reference-tree", "build-image", "snapshot", "mount-portable", "merge", "verify",
        "ploop-check", "backup", "clean-up")


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    """One run through the CLI with --json: (exit code, report, run dir, --dir)."""
    base = tmp_path_factory.mktemp("selftest")
    run_dir = base / "run"
    run_dir.mkdir()
    target = str(base / "scratch")
    with own_run_dir(os.fsencode(str(run_dir))):
        proc = subprocess.run(
            [sys.executable, "-m", "vz7native.cli", "selftest", "--dir", target, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            env=dict(os.environ))
    return proc, str(run_dir), target


def test_the_kernel_steps_are_skipped_with_the_reason_and_the_others_pass(json_run):
    proc, _, target = json_run
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["dir"] == os.path.realpath(target)
    steps = {step["name"]: step for step in report["steps"]}
    assert [s["name"] for s in report["steps"]][-2:] == ["backup", "clean-up"]
    for name in KERNEL_STEPS:
        assert steps[name]["status"] == "skipped", steps[name]
        assert steps[name]["detail"] == \
            "no ploop kernel driver (/proc/vz/ploop_minor missing)"
        assert steps[name]["seconds"] is None
    for name in HERE:
        assert steps[name]["status"] == "ok", steps[name]
        assert steps[name]["detail"] == ""
        assert steps[name]["seconds"] >= 0
    assert set(steps) == set(KERNEL_STEPS) | set(HERE)


def test_nothing_is_left_behind(json_run):
    _, run_dir, target = json_run
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
