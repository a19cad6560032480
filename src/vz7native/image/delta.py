"""One delta file: a ploop1 header and BAT, or a raw ("Plain") disk.

ploop1 layout (all little-endian): a 64-byte header at offset 0, the BAT (one
u32 per virtual cluster) right after it, the two padded to whole clusters,
then data clusters. A BAT entry of 0 means "not in this delta"; otherwise it
says where the cluster lies in the file: in 512-byte sectors for v1, in
clusters for v2.
"""
import array
import errno
import os
import struct
import sys

from vz7native.image.descriptor import SECTOR_SIZE, chs_geometry, round_up, show
from vz7native.image.errors import FormatError
from vz7native.image.files import open_regular

HEADER = struct.Struct("<16sIIIIIQIII8s")
assert HEADER.size == 64
SIGNATURES = {b"WithoutFreeSpace": 1, b"WithouFreSpacExt": 2}
VERSION_SIGNATURES = {v: s for s, v in SIGNATURES.items()}
IMAGE_TYPE_COMPRESSED = 2
IN_USE_MAGIC = 0x746F6E59  # "Ynot": the kernel has the delta open read-write
IN_USE_OFFSET = struct.calcsize("<16sIIIIIQ")  # where the header keeps it
FLAG_EMPTY = 1
FLAG_FORMAT_CONVERSION = 2  # a v1 -> v2 conversion is under way (or was interrupted)
# Bounds libploop puts on the cluster size (is_valid_blocksize).
MIN_CLUSTER_SIZE = 32 << 10
MAX_CLUSTER_SIZE = 64 << 20
# Bytes of BAT read per pread (256 Ki entries).
BAT_READ_CHUNK = 1 << 20
# Problems listed one by one per delta before the rest is summed up.
PROBLEM_DETAIL_LIMIT = 10


def metadata_size(clusters, cluster_size):
    """Bytes of header plus BAT, padded to whole clusters."""
    return round_up(HEADER.size + 4 * clusters, cluster_size)


def bat_from_bytes(data):
    """A BAT as an array of u32 from its on-disk (little-endian) bytes."""
    bat = array.array("I")  # 4 bytes on every Linux ABI
    bat.frombytes(data)
    if sys.byteorder != "little":
        bat.byteswap()
    return bat


def bat_to_bytes(bat):
    """The on-disk (little-endian) bytes of a BAT array."""
    if sys.byteorder != "little":
        bat = array.array(bat.typecode, bat)
        bat.byteswap()
    return bat.tobytes()


