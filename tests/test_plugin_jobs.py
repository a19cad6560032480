"""The plugin inside a file daemon: overlapping jobs, memory over many jobs, and
what it imports into the daemon."""
import os
import subprocess
import sys

import pytest

from plugin_helpers import PLUGIN_DIR, director, fs_name, job_options, line, stored
from vz7native.host.sandbox import Sandbox

pytestmark = pytest.mark.root


def small_tree(root, seed):
    root = os.fsencode(root)
    for d in (b"etc", b"tmp"):
        os.mkdir(os.path.join(root, d))
    with open(os.path.join(root, b"etc/hostname"), "wb") as f:
        f.write(b"small%d\n" % seed)


@pytest.fixture(scope="module")
def small_host(tmp_path_factory):
    sandbox = Sandbox.build(str(tmp_path_factory.mktemp("small") / "root"), count=2, seed=9,
                            running=(0,), tree_builder=small_tree, disk_size=32 << 20)
    yield sandbox
    sandbox.close()


def test_two_containers_at_once_in_one_fd(small_host, tmp_path):
    d = director(tmp_path / "fd")
    with d.file_daemon() as fd:
        jobs = [fd.start_backup(line(small_host, lockfile=None),
                                fd_plugin_options=job_options(ct))
                for ct in small_host.containers]
        results = [job.wait() for job in jobs]
    for ct, result in zip(small_host.containers, results):
        assert result.status == "T", result.report()
        files, _ = stored(tmp_path / "fd", result.jobid)
        assert files[fs_name(ct, b"etc/hostname")].data.startswith(b"small")


def test_the_lockfile_keeps_a_second_job_out_and_names_the_first(small_host, tmp_path):
    ct = small_host.containers[1]
    lockfile = small_host.host.lockfile("/tmp/bareos_backup_cts", 0, note="pcompact")
    with lockfile:
        result = director(tmp_path / "fd").backup(
            line(small_host), fd_plugin_options=job_options(ct, lock_timeout=0))
    assert result.status == "f"
    text = " ".join(result.messages("M_FATAL"))
    assert "/tmp/bareos_backup_cts" in text and "pcompact" in text, result.report()


@pytest.mark.skipif(sys.version_info < (3, 8), reason="the simulator measures per-job memory "
                    "with sub-interpreters (Python 3.8+); 3.6 imports a module once per FD")
def test_memory_over_a_hundred_jobs_in_one_fd(small_host, tmp_path):
    ct = small_host.containers[1]
    d = director(tmp_path / "fd")
    report = d.measure_memory(100, fileset_plugin=line(small_host),
                              fd_plugin_options=job_options(ct))
    assert report.statuses == {"T": 100}, report
    assert report.rss_after_kib - report.rss_before_kib < 5 * 1024, report


def test_the_plugin_imports_no_ctypes_into_the_daemon():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import vz7bareos.plugin, vz7bareos.backup, vz7bareos.restore, vz7native.backup\n"
            "bad = [m for m in ('ctypes', 'pyudev', 'uuid', 'fuse', 'mfusepy') if m in sys.modules]\n"
            "assert not bad, bad\n" % PLUGIN_DIR)
    subprocess.check_call([sys.executable, "-c", code])


def test_a_restore_keeps_the_plugin_line_it_gets_with_every_file_once():
    """python3-fd hands the backup's Plugin= line to parse_plugin_definition
    again for each restored file: a restore of a million files must not keep a
    million copies of it, and options given at restore time still come first."""
    from fdsim import standin
    from fdsim.versions import BareosVersion
    from vz7bareos import options
    from vz7bareos.plugin import Job

    bareosfd = standin.build_module(BareosVersion(23), context=object())
    values = {bareosfd.bVarVersion: "23.0.0", bareosfd.bVarJobId: 7,
              bareosfd.bVarJobName: "restore"}
    bareosfd.GetValue = values.get
    bareosfd.RegisterEvents = lambda events: None
    job = Job(bareosfd)
    job.phase = "restore"
    assert job.parse_plugin_definition("restore=ct:new_name=copy") == bareosfd.bRC_OK
    backup_line = "name=web01:restore=files:"
    for _ in range(1000):
        assert job.parse_plugin_definition(backup_line) == bareosfd.bRC_OK
    assert len(job.option_strings) == 2
    merged = options.merge(*job.option_strings)
    assert (merged["restore"], merged["new_name"], merged["name"]) == ("ct", "copy", "web01")
