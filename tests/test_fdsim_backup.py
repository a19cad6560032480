"""Backup jobs: start_backup_file return codes and copy-back rules (§2.1), the
core's post-processing (FT_* handling, hardlinks), data reads (§4), ACL/XATTR
calls, and GetValue during a backup (§3.2)."""
import os

import pytest

from fdsim import constants as C
from fdsim import volume
from fdsim.testing import fdsim_plugin, make_director  # noqa: F401
from fdsim.testing import virtual_plugin


@pytest.fixture
def director_for(tmp_path):
    def make(version=23, **kwargs):
        return make_director(tmp_path / ("fdsim-%s" % version), bareos_version=version, **kwargs)
    return make


CODE_ON_SECOND = virtual_plugin("""
def start_backup_file(self, savepkt):
    rc = VirtualPlugin.start_backup_file(self, savepkt)
    if self.current == "/b":
        return int(self.options["code"])
    return rc
""")


@pytest.mark.parametrize("version, code, status, files, message", [
    (23, "bRC_Skip", "T", ["/a", "/c"], None),
    (23, "bRC_Stop", "T", ["/a"], None),
    (23, "bRC_Error", "f", ["/a"], ("M_FATAL", "startBackupFile failed")),
    (23, "bRC_More", "W", ["/a"], ("M_ERROR", "unhandled returncode from startBackupFile")),
    (23, "bRC_Seen", "W", ["/a"], ("M_ERROR", "unhandled returncode from startBackupFile")),
    (22, "bRC_Skip", "T", ["/a"], None),   # 20-22: any other code ends the loop silently
    (22, "bRC_Error", "T", ["/a"], None),
    (20, "bRC_Skip", "T", ["/a"], None),
])
def test_start_backup_file_return_codes(director_for, fdsim_plugin, version, code, status,
                                        files, message):
    director = director_for(version)
    line = fdsim_plugin(CODE_ON_SECOND, files="/a,/b,/c", code=C.BRC[code])
    result = director.backup(line)
    assert result.status == status
    assert [r["path"] for r in director.files(result.jobid)] == files
    if message:
        assert any(e.type == message[0] and message[1] in e.text for e in result.log)
    if code == "bRC_Skip" and version >= 23:
        # a skipped file gets no end_backup_file (§2.1)
        assert result.calls.count("end_backup_file") == 2


def test_nothing_is_copied_back_unless_ok(director_for, fdsim_plugin):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    self.fill(savepkt, "/never")
    savepkt.flags = b"not even a bytearray"
    return bareosfd.bRC_Stop
""")
    result = director_for(23).backup(fdsim_plugin(source))
    assert (result.status, result.files) == ("T", 0)


@pytest.mark.parametrize("change, version, text", [
    ("savepkt.flags = bytes(5)", 23, "TypeError: flags need to be of type bytearray"),
    ("savepkt.flags = bytearray(6)", 23, "flags need to be a bytearray of 5 bytes"),
    ("del savepkt.statp", 23, "RuntimeError: PyStatPacketToNative() failed"),
    ("savepkt.fname = b'/bytes'", 23, "TypeError: fname needs to be of type string"),
    ("savepkt.fname = b'/bytes'", 20, 'no fname in startBackupFile packet'),
    ("savepkt.link = None", 23, "TypeError: link needs to be of type string"),
    ("savepkt.type = 0", 23, 'no type in startBackupFile packet'),
])
def test_copy_back_validation_is_fatal(director_for, fdsim_plugin, change, version, text):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    VirtualPlugin.start_backup_file(self, savepkt)
    %s
    return bareosfd.bRC_OK
""" % change)
    result = director_for(version).backup(fdsim_plugin(source))
    assert result.status == "f" and result.files == 0
    assert any(text in m for m in result.messages("M_FATAL"))


SURROGATE = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    if name == "/bad":
        setattr(savepkt, self.options["field"], "/K\\udcdcBLER.csv")
""")


@pytest.mark.parametrize("version, field, files, crashed", [
    (20, "fname", "/bad", True),        # NULL strdup: segfault (§7.1)
    (21, "fname", "/bad", False),       # 21+: an exception, job fails
    (23, "fname", "/good,/bad", True),  # after a file was sent: double free at job end (§12.3)
    (23, "link", "/bad", True),         # link is unchecked in every version
])
def test_names_bareos_cannot_encode(director_for, fdsim_plugin, version, field, files, crashed):
    director = director_for(version)
    result = director.backup(fdsim_plugin(SURROGATE, files=files, field=field))
    assert result.status == "f"
    assert bool(result.crashed) == crashed
    if crashed:
        assert any("FD would crash (contract §7/§12.3)" in m for m in result.messages("M_FATAL"))
    else:
        assert any("UnicodeEncodeError" in m for m in result.messages("M_FATAL"))


FILE_TYPES = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    kind, mode = {"/sock": (bareosfd.FT_SPEC, 0o140644), "/fifo": (bareosfd.FT_SPEC, 0o10644),
                  "/chr": (bareosfd.FT_SPEC, 0o20644), "/deleted": (bareosfd.FT_DELETED, 0o100644),
                  "/noaccess": (bareosfd.FT_NOACCESS, 0o100644),
                  "/dirbegin": (bareosfd.FT_DIRBEGIN, 0o40755),
                  "/reg": (bareosfd.FT_REG, 0o100644)}[name]
    savepkt.type = kind
    savepkt.statp.st_mode = mode
    savepkt.no_read = name != "/reg"
""")


