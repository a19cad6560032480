"""The virtual disk of one snapshot: its delta chain read as one flat disk."""
import os
import threading

from vz7native.image.delta import descriptor_problems, open_delta
from vz7native.image.files import open_regular
from vz7native.image.descriptor import DiskDescriptor, read_descriptor
from vz7native.paths import fspath, show
from vz7native.image.errors import FormatError, ImageError

_preadv = getattr(os, "preadv", None)  # Python 3.7+: read straight into the caller's buffer
# Zero runs are filled from a shared block of at most this many bytes.
_ZERO_BLOCK = 1 << 20


class VirtualDisk(object):
    """The disk as snapshot ``guid`` sees it (see :func:`open_virtual_disk`).

    Attributes: ``descriptor`` (:class:`DiskDescriptor`), ``guid`` (the top of
    the chain), ``size`` and ``cluster_size`` (bytes), ``deltas`` (the open
    :class:`~vz7native.image.delta.Delta` objects, top first).

    Reads are thread-safe: they use ``os.pread`` only, on fds opened read-only,
    and the BATs are read once at open. :meth:`close` waits for reads in
    flight, so a read never lands on a reused fd. A run of clusters that lie
    back to back in one delta file is read with one ``pread``.
    """

    def __init__(self, descriptor, guid, deltas, size):
        self.descriptor = descriptor
        self.guid = guid
        self.deltas = deltas
        self.size = size
        self.cluster_size = deltas[0].cluster_size
        self._zeros = bytes(min(self.cluster_size, _ZERO_BLOCK))
        # (fd, bat or None for raw, bytes per BAT unit, file, raw file size) per layer.
        self._layers = tuple(
            (d.fd, getattr(d, "bat", None), getattr(d, "unit", 0), d.file, d.file_size)
            for d in deltas)
        self._state = threading.Condition()
        self._reads_in_flight = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<VirtualDisk %s %s: %d bytes, %d delta(s)>" % (
            show(self.descriptor.path), self.guid, self.size, len(self.deltas))

    @property
    def closed(self):
        return self._layers is None

    def close(self):
        """Close the delta files once no read is running (a second call does nothing)."""
        with self._state:
            self._layers = None
            while self._reads_in_flight:
                self._state.wait()
        for delta in self.deltas:
            delta.close()

    def locate(self, cluster):
        """``(layer index, file offset)`` of virtual ``cluster``, or ``(None, 0)``
        when no delta of the chain holds it (it reads as zeros)."""
        layers = self._layers
        if layers is None:
            raise ValueError("read from a closed VirtualDisk")
        return self._locate(layers, cluster)

    def _locate(self, layers, cluster):
        for index, (_, bat, unit, _, file_size) in enumerate(layers):
            if bat is None:
                offset = cluster * self.cluster_size
                if offset < file_size:
                    return index, offset
            elif cluster < len(bat) and bat[cluster]:
                return index, bat[cluster] * unit
        return None, 0

    def read(self, offset, length):
        """``length`` bytes at ``offset`` (fewer only at the end of the disk)."""
        if length < 0:
            raise ValueError("negative length %d" % length)
        buf = bytearray(max(0, min(length, self.size - offset)))
        got = self.readinto(offset, buf)
        return bytes(buf[:got]) if got != len(buf) else bytes(buf)

    def readinto(self, offset, buffer):
        """Fill ``buffer`` from virtual ``offset``; returns the bytes filled
        (fewer than ``len(buffer)`` only at the end of the disk)."""
        if offset < 0:
            raise ValueError("negative offset %d" % offset)
        view = memoryview(buffer).cast("B")
        end = min(offset + len(view), self.size)
        with self._state:
            layers = self._layers
            if layers is None:
                raise ValueError("read from a closed VirtualDisk")
            self._reads_in_flight += 1
        try:
            if offset < end:
                self._read_range(layers, view, offset, end)
        finally:
            with self._state:
                self._reads_in_flight -= 1
                if not self._reads_in_flight:
                    self._state.notify_all()
        return max(0, end - offset)

    def _read_range(self, layers, view, offset, end):
        cs = self.cluster_size
        pos = offset
        cluster = pos // cs
        layer, file_offset = self._locate(layers, cluster)
        while pos < end:
            # Extend the run while the next cluster continues it in the same place.
            run_end = min((cluster + 1) * cs, end)
            next_cluster = cluster + 1
            while run_end < end:
                next_layer, next_offset = self._locate(layers, next_cluster)
                if next_layer != layer or (
                        layer is not None and
                        next_offset != file_offset + (next_cluster - cluster) * cs):
                    break
                next_cluster += 1
                run_end = min(next_cluster * cs, end)
            else:
                next_layer = next_offset = None
            target = view[pos - offset:run_end - offset]
            if layer is None:
                self._fill_zeros(target)
            else:
                self._pread_into(layers[layer], target, file_offset + pos - cluster * cs)
            pos, cluster = run_end, next_cluster
            layer, file_offset = next_layer, next_offset

    def _fill_zeros(self, target):
        zeros = self._zeros
        for start in range(0, len(target), len(zeros)):
            chunk = target[start:start + len(zeros)]
            chunk[:] = zeros[:len(chunk)]

    def _pread_into(self, layer, target, file_offset):
        fd, bat, _, file, _ = layer
        done = 0
        while done < len(target):
            if _preadv is not None:
                got = _preadv(fd, [target[done:]], file_offset + done)
            else:
                data = os.pread(fd, len(target) - done, file_offset + done)
                got = len(data)
                target[done:done + got] = data
            if got == 0:
                if bat is None:  # a raw base shorter than the disk: the rest is zeros
                    self._fill_zeros(target[done:])
                    return
                raise FormatError("%s ends at byte %d, inside a cluster its BAT points to "
                                  "(truncated while open?)" % (show(file), file_offset + done))
            done += got


