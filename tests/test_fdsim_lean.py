"""Lean mode (``Director(lean=True)``): the FD keeps its job records in files, so
its memory stays flat with the number of files, and a lean job makes the same
calls and stores the same files as a default one."""
import os

from fdsim.records import RecordFile
from fdsim.testing import fdsim_plugin, make_director  # noqa: F401
from fdsim.testing import virtual_plugin

# ``count`` virtual files in 50 directories, made one by one (no list of names
# in the plugin); every 100th file gets a job message and a debug message.
COUNTING = virtual_plugin("""
def start_backup_file(self, savepkt):
    self.index = getattr(self, "index", 0) + 1
    name = "/v/d%02d/f%06d" % (self.index % 50, self.index)
    if self.index % 100 == 0:
        bareosfd.JobMessage(bareosfd.M_INFO, "at %s" % name)
        bareosfd.DebugMessage(100, "at %s" % name)
    self.fill(savepkt, name)
    return bareosfd.bRC_OK

def end_backup_file(self):
    return bareosfd.bRC_More if self.index < int(self.options["count"]) else bareosfd.bRC_OK

def check_file(self, fname):
    return bareosfd.bRC_Seen if fname.endswith("0") else bareosfd.bRC_OK
""")

RECORDS = ("log", "debug", "trace", "events", "warnings")


def _line(fdsim_plugin):
    return fdsim_plugin(COUNTING, xattr="user.k=v", acl="A")


def _count(count):
    """The number of files, as the Job's FD Plugin Options (not part of the FileSet)."""
    return "python3:count=%d" % count


def _volume(director, result):
    with open(os.path.join(director.workdir, "volumes", "job-%d.vol" % result.jobid),
              "rb") as f:
        return f.read()


def test_a_lean_job_makes_the_same_calls_and_stores_the_same_files(tmp_path, fdsim_plugin):
    jobs = {}
    for lean in (False, True):
        director = make_director(tmp_path / ("lean" if lean else "default"), lean=lean,
                                 debug_level=200)
        line = _line(fdsim_plugin)
        full = director.backup(line, fd_plugin_options=_count(300))
        # an accurate Incremental that misses 50 files: the deleted-file pass
        incremental = director.backup(line, fd_plugin_options=_count(250), level="I",
                                      accurate=True)
        jobs[lean] = (director, full, incremental)
    for default, lean in zip(jobs[False][1:], jobs[True][1:]):
        assert default.status == lean.status == "T", lean.report()
        assert (default.files, default.bytes, default.errors) == (
            lean.files, lean.bytes, lean.errors)
        assert isinstance(lean.trace, RecordFile)
        for name in RECORDS:
            assert list(getattr(lean, name)) == getattr(default, name), name
        assert len(lean.trace) == len(default.trace)
        # the first line names the job, with its start time
        assert lean.report().splitlines()[1:] == default.report().splitlines()[1:]
        assert _volume(jobs[True][0], lean) == _volume(jobs[False][0], default)
        assert jobs[True][0].files(lean.jobid) == jobs[False][0].files(default.jobid)
    full, incremental = jobs[True][1:]
    assert len(full.plugin_messages("M_INFO")) == 3
    assert incremental.messages("M_INFO")[0] == "Sent Accurate information for 300 files"
    assert incremental.calls.count("check_file('/v/d01/f000251')") == 1
    deleted = [row["path"] for row in jobs[True][0].files(incremental.jobid) if row["deleted"]]
    assert len(deleted) == 45   # 50 unseen, 5 of them kept by check_file


def _fd_peak_kib(director, line, count):
    with director.file_daemon() as fd:
        fd.reset_peak_rss()
        result = fd.backup(line, fd_plugin_options=_count(count))
        peak = fd.peak_rss_kib()
    assert result.status == "T", result.report()[:2000]
    return peak


def test_the_lean_fd_does_not_grow_with_the_files(tmp_path, fdsim_plugin):
    """Peak RSS of a fresh FD process for a job of 2,000 and one of 20,000 files:
    a default FD holds 1 to 2.5 KiB of records per file (this plugin's: 1.2 KiB
    on 3.6, 2.6 KiB on 3.11), a lean one none."""
    growth = {}
    for lean in (False, True):
        director = make_director(tmp_path / ("lean" if lean else "default"),
                                 isolation="process", lean=lean)
        small, large = (_fd_peak_kib(director, _line(fdsim_plugin), count)
                        for count in (2000, 20000))
        growth[lean] = large - small
    # KiB; measured: default +20 MiB (3.6) and +45 MiB (3.11), lean +0
    assert growth[False] > 10 * 1024, growth
    assert growth[True] < 1024, growth      # flat: under 58 bytes per extra file
