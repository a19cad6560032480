"""Restore jobs: the per-file sequence of §2.5, create_status handling and the
core's CreateFile for CF_CORE (§6, §13), where/regexwhere, replace, sparse data
through IO_SEEK, and the restore selection of the catalog."""
import os
import stat

import pytest

from fdsim import constants as C
from fdsim.testing import fdsim_plugin, make_director  # noqa: F401
from fdsim.testing import virtual_plugin

# Virtual entries of every kind; create_file answers what option "status" says.
ENTRIES = virtual_plugin("""
KINDS = {"/t/dir": (bareosfd.FT_DIREND, 0o40750), "/t/dir/file": (bareosfd.FT_REG, 0o100640),
         "/t/sym": (bareosfd.FT_LNK, 0o120777), "/t/fifo": (bareosfd.FT_SPEC, 0o10640),
         "/t/chr": (bareosfd.FT_SPEC, 0o20640), "/t/hard": (bareosfd.FT_REG, 0o100640),
         "/t/dir/hard2": (bareosfd.FT_REG, 0o100640)}

def names(self):
    return self.options.get("files", "/t/dir/file,/t/hard,/t/dir/hard2,/t/sym,/t/fifo,/t/chr,/t/dir").split(",")

def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    kind, mode = self.KINDS[name]
    savepkt.type = kind
    statp = savepkt.statp
    statp.st_mode = mode
    statp.st_uid, statp.st_gid = 1234, 5678
    if kind == bareosfd.FT_DIREND:
        savepkt.link = name + "/"
        savepkt.no_read = True
    elif kind == bareosfd.FT_LNK:
        savepkt.link = "file-target"
        savepkt.no_read = True
    elif kind == bareosfd.FT_SPEC:
        statp.st_rdev = 0x0103
        savepkt.no_read = True
    if name in ("/t/hard", "/t/dir/hard2"):
        statp.st_nlink, statp.st_ino, statp.st_dev = 2, 99, 1

def create_file(self, restorepkt):
    restorepkt.create_status = int(self.options.get("status", bareosfd.CF_CORE))
    mode = restorepkt.statp.st_mode
    bareosfd.JobMessage(bareosfd.M_INFO, "create %s %s" % (restorepkt.ofname, oct(mode)))
    bareosfd.JobMessage(bareosfd.M_INFO, "where=%r regexwhere=%r var=%r,%r replace=%s" % (
        restorepkt.where, restorepkt.regexwhere, bareosfd.GetValue(bareosfd.bVarWhere),
        bareosfd.GetValue(bareosfd.bVarRegexWhere), chr(restorepkt.replace)))
    return bareosfd.bRC_OK

def set_file_attributes(self, restorepkt):
    open_ = self.fd is not None
    bareosfd.JobMessage(bareosfd.M_INFO, "attributes %s open=%s" % (restorepkt.ofname, open_))
    return bareosfd.bRC_OK

def set_acl(self, acl):
    bareosfd.JobMessage(bareosfd.M_INFO, "set_acl %s" % acl.fname)
    return bareosfd.bRC_OK

def set_xattr(self, xattr):
    bareosfd.JobMessage(bareosfd.M_INFO, "set_xattr %s" % xattr.fname)
    return bareosfd.bRC_OK

def plugin_io(self, iop):
    if iop.func == bareosfd.IO_OPEN and iop.flags & os.O_WRONLY:
        bareosfd.JobMessage(bareosfd.M_INFO, "open %s mode=%o" % (iop.fname, iop.mode))
    return VirtualPlugin.plugin_io(self, iop)
""")


