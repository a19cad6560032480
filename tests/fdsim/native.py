"""The core's C structs (save_pkt, io_pkt, restore_pkt, struct stat) and the
conversions python3-fd does between them and the Python packets (contract §3.5)."""
from . import structmember as sm

MASK64 = 2 ** 64 - 1

#: struct stat fields in the order the catalog and the volume keep them.
STAT_FIELDS = ("dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size",
               "atime", "mtime", "ctime", "blksize", "blocks")


def signed64(value):
    return sm.signed(value, 64)


class Stat(object):
    """A native ``struct stat`` as the core holds it.  Values are kept the way the
    catalog records them: as signed 64-bit integers (so a StatPacket st_size of
    2**64-1 is size -1 and an st_nlink of 40000 is -25536, contract §3.5, §13)."""

    __slots__ = STAT_FIELDS

    def __init__(self, **fields):
        for name in STAT_FIELDS:
            setattr(self, name, fields.get(name, 0))

    def as_dict(self):
        return {name: getattr(self, name) for name in STAT_FIELDS}

    def __repr__(self):
        return "Stat(%s)" % ", ".join("%s=%d" % (n, getattr(self, n)) for n in STAT_FIELDS)


def stat_from_packet(packet, version):
    """PyStatPacketToNative: member C values into struct stat fields."""
    c = {name: sm.c_get(packet, "st_" + name) for name in STAT_FIELDS}
    times = {name: (c[name] if version.stat_times_signed else c[name] & 0xFFFFFFFF)
             for name in ("atime", "mtime", "ctime")}
    return Stat(dev=c["dev"], ino=signed64(c["ino"]), mode=c["mode"],
                # st_nlink is an int16 in the C packet (§3.5)
                nlink=sm.signed(c["nlink"], 16),
                uid=c["uid"], gid=c["gid"], rdev=c["rdev"], size=signed64(c["size"]),
                atime=times["atime"], mtime=times["mtime"], ctime=times["ctime"],
                blksize=c["blksize"], blocks=signed64(c["blocks"]))


def stat_to_packet(stat, packet_type):
    """NativeToPyStatPacket: a new StatPacket holding ``stat`` (C truncation rules)."""
    packet = packet_type()
    widths = {"dev": 32, "ino": 64, "mode": 16, "nlink": 16, "uid": 32, "gid": 32,
              "rdev": 32, "size": 64, "blksize": 32, "blocks": 64}
    time_member = type(packet).st_atime
    for name in STAT_FIELDS:
        value = getattr(stat, name)
        if name in ("atime", "mtime", "ctime"):
            value = value if isinstance(time_member, sm.Long) else value & 0xFFFFFFFF
        else:
            value &= (1 << widths[name]) - 1
        sm.c_set(packet, "st_" + name, value)
    return packet


class SavePkt(object):
    """``struct save_pkt`` as the core builds it for start_backup_file."""

    def __init__(self, cmd, flags):
        self.cmd = cmd
        self.flags = bytearray(flags)
        self.fname = None
        self.link = None
        self.statp = None
        self.type = 0
        self.no_read = False
        self.portable = True
        self.accurate_found = False
        self.save_time = 0
        self.delta_seq = 0
        self.object_name = None
        self.object = None
        self.object_len = 0
        self.object_index = 0


class IoPkt(object):
    """``struct io_pkt`` for one pluginIO call."""

    def __init__(self, func, fname="", count=0, flags=0, mode=0, whence=0, offset=0,
                 buf=None):
        self.func = func
        self.fname = fname
        self.count = count
        self.flags = flags
        self.mode = mode
        self.whence = whence
        self.offset = offset
        self.buf = buf if buf is not None else bytearray(count)
        self.status = 0
        self.io_errno = 0
        self.lerror = 0
        self.win32 = False
        self.filedes = -1


class RestorePkt(object):
    """``struct restore_pkt`` for create_file / set_file_attributes."""

    def __init__(self, **fields):
        self.stream = 0
        self.data_stream = 0
        self.type = 0
        self.file_index = 0
        self.linkFI = 0
        self.uid = 0
        self.statp = Stat()
        self.attrEX = None
        self.ofname = None
        self.olname = None
        self.where = None
        self.replace = 0
        self.create_status = 0
        self.filedes = -1
        self.original_file_name = None
        self.original_link_name = None
        for name, value in fields.items():
            setattr(self, name, value)


class RestoreObj(object):
    """``struct restore_object_pkt``."""

    def __init__(self, **fields):
        self.object_name = ""
        self.object = b""
        self.plugin_name = ""
        self.object_type = 0
        self.object_len = 0
        self.object_full_len = 0
        self.object_index = 0
        self.object_compression = 0
        self.stream = 0
        self.jobid = 0
        for name, value in fields.items():
            setattr(self, name, value)