def test_file_types(director_for, fdsim_plugin):
    director = director_for(23)
    line = fdsim_plugin(FILE_TYPES, files="/sock,/fifo,/chr,/deleted,/noaccess,/dirbegin,/reg")
    result = director.backup(line)
    assert result.status == "W"  # the unknown type is an M_NOTSAVED error
    rows = {r["path"]: r for r in director.files(result.jobid)}
    assert sorted(rows) == ["/chr", "/deleted", "/fifo", "/reg"]
    assert rows["/deleted"]["deleted"] == 1 and rows["/deleted"]["fileindex"] == 0
    assert result.files == 4  # FT_DELETED counts as written
    assert "     Socket file skipped: /sock" in result.messages("M_SKIPPED")
    assert "     Unknown file type 7: /noaccess" in result.messages("M_NOTSAVED")
    assert result.calls.count("end_backup_file") == 7  # also for skipped entries
    assert result.calls.count("plugin_io(IO_OPEN)") == 1  # only /reg is read
    # FT_DELETED is never restorable; FIFOs and devices come back
    restore = director.restore(where=str(director.workdir) + "/r")
    assert restore.calls.count("create_file") == 3


def test_no_read_false_reads_data_whatever_the_type(director_for, fdsim_plugin):
    source = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.type = bareosfd.FT_DIREND
    savepkt.statp.st_mode = 0o40755
    savepkt.link = name + "/"
""")
    result = director_for(23).backup(fdsim_plugin(source, files="/dir"))
    assert "plugin_io(IO_READ)" in result.calls and result.bytes == 12


LINKS = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    if name == "/sym":
        savepkt.type = bareosfd.FT_LNK
        savepkt.link = "/target"
        savepkt.statp.st_mode = 0o120777
        savepkt.no_read = True
    else:
        savepkt.statp.st_nlink = 2
        savepkt.statp.st_ino = 42
        savepkt.statp.st_dev = 7
""")


@pytest.mark.parametrize("version, hardlinks, second_type", [
    (22, None, "FT_LNKSAVED"), (23, None, "FT_REG"), (23, True, "FT_LNKSAVED"),
    (22, False, "FT_REG")])
def test_hardlinks_follow_the_version_default(director_for, fdsim_plugin, version, hardlinks,
                                              second_type):
    director = director_for(version)
    options = {} if hardlinks is None else {"hardlinks": hardlinks}
    result = director.backup(fdsim_plugin(LINKS, files="/h1,/h2"), fileset_options=options)
    rows = director.files(result.jobid)
    assert [C.FT_NAMES[r["type"]] for r in rows] == ["FT_REG", second_type]
    if second_type == "FT_LNKSAVED":
        assert rows[1]["link"] == "/h1" and rows[1]["linkfi"] == rows[0]["fileindex"]
        assert result.calls.count("plugin_io(IO_OPEN)") == 1  # no data for the link
        assert result.calls.count("get_acl") == 2  # FT_LNKSAVED gets ACL and XATTR


def test_acl_never_for_symlinks(director_for, fdsim_plugin):
    result = director_for(23).backup(fdsim_plugin(LINKS, files="/sym"))
    assert "get_acl" not in result.calls and "get_xattr" in result.calls


def test_acl_and_xattr_off_in_the_fileset(director_for, fdsim_plugin):
    result = director_for(23).backup(fdsim_plugin(LINKS, files="/h1"),
                                     fileset_options={"acl": False, "xattr": False})
    assert "get_acl" not in result.calls and "get_xattr" not in result.calls