class Header(object):
    """The fields of a ploop1 header, sizes converted to bytes."""

    def __init__(self, version, heads, cylinders, cluster_size, clusters, size,
                 in_use, first_block_offset, flags, image_type=IMAGE_TYPE_COMPRESSED):
        self.version = version
        self.image_type = image_type
        self.heads = heads
        self.cylinders = cylinders
        self.cluster_size = cluster_size
        self.clusters = clusters
        self.size = size
        self.in_use = in_use
        self.first_block_offset = first_block_offset
        self.flags = flags

    @classmethod
    def for_disk(cls, size, cluster_size, version):
        """The header libploop writes for a new, empty delta of ``size`` bytes."""
        size = round_up(size, cluster_size)
        cylinders, heads, _ = chs_geometry(size // SECTOR_SIZE)
        clusters = size // cluster_size
        return cls(version, heads, cylinders, cluster_size, clusters, size, False,
                   metadata_size(clusters, cluster_size), FLAG_EMPTY)

    @classmethod
    def parse(cls, data, name):
        """Parse 64 header bytes of file ``name`` (for messages); FormatError if bad."""
        if len(data) < HEADER.size:
            raise FormatError("%s is too short for a ploop1 header (%d bytes)"
                              % (show(name), len(data)))
        (sig, image_type, heads, cylinders, cluster_sectors, clusters, size_sectors,
         in_use, first_block, flags, _) = HEADER.unpack_from(data)
        version = SIGNATURES.get(sig)
        if version is None:
            raise FormatError("%s has no ploop1 signature (found %r, expected %r or %r)"
                              % ((show(name), sig) + tuple(SIGNATURES)))
        if version == 1:
            size_sectors &= 0xFFFFFFFF  # v1 keeps a u32 here; the next 4 bytes are unused
        if image_type != IMAGE_TYPE_COMPRESSED:
            raise FormatError("%s: image type %d in the header, expected %d (ploop1)"
                              % (show(name), image_type, IMAGE_TYPE_COMPRESSED))
        if cluster_sectors == 0 or cluster_sectors & (cluster_sectors - 1):
            raise FormatError("%s: cluster size of %d sectors in the header is not a power of two"
                              % (show(name), cluster_sectors))
        header = cls(version, heads, cylinders, cluster_sectors * SECTOR_SIZE, clusters,
                     size_sectors * SECTOR_SIZE, in_use == IN_USE_MAGIC,
                     first_block * SECTOR_SIZE, flags, image_type)
        if clusters * header.cluster_size < header.size:
            raise FormatError("%s: the BAT has %d entries, too few for a disk of %d bytes"
                              % (show(name), clusters, header.size))
        if header.first_block_offset < HEADER.size + 4 * clusters:
            raise FormatError("%s: data starts at byte %d, inside the BAT (which ends at %d)"
                              % (show(name), header.first_block_offset,
                                 HEADER.size + 4 * clusters))
        return header

    def pack(self):
        """The 64 header bytes."""
        return HEADER.pack(VERSION_SIGNATURES[self.version], self.image_type, self.heads,
                           self.cylinders, self.cluster_size // SECTOR_SIZE, self.clusters,
                           self.size // SECTOR_SIZE, IN_USE_MAGIC if self.in_use else 0,
                           self.first_block_offset // SECTOR_SIZE, self.flags, bytes(8))

    @property
    def bat_unit(self):
        """Bytes per unit of a BAT entry: a sector for v1, a cluster for v2."""
        return SECTOR_SIZE if self.version == 1 else self.cluster_size


def read_bat(fd, name, header, file_size):
    """The BAT of the delta ``fd`` (file ``name``, ``file_size`` bytes), checked
    against the file before anything is allocated: header, BAT and the rest of
    the metadata area must lie inside the file, and the BAT must hold no hole
    (libploop refuses sparse deltas; a header whose BAT is a hole in a large
    sparse file would otherwise cost gigabytes). Read in BAT_READ_CHUNK pieces."""
    bat_end = HEADER.size + 4 * header.clusters
    needed = max(bat_end, header.first_block_offset)
    if file_size < needed:
        raise FormatError("%s is truncated: %d bytes, but its header and BAT need %d"
                          % (show(name), file_size, needed))
    hole = first_hole(fd, bat_end)
    if hole is not None:
        raise FormatError("%s: its BAT (%d entries, up to byte %d) has a hole at byte %d: "
                          "the header claims more than the file holds"
                          % (show(name), header.clusters, bat_end, hole))
    bat = array.array("I")
    position = HEADER.size
    while position < bat_end:
        data = os.pread(fd, min(BAT_READ_CHUNK, bat_end - position), position)
        if not data or len(data) % 4:
            raise FormatError("%s: short read of the BAT (%d of %d bytes)"
                              % (show(name), position - HEADER.size + len(data),
                                 bat_end - HEADER.size))
        bat.extend(bat_from_bytes(data))
        position += len(data)
    return bat


def first_hole(fd, end):
    """Offset of the first hole before ``end``, or None (also when unknown)."""
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENXIO, errno.EOPNOTSUPP):
            return None
        raise
    return hole if hole < end else None


class Delta(object):
    """An open delta file (read-only fd). Subclasses: :class:`Ploop1Delta`, :class:`RawDelta`.

    Common attributes: ``guid``, ``file`` (bytes), ``kind``, ``fd``,
    ``file_size``, ``cluster_size``, ``size`` (virtual bytes it describes),
    ``in_use`` and ``version`` (1, 2, or None for raw).
    """

    kind = None
    version = None
    in_use = False

    def __init__(self, guid, file, fd, cluster_size):
        self.guid = guid
        self.file = file
        self.fd = fd
        self.file_size = os.fstat(fd).st_size
        self.cluster_size = cluster_size

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self):
        return "<%s %s %s>" % (type(self).__name__, self.guid, show(self.file))


