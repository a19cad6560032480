"""Find the partition inside a virtual disk by reading its GPT.

libploop labels its disks GPT with one partition that starts one cluster into
the disk (1 MiB for the default clusters). Do not assume that: read the table.
The primary header sits in LBA 1, the backup in the last LBA; both are tried,
with 512- and 4096-byte logical sectors.
"""
import collections
import struct
import zlib

from vz7native.image.descriptor import show
from vz7native.image.errors import FormatError, NoPartitionTable

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIII4xQQQQ16sQIII")
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
LINUX_FILESYSTEM = "0fc63daf-8483-4772-8e79-3d69d8477de4"
# Sanity bounds so a corrupt header cannot make us read gigabytes.
MAX_ENTRIES = 4096
SECTOR_SIZES = (512, 4096)

Partition = collections.namedtuple("Partition", "number offset size type_guid name")
Partition.__doc__ = """A GPT partition: ``number`` (1-based slot), ``offset`` and
``size`` in bytes, ``type_guid`` (lower-case text), ``name`` (str)."""


def guid_text(raw):
    """The text form of a 16-byte on-disk GUID (first three fields little-endian)."""
    a, b, c = struct.unpack_from("<IHH", raw)
    tail = bytes(raw[8:]).hex()
    return "%08x-%04x-%04x-%s-%s" % (a, b, c, tail[:4], tail[4:])


def _disk_name(disk):
    descriptor = getattr(disk, "descriptor", None)
    path = descriptor.path if descriptor is not None else getattr(disk, "path", None)
    return show(path) if path is not None else repr(disk)


def _read_table(disk, sector, header_lba):
    """``(entries, damage)`` of the GPT whose header is at ``header_lba``:
    the list of unpacked entries, or None and why the table there is unusable
    (None too when there is no GPT signature at all)."""
    block = disk.read(header_lba * sector, sector)
    if len(block) < GPT_HEADER.size or block[:8] != GPT_SIGNATURE:
        return None, None
    (_, _, header_size, header_crc, _, _, _, _, _,
     entries_lba, count, entry_size, entries_crc) = GPT_HEADER.unpack_from(block)
    where = "GPT header at LBA %d" % header_lba
    if not GPT_HEADER.size <= header_size <= sector:
        return None, "%s has a header size of %d" % (where, header_size)
    check = bytearray(block[:header_size])
    check[16:20] = bytes(4)
    if zlib.crc32(bytes(check)) & 0xFFFFFFFF != header_crc:
        return None, "%s fails its checksum" % where
    if not (GPT_ENTRY.size <= entry_size <= 4096 and 0 < count <= MAX_ENTRIES):
        return None, "%s lists %d entries of %d bytes" % (where, count, entry_size)
    table = disk.read(entries_lba * sector, count * entry_size)
    if len(table) != count * entry_size or zlib.crc32(table) & 0xFFFFFFFF != entries_crc:
        return None, "the partition entries of the %s fail their checksum" % where
    return [GPT_ENTRY.unpack_from(table, i * entry_size) for i in range(count)], None


def find_partition(disk):
    """The first used GPT entry of ``disk`` as a :class:`Partition`.

    ``disk`` is anything with ``size`` and ``read(offset, length)``: a
    :class:`~vz7native.image.reader.VirtualDisk` or a
    :class:`~vz7native.image.reader.RawDiskFile`. The backup GPT is used when
    the primary is damaged. Raises :class:`NoPartitionTable` when there is no
    GPT or it has no used entry, :class:`FormatError` when both copies are
    damaged or the partition lies outside the disk.
    """
    for sector in SECTOR_SIZES:
        last_lba = disk.size // sector - 1
        entries, damage = _read_table(disk, sector, 1)
        if entries is None and last_lba > 1:
            entries, backup_damage = _read_table(disk, sector, last_lba)
            damage = damage or backup_damage
        if entries is None:
            if damage:
                raise FormatError("%s: the GPT is damaged: %s" % (_disk_name(disk), damage))
            continue
        for number, (type_raw, _, first, last, _, name) in enumerate(entries, 1):
            if type_raw == bytes(16):
                continue
            offset, size = first * sector, (last - first + 1) * sector
            if last < first or offset + size > disk.size:
                raise FormatError("%s: GPT partition %d (LBA %d-%d) lies outside the disk "
                                  "(%d bytes)" % (_disk_name(disk), number, first, last,
                                                  disk.size))
            label = name.decode("utf-16-le", "replace").split("\0", 1)[0]
            return Partition(number, offset, size, guid_text(type_raw), label)
        raise NoPartitionTable("%s: the GPT has no used partition entry" % _disk_name(disk))
    raise NoPartitionTable("%s has no GPT" % _disk_name(disk))
