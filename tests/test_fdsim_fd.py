"""The FD process (contract §1, §12): jobs that overlap in one process, successive
jobs with fresh module state, the C locale, a crash that wedges the FD, and the
memory report."""
import sys

import pytest

from fdsim import FdWedgedError, jobrun
from fdsim.testing import fdsim_plugin, make_director, plugin_line  # noqa: F401
from fdsim.testing import virtual_plugin

WHO = virtual_plugin("""
def meet(self, tag):
    # wait until both jobs got here (option barrier: a directory)
    barrier = self.options["barrier"]
    open(os.path.join(barrier, "%s.%d" % (tag, bareosfd.GetValue(bareosfd.bVarJobId))), "w").close()
    deadline = time.time() + 30
    while (len([n for n in os.listdir(barrier) if n.startswith(tag)]) < 2
           and time.time() < deadline):
        time.sleep(0.01)

def start_backup_file(self, savepkt):
    if "barrier" in self.options:
        self.meet("in")
    count = bareosfd.GetInstanceCount()
    if "barrier" in self.options:
        self.meet("counted")
    bareosfd.JobMessage(bareosfd.M_INFO, "pid=%d thread=%d token=%d modules=%d count=%d" % (
        os.getpid(), threading.get_ident(), id(TOKEN), id(sys.modules), count))
    return VirtualPlugin.start_backup_file(self, savepkt)
""", imports="import os, sys, threading, time\nTOKEN = object()")


def who(result):
    assert result.status == "T", result.report()
    return dict(item.split("=") for item in result.plugin_messages("M_INFO")[0].split())


def test_overlapping_jobs_in_one_fd(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim", isolation="process")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    line = fdsim_plugin(WHO, barrier=str(barrier))
    with director.file_daemon() as fd:
        first = fd.start_backup(line)
        second = fd.start_backup(line)
        a, b = who(first.wait(60)), who(second.wait(60))
    assert a["pid"] == b["pid"] == str(fd.pid)    # one FD process ...
    assert a["thread"] != b["thread"]             # ... two job threads
    assert a["count"] == b["count"] == "2"        # GetInstanceCount sees both jobs
    assert a["token"] != b["token"]               # each job imported the module afresh
    if jobrun.available_modes()[0] == jobrun.SUB_INTERPRETER:
        assert a["modules"] != b["modules"]       # two interpreters


def test_successive_jobs_in_one_fd_and_one_fd_per_job(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim", isolation="process")
    line = fdsim_plugin(WHO)
    with director.file_daemon() as fd:
        one, two = who(fd.backup(line)), who(fd.backup(line))
    assert one["pid"] == two["pid"] and one["count"] == two["count"] == "1"
    alone = [who(director.backup(line)) for _ in range(2)]
    assert alone[0]["pid"] != alone[1]["pid"] != one["pid"]


STR_WALK = virtual_plugin("""
def names(self):
    root = self.options["root"]
    return [os.path.join(root, name) for name in sorted(os.listdir(root))]
""")


def test_c_locale(tmp_path, fdsim_plugin):
    """Under LC_ALL=C the FD's Python has an ASCII filesystem encoding: str paths
    turn "Über" into surrogates that Bareos cannot take; bytes paths decoded as
    UTF-8 work under every locale (§7.3, §12.2)."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "Über.txt").write_text("x")
    director = make_director(tmp_path / "fdsim", isolation="process", c_locale=True)
    walked_with_str = director.backup(fdsim_plugin(STR_WALK, root=str(root)))
    assert walked_with_str.filesystem_encoding == "ascii"
    assert walked_with_str.status == "f"
    assert any("UnicodeEncodeError" in m for m in walked_with_str.messages("M_FATAL"))

    bytes_walk = director.backup(plugin_line("reference_tree", root=str(root)),
                                 fileset_name="bytes")
    assert bytes_walk.status == "T" and bytes_walk.files == 2
    where = str(tmp_path / "restored")
    assert director.restore(where=where, fileset_name="bytes").status == "T"
    assert (tmp_path / "restored").joinpath(*root.parts[1:]).joinpath("Über.txt").exists()


def test_c_locale_needs_a_child_process(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim", isolation="in-process", c_locale=True)
    with pytest.raises(Exception, match="c_locale needs a child FD process"):
        director.backup(fdsim_plugin(WHO))


def test_a_crash_wedges_the_fd(tmp_path, fdsim_plugin):
    source = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.type = bareosfd.FT_LNK
    savepkt.link = "K\\udcdcBLER"
""")
    director = make_director(tmp_path / "fdsim", isolation="process")
    with director.file_daemon() as fd:
        crashed = fd.backup(fdsim_plugin(source))
        assert crashed.status == "f" and crashed.crashed
        with pytest.raises(FdWedgedError):
            fd.backup(fdsim_plugin(WHO, name="next"))


def test_an_fd_process_that_dies_fails_the_job(tmp_path, fdsim_plugin):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    os._exit(3)
""")
    director = make_director(tmp_path / "fdsim", isolation="process")
    result = director.backup(fdsim_plugin(source))
    assert result.status == "f"
    assert result.crashed == "the FD process died (exit status 3)"


def test_memory_report(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim", isolation="process")
    line = fdsim_plugin(WHO)
    report = director.measure_memory(jobs=3, warmup=1, fileset_plugin=line)
    assert report.jobs == 3
    assert report.rss_before_kib > 1000 and report.rss_after_kib > 1000
    assert report.growth_per_job_kib == (report.rss_after_kib - report.rss_before_kib) / 3.0
    assert report.statuses == {"T": 3}
    assert len(director.jobs()) == 4


def test_interpreter_modes_can_be_chosen(tmp_path, fdsim_plugin):
    """A sub-interpreter per job where the Python offers them (3.8+), else a fresh
    import; both can be asked for explicitly."""
    line = fdsim_plugin(WHO)
    has_sub_interpreters = sys.version_info >= (3, 8)
    assert jobrun.available_modes()[0] == (
        jobrun.SUB_INTERPRETER if has_sub_interpreters else jobrun.FRESH_IMPORT)
    if not has_sub_interpreters:
        with pytest.raises(ValueError, match="cannot create sub-interpreters"):
            jobrun.resolve_mode(jobrun.SUB_INTERPRETER)
    for mode in jobrun.available_modes():
        director = make_director(tmp_path / mode, interpreter=mode)
        assert director.backup(line).raw["interpreter"] == mode


def test_a_thread_left_running_crashes_the_fd_at_job_end(tmp_path, fdsim_plugin):
    """python3-fd ends the job's interpreter at job end; a plugin thread still
    running there takes the FD down.  Only sub-interpreter mode can tell: in
    fresh-import mode the job's interpreter is never ended."""
    source = virtual_plugin("""
def end_backup_file(self):
    stop = threading.Event()
    self.stop = stop
    threading.Thread(target=stop.wait, args=(0.3,)).start()
    return VirtualPlugin.end_backup_file(self)
""", imports="import threading")
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(source))
    if result.interpreter == jobrun.SUB_INTERPRETER:
        assert result.status == "f"
        assert result.crashed.startswith("Py_EndInterpreter: not the last thread")
    else:
        assert result.status == "T" and result.crashed is None
