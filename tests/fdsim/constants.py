"""The numbers of the python3-fd plugin API, exactly as contract §3.2-§3.4 lists them.

These tables feed both the ``bareosfd`` stand-in (as module attributes and
bytes-keyed dicts) and the simulated core.
"""
from collections import OrderedDict


def _table(text):
    """'name value, name value, ...' -> OrderedDict(name=int)."""
    table = OrderedDict()
    for item in text.split(","):
        name, value = item.split()
        table[name] = int(value)
    return table


BRC = _table("bRC_OK 0, bRC_Stop 1, bRC_Error 2, bRC_More 3, bRC_Term 4, bRC_Seen 5, "
             "bRC_Core 6, bRC_Skip 7, bRC_Cancel 8")
#: What ``PyLong_AsLong`` yields for a non-int return value (not exported, §2).
PYTHON_UNDEFINED_RETURN_VALUE = -1

M = _table("M_ABORT 1, M_DEBUG 2, M_FATAL 3, M_ERROR 4, M_WARNING 5, M_INFO 6, M_SAVED 7, "
           "M_NOTSAVED 8, M_SKIPPED 9, M_MOUNT 10, M_ERROR_TERM 11, M_TERM 12, "
           "M_RESTORED 13, M_SECURITY 14, M_ALERT 15, M_VOLMGMT 16")
M_NAMES = {value: name for name, value in M.items()}

EVENTS = _table(
    "bEventJobStart 1, bEventJobEnd 2, bEventStartBackupJob 3, bEventEndBackupJob 4, "
    "bEventStartRestoreJob 5, bEventEndRestoreJob 6, bEventStartVerifyJob 7, "
    "bEventEndVerifyJob 8, bEventBackupCommand 9, bEventRestoreCommand 10, "
    "bEventEstimateCommand 11, bEventLevel 12, bEventSince 13, bEventCancelCommand 14, "
    "bEventRestoreObject 15, bEventEndFileSet 16, bEventPluginCommand 17, "
    "bEventOptionPlugin 18, bEventHandleBackupFile 19, bEventNewPluginOptions 20, "
    "bEventVssInitializeForBackup 21, bEventVssInitializeForRestore 22, "
    "bEventVssSetBackupState 23, bEventVssPrepareForBackup 24, "
    "bEventVssBackupAddComponents 25, bEventVssPrepareSnapshot 26, "
    "bEventVssCreateSnapshots 27, bEventVssRestoreLoadComponentMetadata 28, "
    "bEventVssRestoreSetComponentsSelected 29, bEventVssCloseRestore 30, "
    "bEventVssBackupComplete 31")
EVENT_NAMES = {value: name for name, value in EVENTS.items()}

FT = _table(
    "FT_LNKSAVED 1, FT_REGE 2, FT_REG 3, FT_LNK 4, FT_DIREND 5, FT_SPEC 6, FT_NOACCESS 7, "
    "FT_NOFOLLOW 8, FT_NOSTAT 9, FT_NOCHG 10, FT_DIRNOCHG 11, FT_ISARCH 12, "
    "FT_NORECURSE 13, FT_NOFSCHG 14, FT_NOOPEN 15, FT_RAW 16, FT_FIFO 17, FT_DIRBEGIN 18, "
    "FT_INVALIDFS 19, FT_INVALIDDT 20, FT_REPARSE 21, FT_PLUGIN 22, FT_DELETED 23, "
    "FT_BASE 24, FT_RESTORE_FIRST 25, FT_JUNCTION 26, FT_PLUGIN_CONFIG 27, "
    "FT_PLUGIN_CONFIG_FILLED 28")
FT_NAMES = {value: name for name, value in FT.items()}
#: Restore-object types (§2.1).
FT_OBJECTS = (FT["FT_RESTORE_FIRST"], FT["FT_PLUGIN_CONFIG"], FT["FT_PLUGIN_CONFIG_FILLED"])

CF = _table("CF_SKIP 1, CF_ERROR 2, CF_EXTRACT 3, CF_CREATED 4, CF_CORE 5")
CF_NAMES = {value: name for name, value in CF.items()}

IO = _table("IO_OPEN 1, IO_READ 2, IO_WRITE 3, IO_CLOSE 4, IO_SEEK 5")
IO_NAMES = {value: name for name, value in IO.items()}
IOSTAT = _table("iostat_error -1, iostat_do_in_plugin 0, iostat_do_in_core 1")

LEVELS = OrderedDict([
    ("L_FULL", "F"), ("L_INCREMENTAL", "I"), ("L_DIFFERENTIAL", "D"), ("L_SINCE", "S"),
    ("L_VERIFY_CATALOG", "C"), ("L_VERIFY_INIT", "V"), ("L_VERIFY_VOLUME_TO_CATALOG", "O"),
    ("L_VERIFY_DISK_TO_CATALOG", "d"), ("L_VERIFY_DATA", "A"), ("L_BASE", "B"),
    ("L_NONE", " "), ("L_VIRTUAL_FULL", "f")])

