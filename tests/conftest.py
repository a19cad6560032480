"""Shared test ground.

Tests that need root, loop devices, FUSE or mounts carry the ``root`` marker:
where they cannot run they are skipped on a developer machine but fail in CI
(``CI=true``), so a CI run never turns green by skipping them. Tests that need the
ploop kernel driver carry ``kernel_ploop``: they run only where
``/proc/vz/ploop_minor`` exists, and the summary says how many did not.
"""
import os
import subprocess

import pytest

from vz7native import procfs

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HAVE_PLOOP_DRIVER = os.path.exists("/proc/vz/ploop_minor")


def require(condition, reason):
    """Skip (fail in CI) unless ``condition`` holds."""
    if not condition:
        if IN_CI:
            pytest.fail("required in CI but cannot run: " + reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def tmpfs_at(tmp_path):
    """``tmpfs_at(name, source, options)`` mounts a tmpfs at ``<tmp_path>/<name>``
    and returns that path (bytes); everything mounted so is unmounted after the test."""
    mounted = []

    def mount(name, source=b"vz7n-test", options=None):
        path = os.path.join(os.fsencode(str(tmp_path)), name)
        os.mkdir(path)
        subprocess.check_call([b"mount", b"-t", b"tmpfs"] + ([b"-o", options] if options else [])
                              + [source, path])
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        while procfs.mounts_at(path):
            subprocess.call([b"umount", b"--lazy", path])


def pytest_runtest_setup(item):
    if item.get_closest_marker("root") is not None:
        require(os.geteuid() == 0, "needs root (loop devices, FUSE, mounts)")
    if item.get_closest_marker("kernel_ploop") is not None and not HAVE_PLOOP_DRIVER:
        pytest.skip("needs the ploop kernel driver (/proc/vz/ploop_minor)")


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", ())
               if "ploop kernel driver" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            "%d test(s) need the ploop kernel driver and did not run here "
            "(/proc/vz/ploop_minor is missing)" % len(skipped))