class RawDiskFile(object):
    """A raw disk file with the ``size``/``read`` interface of a VirtualDisk
    (for :func:`~vz7native.image.gpt.find_partition` and comparisons)."""

    def __init__(self, path):
        self.path = fspath(path)
        self._fd = open_regular(self.path, what="raw disk")
        self.size = os.fstat(self._fd).st_size

    def read(self, offset, length):
        return os.pread(self._fd, max(0, min(length, self.size - offset)), offset)

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<RawDiskFile %s>" % show(self.path)


def open_virtual_disk(path, guid=None):
    """Open the disk as snapshot ``guid`` (default: the live top) sees it.

    ``path`` is a DiskDescriptor.xml, its directory, or a
    :class:`DiskDescriptor`. Every delta of the chain is opened and its header
    and BAT checked: a delta that would give wrong data raises
    :class:`FormatError`; an unknown GUID :class:`SnapshotNotFound`; a missing
    or unreadable delta file :class:`ImageError`.

    The BATs are read here, once: a delta that changes later (the live top of
    a running container, flagged ``in_use``) is not followed. A snapshot's
    deltas never change while the snapshot exists, so its view is exact.
    """
    descriptor = path if isinstance(path, DiskDescriptor) else read_descriptor(path)
    chain = descriptor.chain(guid)
    deltas = []
    try:
        for entry in chain:
            try:
                delta = open_delta(entry, descriptor.cluster_size)
            except OSError as e:
                raise ImageError("cannot open delta %s of %s: %s" % (
                    show(entry.file), show(descriptor.path), e.strerror or e))
            deltas.append(delta)
            problems = delta.layout_problems()
            if problems:
                raise FormatError("; ".join(problems))
        size = _chain_size(descriptor, deltas)
        return VirtualDisk(descriptor, chain[0].guid, deltas, size)
    except BaseException:
        for delta in deltas:
            delta.close()
        raise


def _chain_size(descriptor, deltas):
    """The virtual size of a chain, checked against the descriptor."""
    top = deltas[0]
    for delta in deltas[1:]:
        if delta.cluster_size != top.cluster_size:
            raise FormatError("%s has %d-byte clusters, but %s above it has %d" % (
                show(delta.file), delta.cluster_size, show(top.file), top.cluster_size))
    problems = descriptor_problems(top, descriptor)
    if problems:
        raise FormatError("; ".join(problems))
    if top.kind == "Plain" and top.guid == descriptor.top_guid:
        return descriptor.size
    return top.size
