"""What a Bareos StatPacket cannot hold, carried beside it; ACLs as one stream.

Bareos's StatPacket has whole seconds (and, up to Bareos 24, unsigned 32-bit
times), a 16-bit link count and no inode flags. The plugin sends, for every
entry, one extra pseudo-xattr :data:`ATTRS_NAME` in its XATTR stream with the
exact values; a restore takes it instead of the StatPacket and never sets it on
a file (no real xattr can have that name: real ones start with ``user.``,
``trusted.``, ``security.`` or ``system.``).

Its value is ASCII: ``1 atime_ns mtime_ns ctime_ns uid gid mode rdev flags
nlink`` (decimal integers; ``flags`` are the inode flags of ``chattr``, -1 when
they could not be read).

POSIX ACLs travel in the ACL stream as their xattr values
(``system.posix_acl_access`` / ``_default``), each as a one-byte kind (``a`` or
``d``), a 4-byte big-endian length and the value.
"""
import struct

ATTRS_NAME = "vz7native.attrs"
ATTRS_VERSION = 1
ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
ACL_NAMES = (ACL_ACCESS, ACL_DEFAULT)
_ACL_KIND = {ACL_ACCESS: b"a", ACL_DEFAULT: b"d"}
_ACL_NAME = {b"a": ACL_ACCESS, b"d": ACL_DEFAULT}


class AttrsError(ValueError):
    """A stored attribute record that cannot be read."""


class Attrs(object):
    """The exact attributes of one entry (see the module docstring)."""

    __slots__ = ("atime_ns", "mtime_ns", "ctime_ns", "uid", "gid", "mode", "rdev", "flags",
                 "nlink")

    def __init__(self, atime_ns, mtime_ns, ctime_ns, uid, gid, mode, rdev, flags, nlink):
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.rdev = rdev
        self.flags = flags
        self.nlink = nlink

    @classmethod
    def of_stat(cls, st, flags=-1):
        return cls(st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_gid,
                   st.st_mode, st.st_rdev, flags, st.st_nlink)

    def encode(self):
        return ("%d %d %d %d %d %d %d %d %d %d" % (
            ATTRS_VERSION, self.atime_ns, self.mtime_ns, self.ctime_ns, self.uid, self.gid,
            self.mode, self.rdev, self.flags, self.nlink)).encode("ascii")

    @classmethod
    def decode(cls, value):
        try:
            fields = [int(f) for f in bytes(value).decode("ascii").split()]
        except (UnicodeDecodeError, ValueError):
            raise AttrsError("not an attribute record: %r" % (bytes(value)[:80],))
        if not fields or fields[0] != ATTRS_VERSION or len(fields) != 10:
            raise AttrsError("attribute record of an unknown version: %r"
                             % (bytes(value)[:80],))
        return cls(*fields[1:])

    def __eq__(self, other):
        return isinstance(other, Attrs) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self):
        return "Attrs(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)


def encode_acls(values):
    """``{xattr name: value}`` of POSIX ACLs as the ACL stream's content (bytes)."""
    out = bytearray()
    for name in ACL_NAMES:
        value = values.get(name)
        if value is not None:
            out += _ACL_KIND[name] + struct.pack(">I", len(value)) + value
    return bytes(out)


def decode_acls(content):
    """The ACL stream's content (the FD appends one NUL on restore) as
    ``{xattr name: value}``."""
    data = bytes(content)
    if data.endswith(b"\0"):
        # the stored content plus exactly one NUL (contract §3.5)
        data = data[:-1]
    values = {}
    pos = 0
    while pos < len(data):
        kind, header = data[pos:pos + 1], data[pos + 1:pos + 5]
        if kind not in _ACL_NAME or len(header) != 4:
            raise AttrsError("not an ACL stream of this plugin")
        size = struct.unpack(">I", header)[0]
        value = data[pos + 5:pos + 5 + size]
        if len(value) != size:
            raise AttrsError("truncated ACL stream")
        values[_ACL_NAME[kind]] = value
        pos += 5 + size
    return values