def test_xattr_more_and_acl_content(director_for, fdsim_plugin, tmp_path):
    source = virtual_plugin("""
def get_acl(self, acl):
    acl.content = bytearray(b"acl-of-" + acl.fname.encode())
    return bareosfd.bRC_OK

def get_xattr(self, xattr):
    self.round = getattr(self, "round", 0) + 1
    xattr.name = bytearray(b"user.n%d" % self.round)
    xattr.value = bytearray(b"v%d" % self.round)
    return bareosfd.bRC_More if self.round < 3 else bareosfd.bRC_OK

def set_acl(self, acl):
    bareosfd.JobMessage(bareosfd.M_INFO, "acl %r" % bytes(acl.content))
    return bareosfd.bRC_OK

def set_xattr(self, xattr):
    bareosfd.JobMessage(bareosfd.M_INFO, "xattr %r=%r" % (bytes(xattr.name), bytes(xattr.value)))
    return bareosfd.bRC_OK
""")
    director = director_for(23)
    backup = director.backup(fdsim_plugin(source, files="/x"))
    assert backup.calls.count("get_xattr") == 3
    restore = director.restore(where=str(tmp_path / "r"))
    # the ACL comes back with one trailing NUL; xattrs unchanged, the OK one included
    assert restore.plugin_messages("M_INFO") == ["acl b'acl-of-/x\\x00'", "xattr b'user.n1'=b'v1'",
                                          "xattr b'user.n2'=b'v2'", "xattr b'user.n3'=b'v3'"]


def test_fd_bytes_written_count_acl_xattr_and_offset_headers(director_for, fdsim_plugin):
    """"FD Bytes Written" is file data plus the ACL and XATTR streams plus the
    8-byte offset header of every sparse data record (§13)."""
    director = director_for(23)
    line = fdsim_plugin(virtual_plugin("pass"), files="/x", acl="acl", xattr="user.a=1")
    metadata = len(b"acl\0") + len(volume.encode_xattrs([(b"user.a", b"1")]))
    assert director.backup(line).bytes == 6 + metadata
    sparse = director.backup(line, fileset_options={"sparse": True})
    assert sparse.bytes == 6 + C.OFFSET_HEADER + metadata


def test_recorded_stat_is_what_c_sees(director_for, fdsim_plugin):
    """st_nlink is an int16 in C (40000 -> -25536) and the default st_size is -1 (§13)."""
    source = virtual_plugin("""
def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.statp = bareosfd.StatPacket()
    savepkt.statp.st_nlink = 40000
""")
    director = director_for(23)
    result = director.backup(fdsim_plugin(source))
    row = director.files(result.jobid)[0]
    assert (row["nlink"], row["size"]) == (-25536, -1)


READ_COUNT = virtual_plugin("""
def plugin_io(self, iop):
    if iop.func == bareosfd.IO_READ:
        bareosfd.JobMessage(bareosfd.M_INFO, "count=%d" % iop.count)
    return VirtualPlugin.plugin_io(self, iop)
""")


@pytest.mark.parametrize("version, sparse, count", [
    (22, False, 65536), (23, False, 262144), (23, True, 262136), (22, True, 65528)])
def test_io_read_count(director_for, fdsim_plugin, version, sparse, count):
    result = director_for(version).backup(fdsim_plugin(READ_COUNT),
                                          fileset_options={"sparse": sparse})
    assert set(result.plugin_messages("M_INFO")) == {"count=%d" % count}


BYTES_BUFFER = virtual_plugin("""
def plugin_io(self, iop):
    rc = VirtualPlugin.plugin_io(self, iop)
    if iop.func == bareosfd.IO_READ and iop.status:
        iop.buf = bytes(iop.buf)
    return rc
""")


@pytest.mark.parametrize("version, copied", [("23.0.0", False), ("23.0.1", True), (22, False)])
def test_bytes_buffer_on_io_read(director_for, fdsim_plugin, tmp_path, version, copied):
    director = director_for(version)
    director.backup(fdsim_plugin(BYTES_BUFFER, files="/data/file"))
    director.restore(where=str(tmp_path / "r"))
    with open(str(tmp_path / "r" / "data" / "file"), "rb") as f:
        restored = f.read()
    assert (restored == b"/data/file" * 3) == copied
    assert len(restored) == 30


def test_io_read_buffer_larger_than_count_is_a_read_error(director_for, fdsim_plugin):
    source = virtual_plugin("""
def plugin_io(self, iop):
    rc = VirtualPlugin.plugin_io(self, iop)
    if iop.func == bareosfd.IO_READ and iop.status:
        iop.buf = bytearray(iop.count + 1)
        iop.status = 1
    return rc
""")
    result = director_for(23).backup(fdsim_plugin(source))
    assert result.status == "W"
    assert result.messages("M_ERROR")[0].startswith("Read error on file /virtual/file1")