@pytest.fixture
def backed_up(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim", bareos_version=23)
    backup = director.backup(fdsim_plugin(ENTRIES, acl="acl", xattr="user.a=1"),
                             fileset_options={"hardlinks": True})
    assert backup.status == "T" and backup.files == 7
    return director, str(tmp_path / "restored")


@pytest.mark.root
def test_cf_core_per_type(backed_up):
    """Directories with owner and mode, symlinks, hardlinks, FIFOs -- but no device
    nodes, no times, no owners of anything but directories (§6, §13)."""
    director, where = backed_up
    before = int(os.path.getmtime(os.path.dirname(where))) - 1
    result = director.restore(where=where)
    assert result.status == "T" and result.files == 7  # the device counts as restored
    base = where + "/t"
    d = os.lstat(base + "/dir")
    assert stat.S_IMODE(d.st_mode) == 0o750 and (d.st_uid, d.st_gid) == (1234, 5678)
    f = os.lstat(base + "/dir/file")
    assert (f.st_uid, f.st_gid) == (0, 0)  # never chowned
    assert f.st_mtime > before  # times never restored (the backup said 1500000000)
    assert os.readlink(base + "/sym") == "file-target"
    assert os.lstat(base + "/sym").st_uid == 0
    assert os.path.samefile(base + "/hard", base + "/dir/hard2")
    fifo = os.lstat(base + "/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and fifo.st_uid == 0
    assert not os.path.lexists(base + "/chr")
    # regular files are opened through the plugin with mode 0 (§13)
    assert "open %s/dir/file mode=0" % base in result.plugin_messages("M_INFO")


def test_cf_extract_order(backed_up):
    """create_file -> IO_OPEN(0600) -> IO_WRITE -> set_file_attributes with the file
    still open -> IO_CLOSE -> set_acl/set_xattr -> end_restore_file (§13)."""
    director, where = backed_up
    result = director.restore(where=where, plugin_options="python3:status=%d" % C.CF["CF_EXTRACT"],
                              select=["/t/dir/file"])
    assert result.calls[-8:] == [
        "create_file", "plugin_io(IO_OPEN)", "plugin_io(IO_WRITE)", "set_file_attributes",
        "plugin_io(IO_CLOSE)", "set_acl", "set_xattr", "end_restore_file"]
    messages = result.plugin_messages("M_INFO")
    assert "open %s/t/dir/file mode=600" % where in messages
    assert "attributes %s/t/dir/file open=True" % where in messages


@pytest.mark.parametrize("status", ["CF_SKIP", "CF_CREATED", "CF_ERROR"])
def test_acl_and_xattr_of_directories_arrive_whatever_the_status(backed_up, status):
    director, where = backed_up
    result = director.restore(where=where, plugin_options="python3:status=%d" % C.CF[status],
                              select=["/t/dir/", "/t/sym"])
    messages = result.plugin_messages("M_INFO")
    assert "set_acl %s/t/dir/" % where in messages  # the directory, maybe not even created
    assert not any(m.startswith("set_acl %s/t/sym" % where) for m in messages)
    assert ("attributes %s/t/dir/ open=False" % where in messages) == (status == "CF_CREATED")
    if status == "CF_ERROR":
        assert result.status == "W" and result.files == 0
        assert ("Plugin createFile call failed. Returned CF_ERROR file=%s/t/dir/" % where
                in result.messages("M_ERROR"))
    else:
        assert result.status == "T" and result.files == 2  # the directory entry alone
    assert not os.path.exists(where + "/t/dir/file")


NAMES = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.type = bareosfd.FT_DIREND
    savepkt.statp.st_mode = 0o40755
    savepkt.link = name + "/"
    savepkt.no_read = True

def say(self, call, name):
    bareosfd.JobMessage(bareosfd.M_INFO, "%s %s" % (call, name))

def create_file(self, restorepkt):
    self.restoring = restorepkt.ofname
    self.say("create_file", restorepkt.ofname)
    restorepkt.create_status = bareosfd.CF_EXTRACT  # so that IO_OPEN comes too
    return bareosfd.bRC_OK

def plugin_io(self, iop):
    if iop.func == bareosfd.IO_OPEN:
        self.say("IO_OPEN", iop.fname)
    return bareosfd.bRC_OK

def set_file_attributes(self, restorepkt):
    self.say("set_file_attributes", restorepkt.ofname)
    return bareosfd.bRC_OK

def set_acl(self, acl):
    self.say("set_acl", acl.fname)
    return bareosfd.bRC_OK

def set_xattr(self, xattr):
    self.say("set_xattr", xattr.fname)
    return bareosfd.bRC_OK

def end_restore_file(self):
    self.say("end_restore_file", self.restoring)
    return bareosfd.bRC_OK
""")


def test_a_directory_is_restored_under_its_name_with_the_slash(tmp_path, fdsim_plugin):
    """A directory's record is stored under its link: every packet of the restore
    names it ``where + "/d/sub/"`` (§6 "Paths")."""
    director = make_director(tmp_path / "fdsim")
    director.backup(fdsim_plugin(NAMES, files="/d/sub", acl="acl", xattr="user.a=1"))
    where = str(tmp_path / "restored")
    result = director.restore(where=where)
    assert result.status == "T"
    name = where + "/d/sub/"
    assert result.plugin_messages("M_INFO") == [
        "create_file " + name, "IO_OPEN " + name, "set_file_attributes " + name,
        "set_acl " + name, "set_xattr " + name, "end_restore_file " + name]


@pytest.mark.root
def test_only_a_directory_gives_the_where_root_its_owner_and_mode(backed_up):
    director, where = backed_up
    only_dir = director.backup(_line_of(director),
                               run_plugin_options="python3:files=/t/dir")
    director.restore(jobid=only_dir.jobid, where=where)
    root = os.lstat(where)
    assert (root.st_uid, root.st_gid) == (1234, 5678)
    assert stat.S_IMODE(root.st_mode) == 0o750 | 0o300


def _line_of(director):
    return director.files(1)[0]["cmd"]


def test_where_and_regexwhere(backed_up, tmp_path):
    director, where = backed_up
    plain = director.restore(where=where, select="/t/dir/file")
    assert plain.plugin_messages("M_INFO")[:2] == [
        "create %s/t/dir/file 0o100640" % where,
        "where=%r regexwhere=None var=%r,None replace=a" % (where, where)]
    target = str(tmp_path / "moved")
    regex = director.restore(regexwhere="!^/t/!%s/!" % target, select="/t/dir/file",
                             replace="ifnewer")
    assert regex.plugin_messages("M_INFO")[:2] == [
        "create %s/dir/file 0o100640" % target,
        "where=None regexwhere=None var=None,None replace=w"]
    assert os.path.isfile(target + "/dir/file")


@pytest.mark.parametrize("where", ["/", ""])
def test_where_root_reaches_the_plugin_as_empty(backed_up, where):
    """where=/ and an empty where mean "no prefix": the plugin sees rp.where and
    GetValue(bVarWhere) as '', never '/' (§6, verified)."""
    director, _ = backed_up
    result = director.restore(where=where, select="/t/dir/file",
                              plugin_options="python3:status=%d" % C.CF["CF_SKIP"])
    assert result.plugin_messages("M_INFO")[:2] == [
        "create /t/dir/file 0o100640", "where='' regexwhere=None var='',None replace=a"]


FIFO_WITH_DATA = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.type = bareosfd.FT_FIFO  # a FIFO whose data is read and restored
    savepkt.statp.st_mode = 0o10640

def create_file(self, restorepkt):
    restorepkt.create_status = bareosfd.CF_CORE
    return bareosfd.bRC_OK

def plugin_io(self, iop):
    if iop.flags & os.O_WRONLY:  # restore: nothing opens the FIFO, nothing blocks
        if iop.func == bareosfd.IO_OPEN:
            bareosfd.JobMessage(bareosfd.M_INFO, "open %s flags=%o mode=%o" % (
                iop.fname, iop.flags, iop.mode))
        return bareosfd.bRC_OK
    if iop.func == bareosfd.IO_WRITE:
        iop.status = iop.count
        return bareosfd.bRC_OK
    return VirtualPlugin.plugin_io(self, iop)
""")


def test_cf_core_fifo_is_made_then_opened_write_only(tmp_path, fdsim_plugin):
    """FT_FIFO under CF_CORE: mkfifo, then IO_OPEN with O_WRONLY alone (no O_CREAT,
    no O_TRUNC) and mode 0 (§6, verified)."""
    director = make_director(tmp_path / "fdsim")
    director.backup(fdsim_plugin(FIFO_WITH_DATA, files="/p/fifo"))
    where = str(tmp_path / "restored")
    result = director.restore(where=where)
    assert result.status == "T"
    assert stat.S_ISFIFO(os.lstat(where + "/p/fifo").st_mode)
    assert result.plugin_messages("M_INFO") == ["open %s/p/fifo flags=%o mode=0"
                                                % (where, os.O_WRONLY)]


@pytest.mark.parametrize("replace, existing_mtime, created", [
    ("always", 1, True), ("never", 1, False), ("ifnewer", 1, True), ("ifnewer", 2000000000, False),
    ("ifolder", 1, False), ("ifolder", 2000000000, True)])
def test_replace_policies_under_cf_core(backed_up, replace, existing_mtime, created):
    director, where = backed_up
    target = where + "/t/dir/file"
    os.makedirs(os.path.dirname(target))
    with open(target, "w") as f:
        f.write("existing")
    os.utime(target, (existing_mtime, existing_mtime))
    result = director.restore(where=where, select="/t/dir/file", replace=replace)
    assert result.status == "T"
    with open(target) as f:
        assert (f.read() == "existing") != created
    if not created:
        assert result.messages("M_SKIPPED")[0].startswith("File skipped.")


def test_start_restore_file_failure_unbalances_create_file(backed_up, fdsim_plugin, tmp_path):
    director, where = backed_up
    source = virtual_plugin("""
def start_restore_file(self, cmd):
    return bareosfd.bRC_Error
""")
    line = fdsim_plugin(source, name="failing", files="/x")
    director.backup(line)
    result = director.restore(where=where, select="/x", fileset_name="fdsim-fileset",
                              jobid=director.jobs()[-1]["jobid"])
    assert result.status == "f"
    assert result.messages("M_FATAL") == ["Unbalanced call to createFile=0 0"]
    assert "bEventJobEnd" not in result.delivered_events()


def test_create_file_not_ok_skips_the_file(backed_up, fdsim_plugin):
    director, where = backed_up
    source = virtual_plugin("""
def create_file(self, restorepkt):
    return bareosfd.bRC_Error
""")
    line = fdsim_plugin(source, name="nocreate", files="/x,/y")
    jobid = director.backup(line).jobid
    result = director.restore(jobid=jobid, where=where)
    assert result.status == "W" and result.files == 0
    assert result.messages("M_ERROR") == ["Plugin createFile call failed. Stat=2 file=%s/x" % where,
                                          "Plugin createFile call failed. Stat=2 file=%s/y" % where]


def test_restore_errors_are_no_fd_errors_but_a_file_count_mismatch(backed_up, fdsim_plugin):
    """An M_ERROR of a restore (failed create_file, "Device restore on root
    failed") leaves FD Errors at 0; the job ends W through the Director's "File
    count mismatch" warning (§6)."""
    director, where = backed_up
    source = virtual_plugin("""
def create_file(self, restorepkt):
    return bareosfd.bRC_Error if restorepkt.ofname.endswith("/y") else VirtualPlugin.create_file(
        self, restorepkt)
""")
    jobid = director.backup(fdsim_plugin(source, name="failsome", files="/x,/y")).jobid
    result = director.restore(jobid=jobid, where=where)
    assert (result.status, result.files, result.errors) == ("W", 1, 0)
    assert result.messages("M_ERROR") == ["Plugin createFile call failed. Stat=2 file=%s/y" % where]
    assert result.messages("M_WARNING") == ["File count mismatch: expected 2 files, restored 1"]
    assert not os.path.lexists("/t/chr")
    in_place = director.restore(jobid=1, where="/", select="/t/chr")  # the node is missing
    assert (in_place.status, in_place.files, in_place.errors) == ("W", 0, 0)
    assert in_place.messages("M_ERROR") == ["Device restore on root failed: /t/chr"]
    assert in_place.messages("M_WARNING") == ["File count mismatch: expected 1 files, restored 0"]


def test_end_restore_file_undefined_return_is_fatal(backed_up, fdsim_plugin):
    director, where = backed_up
    source = virtual_plugin("""
def end_restore_file(self):
    return None
""")
    jobid = director.backup(fdsim_plugin(source, name="noreturn", files="/x")).jobid
    result = director.restore(jobid=jobid, where=where)
    assert result.status == "f"
    assert result.messages("M_FATAL") == [
        "Return value of endRestoreFile invalid: -1, plugin=python3-fd.so"]


def test_write_error_stops_the_file(backed_up, fdsim_plugin):
    director, where = backed_up
    source = virtual_plugin("""
def plugin_io(self, iop):
    rc = VirtualPlugin.plugin_io(self, iop)
    if iop.func == bareosfd.IO_WRITE:
        iop.status = 1
    return rc
""")
    jobid = director.backup(fdsim_plugin(source, name="shortwrite", files="/x")).jobid
    result = director.restore(jobid=jobid, where=where)
    # The file was counted when it was created: no count mismatch, and a
    # restore's M_ERROR is no FD error -- the job ends OK (§6 "Restore errors").
    assert (result.status, result.files, result.errors) == ("T", 1, 0)
    assert result.messages("M_ERROR")[0].startswith("Write error on %s/x" % where)


SPARSE = virtual_plugin("""
def content(self, name):
    hole = int(self.options.get("hole", "262136"))
    return b"head" + b"\\0" * (3 * hole) + b"tail"

def plugin_io(self, iop):
    if iop.func == bareosfd.IO_SEEK:
        bareosfd.JobMessage(bareosfd.M_INFO, "seek %d %d" % (iop.offset, iop.whence))
    if iop.func == bareosfd.IO_OPEN and iop.flags & os.O_WRONLY and self.options.get("io") == "core":
        VirtualPlugin.plugin_io(self, iop)
        iop.filedes = self.fd
        iop.status = bareosfd.iostat_do_in_core
        return bareosfd.bRC_OK
    return VirtualPlugin.plugin_io(self, iop)
""")


@pytest.mark.parametrize("io", ["plugin", "core"])
def test_sparse_restore_seeks(tmp_path, fdsim_plugin, io):
    director = make_director(tmp_path / "fdsim", bareos_version=23)
    backup = director.backup(fdsim_plugin(SPARSE, files="/s", io=io),
                             fileset_options={"sparse": True})
    size = 8 + 3 * 262136
    assert backup.bytes < size  # zero blocks are not stored
    where = str(tmp_path / "r")
    restore = director.restore(where=where)
    assert restore.status == "T"
    assert [m for m in restore.plugin_messages("M_INFO") if m.startswith("seek")] == [
        "seek %d 0" % (3 * 262136)]
    with open(where + "/s", "rb") as f:
        assert f.read() == b"head" + b"\0" * (3 * 262136) + b"tail"
    assert os.stat(where + "/s").st_blocks * 512 < size


def created(result):
    return sorted(m.split()[1] for m in result.plugin_messages("M_INFO")
                  if m.startswith("create"))


@pytest.mark.parametrize("select, mark, expected", [
    # a directory's catalog name selects that entry only, like bconsole's file= (§6)
    (["/t/dir/"], None, ["/t/dir/"]),
    (["/t/dir"], None, []),  # not a catalog name
    # mark, as in the restore tree: the directory and everything below it
    (None, ["/t/dir"], ["/t/dir/", "/t/dir/file", "/t/dir/hard2"]),
    (None, ["/t/dir/"], ["/t/dir/", "/t/dir/file", "/t/dir/hard2"]),
    (["/t/sym"], ["/t/dir"], ["/t/dir/", "/t/dir/file", "/t/dir/hard2", "/t/sym"]),
    # globs: every entry they match, directories alone
    (["/t/*i*"], None, ["/t/dir/", "/t/dir/file", "/t/dir/hard2", "/t/fifo"]),
    (["/t/d*/"], None, ["/t/dir/"]),
    (None, ["/t/d*"], ["/t/dir/", "/t/dir/file", "/t/dir/hard2"]),
])
def test_select_names_and_mark_subtrees(backed_up, select, mark, expected):
    director, where = backed_up
    result = director.restore(where=where, select=select, mark=mark,
                              plugin_options="python3:status=%d" % C.CF["CF_SKIP"])
    assert created(result) == [where + p for p in expected]
    assert result.files == len(expected)
