"""Writers: a raw disk into a new ploop1 image, a new image written in place
through a raw view of its delta file, changed clusters into the top delta, and
the release of a delta a killed offline merge left marked in use.

All write what libploop writes itself: whole clusters, the header and BAT
padded to whole clusters, data first and the BAT last, then fsync.
"""
import array
import contextlib
import errno
import fcntl
import os

from vz7native.image.delta import (FLAG_EMPTY, HEADER, IN_USE_OFFSET, MAX_CLUSTER_SIZE,
                                   MIN_CLUSTER_SIZE, Header, Ploop1Delta, bat_from_bytes,
                                   bat_to_bytes)
from vz7native.image.descriptor import SECTOR_SIZE, descriptor_xml, read_descriptor, round_up
from vz7native.image.errors import ImageError, WriteError
from vz7native.image.files import open_regular
from vz7native.image.reader import open_virtual_disk
from vz7native.paths import DESCRIPTOR_NAME, fspath, show

DEFAULT_CLUSTER_SIZE = 1 << 20
# Bytes read from the raw disk per pread (rounded to whole clusters).
READ_CHUNK = 16 << 20
V1_MAX_SECTORS = 1 << 32  # v1 BAT entries are u32 sector numbers
MAX_ZERO_WRITE = 1 << 20
_ZEROS = memoryview(bytes(MAX_ZERO_WRITE))


