"""Incremental, Differential and Accurate jobs (contract §5, §13): the automatic
change check, since times from the catalog, accurate lists, the deleted-file pass
through check_file, save_time / bVarSinceTime / bVarCheckChanges per version."""
import pytest

from fdsim import constants as C
from fdsim.testing import fdsim_plugin, make_director  # noqa: F401


class Clock(object):
    """The Director's clock: job start times are what the test says."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


FULL_TIME = 2000000000

# Files with fixed times: "/old" older than the Full; "/new" changed after it;
# "/ctime" old mtime but new ctime.  Option "gone" drops names from the list.
TIMED = """
import bareosfd
from virtual import VirtualPlugin, entry_points

TIMES = {"/old": (1000, 1000), "/new": (%(after)d, %(after)d), "/ctime": (1000, %(after)d)}

class P(VirtualPlugin):
    def names(self):
        gone = self.options.get("gone", "").split(",")
        return [n for n in self.options.get("files", "/old,/new,/ctime").split(",")
                if n not in gone]

    def fill(self, savepkt, name):
        VirtualPlugin.fill(self, savepkt, name)
        mtime, ctime = TIMES.get(name, (1000, 1000))
        savepkt.statp.st_mtime, savepkt.statp.st_ctime = mtime, ctime
        size = self.options.get("size_" + name.strip("/"))
        if size:
            savepkt.statp.st_size = int(size)

    def check_file(self, fname):
        bareosfd.JobMessage(bareosfd.M_INFO, "check_file %%s" %% fname)
        return int(self.options.get("check", bareosfd.bRC_OK))

entry_points(globals(), P)
""" % {"after": FULL_TIME + 100}


@pytest.fixture
def setup(tmp_path, fdsim_plugin):
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    return director, clock, fdsim_plugin(TIMED)


def saved(director, result):
    return [r["path"] for r in director.files(result.jobid) if not r["deleted"]]


def test_non_accurate_rule(setup):
    """Unchanged iff mtime < since and ctime < since; no IO for unchanged files but
    end_backup_file is still called (§5, §13)."""
    director, clock, line = setup
    full = director.backup(line)
    assert full.files == 3
    clock.now = FULL_TIME + 500
    incr = director.backup(line, level="I")
    assert incr.level == "I"
    assert saved(director, incr) == ["/new", "/ctime"]
    assert incr.messages("M_SKIPPED") == ["     Unchanged file skipped: /old"]
    assert incr.calls.count("end_backup_file") == 3
    assert incr.calls.count("plugin_io(IO_OPEN)") == 2
    assert "check_file" not in " ".join(incr.calls)  # deletions only with Accurate


def test_mtimeonly_ignores_ctime(tmp_path, fdsim_plugin):
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    line = fdsim_plugin(TIMED)
    director.backup(line, fileset_options={"mtimeonly": True})
    clock.now += 500
    incr = director.backup(line, level="I", fileset_options={"mtimeonly": True})
    assert saved(director, incr) == ["/new"]


def test_since_follows_the_job_name_and_differential_uses_the_full(setup):
    director, clock, line = setup
    director.backup(line, job_name="a")
    clock.now = FULL_TIME + 150
    other = director.backup(line, level="I", job_name="b")  # no Full of job "b" yet
    assert other.level == "F"
    assert other.log[0].text.startswith("No prior Full backup Job record found")
    clock.now = FULL_TIME + 200
    incr = director.backup(line, level="I", job_name="a")  # since = a's Full, not b's
    assert saved(director, incr) == ["/new", "/ctime"]
    clock.now = FULL_TIME + 300
    assert saved(director, director.backup(line, level="I", job_name="a")) == []
    diff = director.backup(line, level="D", job_name="a")  # since = a's Full again
    assert saved(director, diff) == ["/new", "/ctime"]


def test_accurate_deleted_pass(setup):
    director, clock, line = setup
    full = director.backup(line, accurate=True)
    assert "check_file" not in " ".join(full.calls)  # a Full never calls check_file
    clock.now += 10
    # Job options, not FileSet options: a changed FileSet would force a Full
    incr = director.backup(line, level="I", accurate=True, run_plugin_options="python3:gone=/ctime")
    assert incr.plugin_messages("M_INFO") == ["check_file /ctime"]
    rows = director.files(incr.jobid)
    deleted = [r for r in rows if r["deleted"]]
    assert [(r["path"], r["fileindex"], r["size"], r["mtime"], r["ctime"]) for r in deleted] == [
        ("/ctime", 0, 0, 1000, FULL_TIME + 100)]
    assert incr.files == 1  # the deleted record counts as written (§13)
    clock.now += 10
    again = director.backup(line, level="I", accurate=True,
                            run_plugin_options="python3:gone=/ctime")
    assert again.plugin_messages("M_INFO") == []  # later accurate lists skip deleted records


def test_accurate_compares_mtime_ctime_size(setup):
    director, clock, line = setup
    director.backup(line, accurate=True)
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True, run_plugin_options="python3:size_old=99")
    assert saved(director, incr) == ["/old"]  # only the size changed


def test_accurate_options_of_the_fileset(setup):
    director, clock, line = setup
    director.backup(line, accurate=True, fileset_options={"accurate": "m"})
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True, fileset_options={"accurate": "m"},
                           run_plugin_options="python3:size_old=99")
    assert saved(director, incr) == []  # size is not compared
    other = director.backup(line, level="I", accurate=True)
    assert other.level == "F"  # another FileSet definition: no Full of it yet


def test_check_file_seen_keeps_the_file(setup):
    director, clock, line = setup
    director.backup(line, accurate=True)
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True,
                           run_plugin_options="python3:gone=/old:check=%d" % C.BRC["bRC_Seen"])
    assert incr.plugin_messages("M_INFO") == ["check_file /old"]
    assert not any(r["deleted"] for r in director.files(incr.jobid))


def test_director_reports_the_accurate_list(setup):
    director, clock, line = setup
    director.backup(line, accurate=True)
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True, run_plugin_options="python3:gone=/old")
    assert incr.log[0] == ("M_INFO", "Sent Accurate information for 3 files")
    clock.now += 10
    again = director.backup(line, level="I", accurate=True)  # /old's deleted marker is skipped
    assert again.log[0] == ("M_INFO", "Sent Accurate information for 2 files")


def test_skipped_file_counts_as_deleted_unless_seen(tmp_path, fdsim_plugin):
    source = TIMED.replace("entry_points(globals(), P)", """
