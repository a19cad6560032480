"""The bareosfd stand-in itself: constants and dicts (§3.3), the seven packet
types (§3.5) and what changes between Bareos versions (§1, §11.1-2)."""
import sys
import time
import warnings

import pytest

from fdsim import constants as C
from fdsim import standin
from fdsim import structmember as sm
from fdsim.versions import BareosVersion, BareosVersionError

VERSIONS = [20, 21, 22, "22.1", 23, 24, 25, 26]


def module(version=23):
    return standin.build_module(BareosVersion(version), context=object())


def test_constants_are_the_contract_numbers():
    m = module()
    assert (m.bRC_OK, m.bRC_Stop, m.bRC_Error, m.bRC_More, m.bRC_Term, m.bRC_Seen,
            m.bRC_Core, m.bRC_Skip, m.bRC_Cancel) == tuple(range(9))
    assert (m.M_FATAL, m.M_ERROR, m.M_WARNING, m.M_INFO, m.M_VOLMGMT) == (3, 4, 5, 6, 16)
    assert (m.bEventJobStart, m.bEventJobEnd, m.bEventEndFileSet, m.bEventPluginCommand,
            m.bEventNewPluginOptions, m.bEventVssBackupComplete) == (1, 2, 16, 17, 20, 31)
    assert (m.FT_LNKSAVED, m.FT_REG, m.FT_LNK, m.FT_DIREND, m.FT_SPEC, m.FT_NOCHG,
            m.FT_FIFO, m.FT_DELETED, m.FT_RESTORE_FIRST, m.FT_PLUGIN_CONFIG_FILLED) == (
        1, 3, 4, 5, 6, 10, 17, 23, 25, 28)
    assert (m.CF_SKIP, m.CF_ERROR, m.CF_EXTRACT, m.CF_CREATED, m.CF_CORE) == (1, 2, 3, 4, 5)
    assert (m.IO_OPEN, m.IO_READ, m.IO_WRITE, m.IO_CLOSE, m.IO_SEEK) == (1, 2, 3, 4, 5)
    assert (m.bVarJobId, m.bVarLevel, m.bVarSinceTime, m.bVarFileSeen, m.bVarRegexWhere,
            m.bVarPrefixLinks) == (1, 3, 8, 10, 14, 19)


def test_dicts_have_bytes_keys_and_levels_are_str_attributes():
    m = module()
    assert m.bRCs[b"bRC_Stop"] == 1
    assert "bRC_Stop" not in m.bRCs  # the openvz7 plugin's KeyError (§8.1)
    assert m.bEventType[b"bEventJobStart"] == 1
    assert m.bJobMessageType[b"M_FATAL"] == 3
    assert m.bFileType[b"FT_REG"] == 3
    assert m.bCFs[b"CF_CORE"] == 5
    assert m.bIOPS[b"IO_SEEK"] == 5
    assert m.bVariable[b"bVarWorkingDir"] == 12
    assert m.L_FULL == "F" and m.L_INCREMENTAL == "I" and m.L_NONE == " "
    assert m.bLevels[b"L_DIFFERENTIAL"] == b"D"
    assert all(isinstance(k, bytes) for d in (m.bRCs, m.bEventType, m.bVariable, m.bLevels)
               for k in d)


@pytest.mark.parametrize("version", VERSIONS)
def test_version_switches(version):
    v = BareosVersion(version)
    m = module(version)
    assert hasattr(m, "iostat_do_in_core") == (v.major >= 22)
    assert hasattr(m, "bIOPstatus") == (v.major >= 22)
    assert hasattr(m, "bVarCheckChanges") == (v.parts >= (22, 1, 0))
    assert hasattr(m, "bVarUsedConfig") == (v.major >= 23)
    assert hasattr(m, "bVarAccurateOptions") == (v.major >= 26)
    assert hasattr(m, "bAccurateOptionMtime") == (v.major >= 26)
    assert not hasattr(m, "bVarPluginPath")  # C only, never exported (§3.2)
    assert hasattr(m.IoPacket(), "filedes") == (v.major >= 22)
    assert hasattr(m.RestorePacket(), "filedes") == (v.major >= 22)
    assert hasattr(m.RestorePacket(), "original_file_name") == (v.major >= 26)
    time_kind = m.StatPacket.st_mtime
    assert isinstance(time_kind, sm.Long if v.major >= 25 else sm.UInt)
    if v.major >= 22:
        assert (m.iostat_error, m.iostat_do_in_plugin, m.iostat_do_in_core) == (-1, 0, 1)
    if v.parts >= (22, 1, 0):
        assert m.bVarCheckChanges == 20
    if v.major >= 23:
        assert m.bVarUsedConfig == 21
    if v.major >= 26:
        assert m.bVarAccurateOptions == 23 and m.bAccurateOptionSha1 == 4096