def data_ranges(fd, size):
    """(start, end) byte ranges of ``fd`` that may hold data (holes skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA here: read it all
                yield pos, size
                return
            raise
        yield start, min(end, size)
        pos = end


def _clusters_with_data(fd, size, cluster_size):
    """Indexes of the clusters of ``fd`` that are not in a hole, ascending."""
    last = -1
    for start, end in data_ranges(fd, size):
        for index in range(max(start // cluster_size, last + 1),
                           round_up(end, cluster_size) // cluster_size):
            yield index
            last = index


def _read_clusters(fd, size, cluster_size, indexes):
    """(index, data) for the given ascending cluster ``indexes``, read in large
    chunks; the last cluster is zero-padded to a whole cluster."""
    per_chunk = max(1, READ_CHUNK // cluster_size)
    run = []

    def flush():
        data = os.pread(fd, len(run) * cluster_size, run[0] * cluster_size)
        view = memoryview(data)
        for n, index in enumerate(run):
            chunk = view[n * cluster_size:(n + 1) * cluster_size]
            if len(chunk) < cluster_size:
                chunk = memoryview(bytes(chunk) + bytes(cluster_size - len(chunk)))
            yield index, chunk

    for index in indexes:
        if run and (index != run[-1] + 1 or len(run) == per_chunk):
            for item in flush():
                yield item
            run = []
        run.append(index)
    if run:
        for item in flush():
            yield item


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


@contextlib.contextmanager
def _writing(path, outcome):
    """Turn an OSError while writing ``path`` into a WriteError saying ``outcome``."""
    try:
        yield
    except OSError as e:
        raise WriteError(e.errno, "cannot write %s: %s; %s" % (
            show(path), e.strerror or e, outcome)) from e


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_cluster_size(cluster_size):
    """ValueError unless libploop accepts ``cluster_size`` (a power of two, 32K-64M)."""
    if not (MIN_CLUSTER_SIZE <= cluster_size <= MAX_CLUSTER_SIZE and
            cluster_size & (cluster_size - 1) == 0):
        raise ValueError("cluster_size must be a power of two from %d to %d bytes, not %r"
                         % (MIN_CLUSTER_SIZE, MAX_CLUSTER_SIZE, cluster_size))


def _check_image_name(image_name):
    name = fspath(image_name)
    if not name or b"/" in name or name in (b".", b"..", DESCRIPTOR_NAME):
        raise ValueError("image_name must be a plain file name, not %r" % (name,))
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("image_name must be UTF-8 to be written into the descriptor: %r"
                         % (name,))
    if any(ord(c) < 0x20 for c in text):
        raise ValueError("image_name must not contain control characters: %r" % (name,))
    return name


def _new_image_paths(target_dir, image_name):
    """(target_dir, descriptor path, delta path) of a new image; ImageError if
    either file exists."""
    name = _check_image_name(image_name)
    target_dir = os.path.abspath(fspath(target_dir))
    dd = os.path.join(target_dir, DESCRIPTOR_NAME)
    image = os.path.join(target_dir, name)
    for path in (dd, image):
        if os.path.lexists(path):
            raise ImageError("%s already exists" % show(path))
    return target_dir, dd, image


def _check_format(version, cluster_size):
    """ValueError unless a new delta can have ``version`` and ``cluster_size``."""
    if version not in (1, 2):
        raise ValueError("version must be 1 or 2, not %r" % (version,))
    check_cluster_size(cluster_size)


def _new_header(size, cluster_size, version, what):
    """The header of a new delta for a disk of ``size`` bytes (``what`` names it);
    ``version`` and ``cluster_size`` passed :func:`_check_format`."""
    header = Header.for_disk(size, cluster_size, version)
    if version == 1 and header.first_block_offset + header.size > \
            V1_MAX_SECTORS * SECTOR_SIZE:
        raise ImageError("%s: %d bytes is too large for ploop1 v1 (2 TiB); use version 2"
                         % (what, size))
    return header


def _create(path, mode):
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                   mode)


def _write_metadata(image_fd, header, bat):
    """Header and BAT over the whole metadata area (libploop refuses a sparse one),
    then fsync."""
    metadata = bytearray(header.first_block_offset)
    metadata[:HEADER.size] = header.pack()
    bat_bytes = bat_to_bytes(bat)
    metadata[HEADER.size:HEADER.size + len(bat_bytes)] = bat_bytes
    _pwrite_all(image_fd, metadata, 0)
    os.fsync(image_fd)


def _write_descriptor(dd, header, image_name):
    fd = _create(dd, 0o644)
    try:
        with _writing(dd, "nothing is left of the new image"):
            _pwrite_all(fd, descriptor_xml(header.size, header.cluster_size,
                                           image_name).encode("utf-8"), 0)
            os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(os.path.dirname(dd))


def _remove_created(created):
    for path in reversed(created):
        with contextlib.suppress(OSError):
            (os.rmdir if os.path.isdir(path) else os.unlink)(path)


def import_raw(raw_disk, target_dir, version=1, cluster_size=DEFAULT_CLUSTER_SIZE,
               image_name=b"root.hds"):
    """Make a ploop1 image of the raw disk file ``raw_disk`` in ``target_dir``.

    Writes ``target_dir/image_name`` (an expanded ploop1 delta, format
    ``version`` 1 or 2, holding only the clusters that are not all zeros) and
    ``target_dir/DiskDescriptor.xml``; ``target_dir`` is created if missing.
    The virtual disk is the raw disk rounded up to whole clusters. Returns the
    descriptor path. Nothing is left behind on failure; existing files are
    never overwritten.
    """
    _check_format(version, cluster_size)
    raw_disk = fspath(raw_disk)
    target_dir, dd, image = _new_image_paths(target_dir, image_name)

    raw_fd = open_regular(raw_disk, what="raw disk")
    created = []
    try:
        size = os.fstat(raw_fd).st_size
        if size == 0 or size % SECTOR_SIZE:
            raise ImageError("%s: a raw disk must be a non-empty whole number of 512-byte "
                             "sectors, not %d bytes" % (show(raw_disk), size))
        header = _new_header(size, cluster_size, version, show(raw_disk))
        if not os.path.isdir(target_dir):
            os.makedirs(target_dir)
            created.append(target_dir)
        image_fd = _create(image, 0o600)
        created.append(image)
        try:
            with _writing(image, "nothing is left of the new image"):
                _write_image(raw_fd, size, image_fd, header)
        finally:
            os.close(image_fd)
        created.append(dd)
        _write_descriptor(dd, header, os.path.basename(image))
    except BaseException:
        _remove_created(created)
        raise
    finally:
        os.close(raw_fd)
    return dd


def _write_image(raw_fd, size, image_fd, header):
    """Data clusters after the metadata area, then header + BAT, then fsync."""
    cs = header.cluster_size
    bat = bat_from_bytes(bytes(4 * header.clusters))
    zero = bytes(cs)
    position = header.first_block_offset
    indexes = _clusters_with_data(raw_fd, size, cs)
    for index, data in _read_clusters(raw_fd, size, cs, indexes):
        if data == zero:
            continue
        _pwrite_all(image_fd, data, position)
        bat[index] = position // header.bat_unit
        position += cs
    if position > header.first_block_offset:
        header.flags &= ~FLAG_EMPTY
    _write_metadata(image_fd, header, bat)


class InPlaceImage(object):
    """A new ploop1 image whose virtual disk is written straight into its delta file.

    While it is written, the delta is laid out as if every cluster were
    allocated in order: virtual byte *x* is file byte :attr:`data_offset` + *x*
    (a sparse file). Whatever writes the disk (a loop device at that offset)
    writes the data where the image keeps it. :meth:`seal` then makes it an
    expanded image like :func:`import_raw`'s: holes inside clusters holding
    data are filled with zeros, the clusters past the first *n* (*n* = the
    clusters holding data) move into the holes below, the file is cut there
    (whole clusters, no holes: libploop 1.x fills holes, 7.x punches unused
    ones), header, BAT and ``DiskDescriptor.xml`` are written. Only the moved
    clusters are copied: few when the data lies close together, as in a
    filesystem filled from empty.

    Until :meth:`seal` the metadata area is zeros, so nothing takes the file
    for an image; :meth:`remove` deletes what was created.

    ``target_dir`` (created if missing), ``size`` (bytes, a whole number of
    clusters), ``version`` (1 or 2), ``cluster_size``, ``image_name``.
    Attributes: ``path`` (the delta file), ``descriptor`` (the path
    DiskDescriptor.xml gets), ``data_offset``, ``size``.
    """

    def __init__(self, target_dir, size, version=1, cluster_size=DEFAULT_CLUSTER_SIZE,
                 image_name=b"root.hds"):
        _check_format(version, cluster_size)
        if size <= 0 or size % cluster_size:
            raise ValueError("size must be a positive multiple of the cluster size (%d), "
                             "not %r" % (cluster_size, size))
        target_dir, self.descriptor, self.path = _new_image_paths(target_dir, image_name)
        self._header = _new_header(size, cluster_size, version, show(self.path))
        self.size = size
        self.data_offset = self._header.first_block_offset
        self._created = []
        try:
            if not os.path.isdir(target_dir):
                os.makedirs(target_dir)
                self._created.append(target_dir)
            fd = _create(self.path, 0o600)
            self._created.append(self.path)
            try:
                with _writing(self.path, "nothing is left of the new image"):
                    os.ftruncate(fd, self.data_offset + size)
            finally:
                os.close(fd)
        except BaseException:
            self.remove()
            raise

    def seal(self):
        """Turn what was written into an expanded ploop1 image; returns the
        descriptor path. On failure the files are removed."""
        header = self._header
        cs = header.cluster_size
        start = self.data_offset
        bat = bat_from_bytes(bytes(4 * header.clusters))
        try:
            fd = open_regular(self.path, os.O_RDWR)
            try:
                with _writing(self.path, "nothing is left of the new image"):
                    used = self._complete_clusters(fd)
                    # Clusters past the first len(used) move into the holes below:
                    # the file ends up whole and as long as its data.
                    count = len(used)
                    places = {index: index for index in used}
                    holes = (n for n in range(count) if n not in places)
                    for index in reversed(used):
                        if index < count:
                            break
                        hole = next(holes)
                        _pwrite_all(fd, os.pread(fd, cs, start + index * cs), start + hole * cs)
                        places[index] = hole
                    for index, place in places.items():
                        bat[index] = (start + place * cs) // header.bat_unit
                    os.ftruncate(fd, start + count * cs)
                    if count:
                        header.flags &= ~FLAG_EMPTY
                    # One fsync for data and metadata: the descriptor, written
                    # after it, is what makes the file an image.
                    _write_metadata(fd, header, bat)
            finally:
                os.close(fd)
            self._created.append(self.descriptor)
            _write_descriptor(self.descriptor, header, os.path.basename(self.path))
        except BaseException:
            self.remove()
            raise
        self._created = []
        return self.descriptor

    def _complete_clusters(self, fd):
        """Indexes of the clusters holding data, ascending; their holes are
        filled with zeros."""
        cs = self._header.cluster_size
        start = self.data_offset
        used = []
        written = covered = start   # end of the data, of its clusters, so far
        for first, last in data_ranges(fd, start + self.size):
            first = max(first, start)
            if first >= last:
                continue
            head = start + (first - start) // cs * cs
            tail = min(start + round_up(last - start, cs), start + self.size)
            if head < covered:      # shares a cluster with the range before
                _write_zeros(fd, written, first)
            else:
                _write_zeros(fd, written, covered)
                _write_zeros(fd, head, first)
            used.extend(range((max(head, covered) - start) // cs, (tail - start) // cs))
            written, covered = last, tail
        _write_zeros(fd, written, covered)
        return used

    def remove(self):
        """Delete what this image created (nothing after a successful seal)."""
        created, self._created = self._created, []
        _remove_created(created)


def _write_zeros(fd, start, end):
    """Zeros over ``start``..``end`` of ``fd`` (nothing if empty), in whole
    clusters at most."""
    while start < end:
        count = min(end - start, MAX_ZERO_WRITE)
        _pwrite_all(fd, _ZEROS[:count], start)
        start += count


@contextlib.contextmanager
def _descriptor_lock(dd):
    """libploop's per-disk lock (flock on DiskDescriptor.xml.lck), not waiting."""
    fd = os.open(dd + b".lck", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ImageError("%s is locked by another process (libploop at work?)"
                                 % show(dd))
            raise
        yield
    finally:
        os.close(fd)


def write_clusters(path, raw_disk):
    """Make the live top of an unmounted image read like the raw disk ``raw_disk``.

    Every cluster whose content in ``raw_disk`` differs from what the chain
    shows now is written into the top delta: in place if the top already holds
    it, otherwise appended to the file with a new BAT entry. Lower deltas (the
    snapshots) are never touched, so this simulates a container changing its
    disk after a snapshot. ``raw_disk`` must have the size of the virtual disk.
    Takes libploop's descriptor lock; refuses a top that is in use (mounted).
    Returns the number of clusters written.

    New clusters are appended first, behind the end of the file where no BAT
    entry points yet: if that fails (a full disk), the file is cut back to its
    old length and :class:`WriteError` raised, the image as it was. Clusters
    the top already holds are rewritten in place after that (no new space
    needed), then the BAT.
    """
    descriptor = read_descriptor(path)
    raw_disk = fspath(raw_disk)
    with _descriptor_lock(descriptor.path), \
            open_virtual_disk(descriptor) as vdisk:
        top = vdisk.deltas[0]
        if top.in_use:
            raise ImageError("%s is in use (mounted?): refusing to write into it"
                             % show(top.file))
        raw_fd = open_regular(raw_disk, what="raw disk")
        try:
            size = os.fstat(raw_fd).st_size
            if size != vdisk.size:
                raise ImageError("%s has %d bytes, but the disk of %s has %d" % (
                    show(raw_disk), size, show(descriptor.path), vdisk.size))
            top_fd = open_regular(top.file, os.O_RDWR)
            try:
                return _write_changes(vdisk, raw_fd, top, top_fd)
            finally:
                os.close(top_fd)
        finally:
            os.close(raw_fd)


def _write_changes(vdisk, raw_fd, top, top_fd):
    cs = vdisk.cluster_size
    current = bytearray(cs)
    raw_top = top.kind == "Plain"
    bat = None if raw_top else array.array(top.bat.typecode, top.bat)
    in_place = []
    appended = 0
    try:
        with _writing(top.file, "the image is as it was"):
            if not raw_top:
                unit = top.unit
                end = max(round_up(top.file_size, cs), top.header.first_block_offset)
            indexes = range(round_up(vdisk.size, cs) // cs)
            for index, data in _read_clusters(raw_fd, vdisk.size, cs, indexes):
                got = vdisk.readinto(index * cs, current)
                if data[:got] == current[:got]:
                    continue
                if raw_top or bat[index]:
                    in_place.append(index)
                    continue
                if end // unit > 0xFFFFFFFF:
                    raise ImageError("%s is full: a v1 delta cannot grow past 2 TiB; the image "
                                     "is as it was" % show(top.file))
                _pwrite_all(top_fd, data, end)
                bat[index] = end // unit
                end += cs
                appended += 1
            if appended:
                os.fsync(top_fd)
    except BaseException:
        if appended:
            os.ftruncate(top_fd, top.file_size)
            os.fsync(top_fd)
        raise
    with _writing(top.file, "the image may be damaged"):
        for index, data in _read_clusters(raw_fd, vdisk.size, cs, in_place):
            if raw_top:
                _pwrite_all(top_fd, data[:min(cs, vdisk.size - index * cs)], index * cs)
            else:
                _pwrite_all(top_fd, data, bat[index] * unit)
        os.fsync(top_fd)
        if (appended or in_place) and not raw_top:
            header = top.header
            header.flags &= ~FLAG_EMPTY
            _pwrite_all(top_fd, header.pack() + bat_to_bytes(bat), 0)
            os.fsync(top_fd)
    return appended + len(in_place)


def clear_in_use(path, guid):
    """Clear the in-use mark of the delta of snapshot ``guid`` in an unmounted image.

    libploop's offline merge of a snapshot's child into the snapshot marks the
    snapshot's delta in use, copies the child's clusters into it (rewriting
    those it holds in place, appending the others), syncs, writes the BAT and
    clears the mark. Killed in between, it leaves the mark, and every later
    merge refuses the delta ("Image is in use"). What it wrote is sound
    wherever the BAT points, and every copied cluster holds what the child,
    still above it in the chain, holds there: the disk reads the same. The
    clusters past the last one the BAT points to (appended, not yet entered)
    are cut off, then the mark is cleared; the merge can then be run again.

    The ploop driver marks the delta it has open read-write the same way:
    call this only when no ploop device runs the image. Takes libploop's
    descriptor lock; refuses a delta whose BAT is not sound (ImageError).
    Returns True when there was a mark to clear.
    """
    descriptor = read_descriptor(path)
    entry = descriptor.images[descriptor.resolve_guid(guid)]
    if entry.kind == "Plain":  # libploop writes a raw base with no mark
        return False
    with _descriptor_lock(descriptor.path):
        fd = open_regular(entry.file, os.O_RDWR)
        try:
            delta = Ploop1Delta(entry.guid, entry.file, fd)
            if not delta.in_use:
                return False
            problems = delta.layout_problems()
            if problems:
                raise ImageError("%s is marked in use and its BAT is not sound, so the mark "
                                 "is left: %s" % (show(entry.file), "; ".join(problems)))
            last = max(delta.bat)
            end = (last * delta.unit + delta.cluster_size if last
                   else delta.header.first_block_offset)
            with _writing(entry.file, "it is still marked in use"):
                if delta.file_size > end:
                    os.ftruncate(fd, end)
                    os.fsync(fd)
                _pwrite_all(fd, bytes(4), IN_USE_OFFSET)
                os.fsync(fd)
        finally:
            os.close(fd)
    return True