class Skipping(P):
    def start_backup_file(self, savepkt):
        rc = P.start_backup_file(self, savepkt)
        return bareosfd.bRC_Skip if self.current == self.options.get("skip") else rc

entry_points(globals(), Skipping)""")
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    line = fdsim_plugin(source)
    director.backup(line, accurate=True)
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True, run_plugin_options="python3:skip=/old")
    assert [r["path"] for r in director.files(incr.jobid) if r["deleted"]] == ["/old"]


DIRECTORY = """
import bareosfd
from virtual import VirtualPlugin, entry_points

class P(VirtualPlugin):
    def fill(self, savepkt, name):
        VirtualPlugin.fill(self, savepkt, name)
        savepkt.type = bareosfd.FT_DIREND
        savepkt.statp.st_mode = 0o40755
        savepkt.statp.st_size = 0
        savepkt.no_read = True
        savepkt.link = self.options.get("link", name + "/")

entry_points(globals(), P)
"""


def test_directory_link_with_trailing_slash_is_stable(tmp_path, fdsim_plugin):
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    line = fdsim_plugin(DIRECTORY, files="/dir")
    full = director.backup(line, accurate=True)
    assert [r["path"] for r in director.files(full.jobid)] == ["/dir/"]
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True)
    assert incr.files == 0 and incr.messages("M_SKIPPED") == ["     Unchanged file skipped: /dir"]


def test_directory_link_without_slash_is_catalogued_as_given(tmp_path, fdsim_plugin):
    """§13: a link without the trailing slash is stored as that plain name; no
    slash is added anywhere."""
    director = make_director(tmp_path / "fdsim")
    full = director.backup(fdsim_plugin(DIRECTORY, files="/dir", link="/dir"))
    assert [r["path"] for r in director.files(full.jobid)] == ["/dir"]


def test_directory_link_losing_its_slash_is_changed_and_the_old_entry_deleted(
        tmp_path, fdsim_plugin):
    """§13: looked up by its plain link, the directory is not found ("changed")
    and its old dir/ entry is reported deleted."""
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    line = fdsim_plugin(DIRECTORY, files="/dir")
    director.backup(line, accurate=True)
    clock.now += 10
    incr = director.backup(line, level="I", accurate=True, run_plugin_options="python3:link=/dir")
    rows = [(r["path"], r["deleted"]) for r in director.files(incr.jobid)]
    assert rows == [("/dir/", 1), ("/dir", 0)]  # the deleted marker has FileIndex 0


def test_directory_without_link_is_a_director_error(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(DIRECTORY, files="/dir", link=""))
    assert result.status == "W"
    assert result.messages("M_ERROR") == ["Path length is zero (directory /dir)"]


def test_directory_without_link_leaves_a_nameless_row_sent_again(tmp_path, fdsim_plugin):
    """§13: the empty-named row stays in the catalog; every later accurate job gets
    it in its accurate list, sends the directory again and hits "Path length is
    zero" again (job W)."""
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", clock=clock)
    line = fdsim_plugin(DIRECTORY, files="/dir", link="")
    full = director.backup(line, accurate=True)
    assert [r["path"] for r in director.files(full.jobid)] == [""]
    for _ in range(2):
        clock.now += 10
        incr = director.backup(line, level="I", accurate=True)
        assert incr.status == "W" and incr.files >= 1
        assert "Sent Accurate information for 1 files" in incr.messages("M_INFO")
        assert "Path length is zero (directory /dir)" in incr.messages("M_ERROR")
    assert director.restore(where=str(tmp_path / "r")).files == 0  # no node in the tree