def test_do_io_in_core_reads_the_plugins_fd(director_for, fdsim_plugin, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(700000))
    source = virtual_plugin("""
def plugin_io(self, iop):
    if iop.func == bareosfd.IO_OPEN:
        if iop.flags & os.O_WRONLY:
            os.makedirs(os.path.dirname(iop.fname))
            self.fd = os.open(iop.fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        else:
            self.fd = os.open(self.options["path"], os.O_RDONLY)
        iop.filedes = self.fd
        iop.status = bareosfd.iostat_do_in_core
    elif iop.func == bareosfd.IO_CLOSE:
        os.close(self.fd)
    else:
        raise AssertionError("not for the plugin: %d" % iop.func)
    return bareosfd.bRC_OK

def fill(self, savepkt, name):
    VirtualPlugin.fill(self, savepkt, name)
    savepkt.statp.st_size = os.stat(self.options["path"]).st_size
""")
    director = director_for(22)
    result = director.backup(fdsim_plugin(source, path=str(data)))
    assert result.status == "T" and result.bytes == 700000
    assert [c for c in result.calls if c.startswith("plugin_io")] == [
        "plugin_io(IO_OPEN)", "plugin_io(IO_CLOSE)"]
    director.restore(where=str(tmp_path / "r"))
    assert (tmp_path / "r" / "virtual" / "file1").read_bytes() == data.read_bytes()


def test_do_io_in_core_without_filedes_cannot_open(director_for, fdsim_plugin):
    source = virtual_plugin("""
def plugin_io(self, iop):
    if iop.func == bareosfd.IO_OPEN:
        iop.status = bareosfd.iostat_do_in_core
    return bareosfd.bRC_OK
""")
    result = director_for(23).backup(fdsim_plugin(source))
    assert result.status == "W"
    assert result.messages("M_NOTSAVED")[0].startswith('     Cannot open "/virtual/file1"')


def test_get_value_during_a_backup(director_for, fdsim_plugin):
    source = """
    import bareosfd
    from virtual import VirtualPlugin, entry_points

    def report(when):
        g = bareosfd.GetValue
        bareosfd.JobMessage(bareosfd.M_INFO, "%s type=%s level=%s job=%s client=%s where=%r "
                            "regexwhere=%r accurate=%s since=%s seen=%r" % (
            when, chr(g(bareosfd.bVarType)), chr(g(bareosfd.bVarLevel)),
            g(bareosfd.bVarJobName), g(bareosfd.bVarClient), g(bareosfd.bVarWhere),
            g(bareosfd.bVarRegexWhere), g(bareosfd.bVarAccurate), g(bareosfd.bVarSinceTime),
            g(bareosfd.bVarFileSeen)))

    class P(VirtualPlugin):
        def __init__(self, plugindef):
            VirtualPlugin.__init__(self, plugindef)
            report("load")
            bareosfd.RegisterEvents([bareosfd.bEventStartBackupJob])

        def handle_plugin_event(self, event):
            report("start")
            return bareosfd.bRC_OK

    entry_points(globals(), P)
    """
    director = director_for(23, client="client-a")
    result = director.backup(fdsim_plugin(source), job_name="nightly")
    load, start = result.plugin_messages("M_INFO")
    assert load.startswith("load type=I level=F job=nightly.")
    assert start.startswith("start type=B level=F")
    assert "client=client-a where=None regexwhere=None accurate=0 since=0 seen=None" in start
    assert result.job.startswith("nightly.") and result.job.endswith("_%02d" % result.jobid)


def test_restore_objects_reach_restore_object_data(director_for, fdsim_plugin, tmp_path):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    if getattr(self, "sent", False):
        return VirtualPlugin.start_backup_file(self, savepkt)
    self.sent = True
    self.pending = list(self.names())
    savepkt.type = bareosfd.FT_RESTORE_FIRST
    savepkt.object_name = "config"
    savepkt.object = bytearray(b"settings=1")
    savepkt.object_len = 10
    savepkt.object_index = 4
    savepkt.statp = bareosfd.StatPacket()
    savepkt.fname = "unused"
    return bareosfd.bRC_OK

def end_backup_file(self):
    return bareosfd.bRC_More if self.pending or self.pending is None else bareosfd.bRC_OK

def restore_object_data(self, rop):
    bareosfd.JobMessage(bareosfd.M_INFO, "object %s %r %d %s" % (
        rop.object_name, bytes(rop.object), rop.object_index, rop.plugin_name.split(":")[0]))
    return bareosfd.bRC_OK
""")
    director = director_for(23)
    line = fdsim_plugin(source)
    backup = director.backup(line)
    assert backup.status == "T" and backup.files == 2
    # the object's plugin name loads the module (§2.5 step 3)
    restore = director.restore(where=str(tmp_path / "r"))
    assert restore.calls[:3] == ["load_bareos_plugin('')", "parse_plugin_definition('')",
                                 "restore_object_data"]
    assert "object config b'settings=1' 4 python3" in restore.plugin_messages("M_INFO")