VARS = _table(
    "bVarJobId 1, bVarFDName 2, bVarLevel 3, bVarType 4, bVarClient 5, bVarJobName 6, "
    "bVarJobStatus 7, bVarSinceTime 8, bVarAccurate 9, bVarFileSeen 10, bVarVssClient 11, "
    "bVarWorkingDir 12, bVarWhere 13, bVarRegexWhere 14, bVarExePath 15, bVarVersion 16, "
    "bVarDistName 17, bVarPrevJobName 18, bVarPrefixLinks 19, bVarCheckChanges 20, "
    "bVarUsedConfig 21, bVarPluginPath 22, bVarAccurateOptions 23")

ACCURATE_OPTIONS = _table(
    "bAccurateOptionInode 1, bAccurateOptionPermissions 2, bAccurateOptionNlink 4, "
    "bAccurateOptionUid 8, bAccurateOptionGid 16, bAccurateOptionSize 32, "
    "bAccurateOptionAtime 64, bAccurateOptionMtime 128, bAccurateOptionCtime 256, "
    "bAccurateOptionSizeDecrease 512, bAccurateOptionAlways 1024, bAccurateOptionMD5 2048, "
    "bAccurateOptionSha1 4096")
#: FileSet ``accurate=`` letters and the option each stands for.  The letters are
#: Bareos's FileSet syntax (the contract names the options, §3.3 and §5).
ACCURATE_LETTERS = OrderedDict([
    ("i", "Inode"), ("p", "Permissions"), ("n", "Nlink"), ("u", "Uid"), ("g", "Gid"),
    ("s", "Size"), ("a", "Atime"), ("m", "Mtime"), ("c", "Ctime"), ("d", "SizeDecrease"),
    ("A", "Always"), ("5", "MD5"), ("1", "Sha1")])
#: Default FileSet accurate options: mtime, ctime, size (§5).
ACCURATE_DEFAULT = "mcs"

#: FileSet option bits (§3.4): bit n lives in byte n>>3 under mask 1<<(n&7).
FO = _table(
    "FO_PORTABLE_DATA 0, FO_MD5 1, FO_COMPRESS 2, FO_NO_RECURSION 3, FO_MULTIFS 4, "
    "FO_SPARSE 5, FO_IF_NEWER 6, FO_NOREPLACE 7, FO_READFIFO 8, FO_SHA1 9, FO_PORTABLE 10, "
    "FO_MTIMEONLY 11, FO_KEEPATIME 12, FO_EXCLUDE 13, FO_ACL 14, FO_NO_HARDLINK 15, "
    "FO_IGNORECASE 16, FO_HFSPLUS 17, FO_WIN32DECOMP 18, FO_SHA256 19, FO_SHA512 20, "
    "FO_ENCRYPT 21, FO_NOATIME 22, FO_ENHANCEDWILD 23, FO_CHKCHANGES 24, FO_STRIPPATH 25, "
    "FO_HONOR_NODUMP 26, FO_XATTR 27, FO_DELTA 28, FO_PLUGIN 29, FO_OFFSETS 30, "
    "FO_NO_AUTOEXCL 31, FO_FORCE_ENCRYPT 32, FO_XXH128 33")
#: The flags bytearray handed to start_backup_file is 5 bytes long (§2.1, §3.4).
FLAGS_BYTES = 5
#: Bits the core re-reads from the flags the plugin returns (§3.4).
FO_FROM_PLUGIN = ("FO_DELTA", "FO_OFFSETS", "FO_SPARSE", "FO_PORTABLE_DATA")


def bit_is_set(flags, name):
    bit = FO[name]
    return bool(flags[bit >> 3] & (1 << (bit & 7)))


def set_bit(flags, name, on=True):
    bit = FO[name]
    if on:
        flags[bit >> 3] |= 1 << (bit & 7)
    else:
        flags[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


#: Restore ``replace`` policies and the ``ord`` the RestorePacket carries (§3.5).
REPLACE = OrderedDict([("always", "a"), ("ifnewer", "w"), ("ifolder", "o"), ("never", "n")])

#: Events ``newPlugin`` registers for every python3-fd instance (§2.2).
C_REGISTERED_EVENTS = frozenset(EVENTS[name] for name in (
    "bEventLevel", "bEventSince", "bEventNewPluginOptions", "bEventPluginCommand",
    "bEventJobStart", "bEventRestoreCommand", "bEventEstimateCommand",
    "bEventBackupCommand", "bEventRestoreObject"))
#: Events whose value python3-fd parses as a plugin definition instead of calling
#: ``handle_plugin_event`` (§2 table).
COMMAND_EVENTS = frozenset(EVENTS[name] for name in (
    "bEventPluginCommand", "bEventNewPluginOptions", "bEventBackupCommand",
    "bEventRestoreCommand", "bEventEstimateCommand"))

#: Classic IO_READ loses this many bytes of ``count`` to the offset header when
#: FO_SPARSE or FO_OFFSETS is set (§4, §13: 262136 with 23+).
OFFSET_HEADER = 8

#: Bareos stream numbers of the records the simulated volume holds.  The contract
#: does not list stream numbers; these are Bareos's own for the attribute, file
#: data, sparse data, plugin name and restore object streams.  ACL/XATTR plugin
#: streams get simulator-own numbers.
STREAM_UNIX_ATTRIBUTES = 1
STREAM_FILE_DATA = 2
STREAM_SPARSE_DATA = 6
STREAM_PLUGIN_NAME = 26
STREAM_RESTORE_OBJECT = 27
STREAM_ACL_PLUGIN = 1000
STREAM_XATTR_PLUGIN = 1001