SINCE_API = TIMED.replace("entry_points(globals(), P)", """
class Forcing(P):
    def __init__(self, plugindef):
        P.__init__(self, plugindef)
        bareosfd.RegisterEvents([bareosfd.bEventStartBackupJob])

    def handle_plugin_event(self, event):
        mode = self.options.get("mode")
        if mode == "since":
            rc = bareosfd.SetValue(bareosfd.bVarSinceTime, 1)
        elif mode == "checkchanges":
            rc = bareosfd.SetValue(bareosfd.bVarCheckChanges, False)
        else:
            return bareosfd.bRC_OK
        bareosfd.JobMessage(bareosfd.M_INFO, "SetValue rc=%%d since=%%r" %% (
            rc, bareosfd.GetValue(bareosfd.bVarSinceTime)))
        return bareosfd.bRC_OK

    def fill(self, savepkt, name):
        P.fill(self, savepkt, name)
        if self.options.get("mode") == "save_time" and name == "/new":
            savepkt.save_time = %d

entry_points(globals(), Forcing)""" % (FULL_TIME + 1000))


@pytest.mark.parametrize("version, mode, expected", [
    (23, "since", ["/old", "/new", "/ctime"]),      # since 1: everything is newer
    ("22.1", "checkchanges", ["/old", "/new", "/ctime"]),
    (23, "save_time", ["/ctime"]),                  # /new judged against its own save_time
    (22, "save_time", ["/new", "/ctime"]),          # 22.0 ignores the plugin's save_time
])
def test_forcing_and_save_time(tmp_path, fdsim_plugin, version, mode, expected):
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", bareos_version=version, clock=clock)
    line = fdsim_plugin(SINCE_API, mode=mode)
    director.backup(line)
    clock.now += 500
    incr = director.backup(line, level="I")
    assert saved(director, incr) == expected


def test_since_api_is_refused_before_22_1(tmp_path, fdsim_plugin):
    clock = Clock(FULL_TIME)
    director = make_director(tmp_path / "fdsim", bareos_version=22, clock=clock)
    line = fdsim_plugin(SINCE_API, mode="since")
    director.backup(line)
    clock.now += 500
    incr = director.backup(line, level="I")
    assert incr.plugin_messages("M_INFO") == ["SetValue rc=2 since=%d" % FULL_TIME]
    assert saved(director, incr) == ["/new", "/ctime"]