class Ploop1Delta(Delta):
    """A ploop1 delta: ``header`` (:class:`Header`), ``bat`` (array of u32),
    ``unit`` (bytes per BAT unit), ``allocated`` (clusters it holds)."""

    kind = "Compressed"

    def __init__(self, guid, file, fd):
        data = os.pread(fd, HEADER.size, 0)
        header = Header.parse(data, file)
        super(Ploop1Delta, self).__init__(guid, file, fd, header.cluster_size)
        self.header = header
        self.version = header.version
        self.size = header.size
        self.in_use = header.in_use
        self.unit = header.bat_unit
        self.bat = read_bat(fd, file, header, self.file_size)
        self.allocated = len(self.bat) - self.bat.count(0)

    def layout_problems(self):
        """What makes reads through this BAT wrong (list of strings, empty if none).

        Entries must be cluster-aligned, start at or after the data area,
        end inside the file and not share a cluster.
        """
        used = list(filter(None, self.bat))
        if not used:
            return []
        unit, cs, first = self.unit, self.cluster_size, self.header.first_block_offset
        step = cs // unit  # units per cluster: 1 for v2
        last_unit = (self.file_size - cs) // unit  # the last entry whose cluster fits
        bad_range = min(used) * unit < first or max(used) > last_unit
        misaligned = step > 1 and any(e % step for e in used)
        duplicated = len(set(used)) != len(used)
        if not (bad_range or misaligned or duplicated):
            return []
        problems = []
        seen = {}
        for index, entry in enumerate(self.bat):
            if not entry:
                continue
            offset = entry * unit
            what = None
            if offset < first:
                what = "points to byte %d, inside the header/BAT area (data starts at %d)" % (
                    offset, first)
            elif entry > last_unit:
                what = "points to byte %d, past the end of the file (%d bytes)" % (
                    offset, self.file_size)
            elif entry % step:
                what = "points to byte %d, which is not cluster-aligned" % offset
            elif entry in seen:
                what = "points to byte %d, like entry %d: the clusters overlap" % (
                    offset, seen[entry])
            seen.setdefault(entry, index)
            if what:
                problems.append("%s: BAT entry %d %s" % (show(self.file), index, what))
        return _summarise(problems, "BAT problems", self.file)


class RawDelta(Delta):
    """A raw ("Plain") image: virtual byte *x* is file byte *x*."""

    kind = "Plain"

    def __init__(self, guid, file, fd, cluster_size):
        super(RawDelta, self).__init__(guid, file, fd, cluster_size)
        self.size = self.file_size - self.file_size % SECTOR_SIZE
        self.allocated = round_up(self.file_size, cluster_size) // cluster_size

    def layout_problems(self):
        return []


def descriptor_problems(delta, descriptor):
    """How ``delta`` disagrees with its :class:`DiskDescriptor` (list of strings):
    cluster size, and disk size (the top must match, a snapshot below a later
    grow may be smaller)."""
    name = show(delta.file)
    is_top = delta.guid == descriptor.top_guid
    if delta.kind == "Plain":
        if is_top and delta.size < descriptor.size:
            return ["%s: the raw image has %d bytes, the descriptor says the disk has %d"
                    % (name, delta.size, descriptor.size)]
        return []
    problems = []
    if delta.cluster_size != descriptor.cluster_size:
        problems.append("%s: %d-byte clusters, the descriptor says %d"
                        % (name, delta.cluster_size, descriptor.cluster_size))
    expected = round_up(descriptor.size, delta.cluster_size)
    if delta.size > expected or (is_top and delta.size != expected):
        problems.append("%s: the header says the disk has %d bytes, the descriptor %d"
                        % (name, delta.size, descriptor.size))
    return problems


def _summarise(problems, what, file):
    if len(problems) <= PROBLEM_DETAIL_LIMIT:
        return problems
    rest = len(problems) - PROBLEM_DETAIL_LIMIT
    return problems[:PROBLEM_DETAIL_LIMIT] + [
        "%s: ... and %d more %s" % (show(file), rest, what)]


def open_delta(entry, cluster_size):
    """Open the delta of an :class:`ImageEntry` read-only.

    ``cluster_size`` (from the descriptor) applies to raw images; a ploop1
    delta's own header gives its cluster size. Raises FormatError (also for
    anything but a regular file, see :mod:`vz7native.image.files`) or OSError.
    """
    fd = open_regular(entry.file)
    try:
        if entry.kind == "Plain":
            return RawDelta(entry.guid, entry.file, fd, cluster_size)
        return Ploop1Delta(entry.guid, entry.file, fd)
    except BaseException:
        os.close(fd)
        raise