def test_unknown_versions_are_refused():
    for bad in (19, 27, "x", 23.0, "23.a"):
        with pytest.raises(BareosVersionError):
            BareosVersion(bad)


def test_packet_type_names_and_no_new_attributes():
    m = module()
    names = {"StatPacket": "stat_pkt", "SavePacket": "save_pkt", "RestorePacket": "restore_pkt",
             "IoPacket": "io_pkt", "AclPacket": "acl_pkt", "XattrPacket": "xattr_pkt",
             "RestoreObject": "restore_object"}
    for exported, type_name in names.items():
        cls = getattr(m, exported)
        assert cls.__name__ == type_name
        obj = cls()
        assert not hasattr(obj, "__dict__")
        with pytest.raises(AttributeError):
            obj.no_such_member = 1
    with pytest.raises(AttributeError):
        m.StatPacket().atime = 1  # pre-20 name (§3.5)


def test_member_kinds_are_those_of_the_contract():
    m = module(23)
    kinds = {name: type(getattr(m.SavePacket, name)).kind for name in (
        "fname", "link", "statp", "type", "flags", "no_read", "portable", "accurate_found",
        "cmd", "save_time", "delta_seq", "object_name", "object", "object_len",
        "object_index")}
    assert kinds == {"fname": "T_OBJECT", "link": "T_OBJECT", "statp": "T_OBJECT",
                     "type": "T_INT", "flags": "T_OBJECT", "no_read": "T_BOOL",
                     "portable": "T_BOOL", "accurate_found": "T_BOOL", "cmd": "T_STRING",
                     "save_time": "T_UINT", "delta_seq": "T_UINT", "object_name": "T_OBJECT",
                     "object": "T_OBJECT", "object_len": "T_INT", "object_index": "T_INT"}
    stat_kinds = {name: type(getattr(m.StatPacket, name)).kind
                  for name in ("st_" + f for f in standin.STAT_FIELDS)}
    assert stat_kinds == {
        "st_dev": "T_UINT", "st_ino": "T_ULONGLONG", "st_mode": "T_USHORT",
        "st_nlink": "T_USHORT", "st_uid": "T_UINT", "st_gid": "T_UINT", "st_rdev": "T_UINT",
        "st_size": "T_ULONGLONG", "st_atime": "T_UINT", "st_mtime": "T_UINT",
        "st_ctime": "T_UINT", "st_blksize": "T_UINT", "st_blocks": "T_ULONGLONG"}
    io = {n: type(getattr(m.IoPacket, n)).kind for n in ("func", "fname", "offset", "win32",
                                                          "buf", "status", "filedes")}
    assert io == {"func": "T_USHORT", "fname": "T_STRING", "offset": "T_LONGLONG",
                  "win32": "T_BOOL", "buf": "T_OBJECT", "status": "T_INT", "filedes": "T_INT"}
    restore = {n: type(getattr(m.RestorePacket, n)).kind for n in (
        "attrEX", "ofname", "olname", "where", "regexwhere", "replace", "create_status", "uid")}
    assert restore == {"attrEX": "T_STRING", "ofname": "T_STRING", "olname": "T_STRING",
                       "where": "T_STRING", "regexwhere": "T_STRING", "replace": "T_INT",
                       "create_status": "T_INT", "uid": "T_UINT"}


