"""The simulated Storage Daemon's volumes: one append-only record file per job.

A record is a 16-byte header (magic, stream, FileIndex, length) plus payload.
For every file a plugin saves, the FD writes the stream Bareos writes: a plugin
name start record carrying the ``Plugin=`` string, the attribute record, data
records (``STREAM_SPARSE_DATA`` ones start with an 8-byte offset), the plugin
ACL/XATTR streams and a plugin name end record (contract §2.5 step 5).  Restore
objects are records of their own.
"""
import json
import os
import struct

from . import constants as C

MAGIC = b"FDSV"
_HEADER = struct.Struct("<4sIiI")
_OFFSET = struct.Struct(">Q")
_LENGTH = struct.Struct("<I")


class VolumeError(Exception):
    """A volume file is damaged or not a simulator volume."""


class Record(object):
    __slots__ = ("stream", "file_index", "payload", "offset")

    def __init__(self, stream, file_index, payload, offset=None):
        self.stream = stream
        self.file_index = file_index
        self.payload = payload
        self.offset = offset

    # --- payload codecs ------------------------------------------------------------

    @property
    def plugin_name_start(self):
        """For a plugin name record: the command if it starts a file, else None."""
        return self.payload[2:].decode("utf-8") if self.payload[:2] == b"1 " else None

    def attributes(self):
        return json.loads(self.payload.decode("utf-8"))

    def sparse(self):
        """(offset, data) of a STREAM_SPARSE_DATA record."""
        return _OFFSET.unpack(self.payload[:8])[0], self.payload[8:]

    def xattrs(self):
        pairs = []
        pos = 0
        while pos < len(self.payload):
            (name_len,) = _LENGTH.unpack_from(self.payload, pos)
            pos += 4
            name = self.payload[pos:pos + name_len]
            pos += name_len
            (value_len,) = _LENGTH.unpack_from(self.payload, pos)
            pos += 4
            pairs.append((name, self.payload[pos:pos + value_len]))
            pos += value_len
        return pairs


def stored_name(attributes):
    """The name an attribute record is filed under: a directory's is its ``link``
    (``.../dir/``, or whatever the plugin gave), everything else its ``fname``
    (§6 "Paths", §13).  The catalog lists it; a restore puts where before it."""
    if attributes["type"] == C.FT["FT_DIREND"]:
        return attributes["link"] or ""
    return attributes["fname"]


def encode_attributes(attributes):
    return json.dumps(attributes, sort_keys=True).encode("utf-8")


def encode_sparse(offset, data):
    return _OFFSET.pack(offset) + bytes(data)


def encode_xattrs(pairs):
    return b"".join(_LENGTH.pack(len(n)) + n + _LENGTH.pack(len(v)) + v for n, v in pairs)


class VolumeWriter(object):
    """Appends records to one job's volume."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "ab")

    def write(self, stream, file_index, payload):
        self._file.write(_HEADER.pack(MAGIC, stream, file_index, len(payload)))
        self._file.write(payload)   # not joined: a data block is 256 KiB

    def plugin_name(self, file_index, cmd):
        self.write(C.STREAM_PLUGIN_NAME, file_index,
                   b"1 " + cmd.encode("utf-8") if cmd is not None else b"0")

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_records(path, start=0, torn_tail=False):
    """Yield the records of a volume from byte offset ``start``.

    ``torn_tail``: the writer may have died mid-record (a killed FD): a
    truncated last record ends the volume instead of being an error."""
    with open(path, "rb") as volume:
        volume.seek(start)
        while True:
            offset = volume.tell()
            header = volume.read(_HEADER.size)
            if not header:
                return
            if len(header) != _HEADER.size:
                if torn_tail:
                    return
                raise VolumeError("%s: truncated record header at %d" % (path, offset))
            magic, stream, file_index, length = _HEADER.unpack(header)
            if magic != MAGIC:
                raise VolumeError("%s: bad record magic at %d" % (path, offset))
            payload = volume.read(length)
            if len(payload) != length:
                if torn_tail:
                    return
                raise VolumeError("%s: truncated record at %d" % (path, offset))
            yield Record(stream, file_index, payload, offset)


def read_file_group(path, offset):
    """The records of one saved file: from its plugin name start record up to and
    including the matching end record."""
    group = []
    for record in read_records(path, offset):
        group.append(record)
        if record.stream == C.STREAM_PLUGIN_NAME and record.plugin_name_start is None:
            return group
    raise VolumeError("%s: file at offset %d has no plugin name end record" % (path, offset))


def volume_path(workdir, jobid):
    return os.path.join(workdir, "volumes", "job-%d.vol" % jobid)