def test_stat_packet_defaults():
    before = int(time.time())
    statp = module().StatPacket()
    after = int(time.time())
    assert statp.st_size == 2 ** 64 - 1
    assert statp.st_mode == 0o100700
    assert (statp.st_blksize, statp.st_blocks, statp.st_nlink, statp.st_ino) == (4096, 1, 0, 0)
    assert before <= statp.st_mtime <= after and statp.st_atime == statp.st_ctime == statp.st_mtime
    statp.st_atime, statp.st_mtime, statp.st_ctime = 999, 1000, 1001
    assert repr(statp) == ("StatPacket(dev=0, ino=0, mode=0700, nlink=0, uid=0, gid=0, rdev=0, "
                           "size=-1, atime=999, mtime=1000, ctime=1001, blksize=4096, blocks=1)")


def test_stat_packet_constructor_takes_names_without_st_prefix():
    m = module()
    statp = m.StatPacket(mode=0o40755, size=-1, nlink=2, mtime=7, ino=2 ** 64 - 1)
    assert (statp.st_mode, statp.st_size, statp.st_nlink, statp.st_mtime, statp.st_ino) == (
        0o40755, 2 ** 64 - 1, 2, 7, 2 ** 64 - 1)
    with pytest.raises(TypeError):
        m.StatPacket(st_mode=0o40755)
    with pytest.raises(TypeError):
        m.StatPacket(mtime=1.5)  # integer format units reject floats in all versions
    with pytest.raises(TypeError):
        m.StatPacket(ino=1.0)
    with pytest.raises(OverflowError):
        m.StatPacket(size=2 ** 64)  # "L": range-checked
    assert m.StatPacket(dev=-1).st_dev == 2 ** 32 - 1  # "I": masked, no check
    assert m.StatPacket(1, 2, 0o644).st_ino == 2  # positional in format order
    with pytest.raises(OverflowError):
        module(25).StatPacket(mtime=2 ** 63)  # 25+: "l"


def test_stat_times_follow_the_version():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = module(24).StatPacket()
        old.st_mtime = -1
        new = module(25).StatPacket()
        new.st_mtime = -1
    assert old.st_mtime == 2 ** 32 - 1  # T_UINT view of a time_t
    assert new.st_mtime == -1           # T_LONG


def test_float_time_assignment_like_the_openvz7_plugin():
    """``statpacket.st_atime = osstat.st_atime`` (§6, §8.2): warning and truncation on
    3.6-3.9, TypeError on 3.10+."""
    statp = module(23).StatPacket()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            statp.st_atime = 1700000000.9
            raised = None
        except TypeError as exc:
            raised = exc
    if sys.version_info >= (3, 10):
        assert raised is not None
    else:
        assert raised is None and statp.st_atime == 1700000000
        assert "Writing negative value into unsigned field" in [str(w.message) for w in caught]


def test_st_nlink_is_unsigned_short_in_python():
    statp = module().StatPacket()
    statp.st_nlink = 40000
    assert statp.st_nlink == 40000  # the C side records -25536 (test_fdsim_backup)


def test_save_packet_members():
    pkt = module().SavePacket(fname="testfilename")
    assert pkt.fname == "testfilename"
    with pytest.raises(TypeError, match="attribute value type must be bool"):
        pkt.no_read = 1
    with pytest.raises(TypeError, match="readonly attribute"):
        pkt.cmd = "python3:x"
    pkt.link = None
    assert pkt.link is None
    del pkt.link
    assert pkt.link is None and sm.c_get(pkt, "link") is sm.NULL


def test_read_only_strings_decode_strictly():
    io = module().IoPacket()
    assert io.fname is None
    sm.c_set(io, "fname", b"/data/K\xdcBLER.csv")
    with pytest.raises(UnicodeDecodeError):
        io.fname


def test_module_functions_refuse_a_thread_without_job():
    m = module()
    for call in (lambda: m.GetValue(m.bVarJobId), lambda: m.JobMessage(m.M_INFO, "x"),
                 lambda: m.DebugMessage(100, "x"), lambda: m.RegisterEvents([1])):
        with pytest.raises(RuntimeError, match="plugin_ctx is unset"):
            call()


def test_flag_bits():
    flags = bytearray(C.FLAGS_BYTES)
    C.set_bit(flags, "FO_XATTR")
    C.set_bit(flags, "FO_ACL")
    assert flags == bytearray([0, 0x40, 0, 0x08, 0])  # bit 14 -> byte 1, bit 27 -> byte 3
    assert C.bit_is_set(flags, "FO_ACL") and not C.bit_is_set(flags, "FO_SPARSE")
