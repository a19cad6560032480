"""A read-only consistency check of a whole disk: descriptor, every delta, the tree.

Unlike ``ploop check`` it never writes (``ploop check DD`` fills holes), and it
lists every problem it finds instead of stopping at the first.
"""
import collections
import os

from vz7native.image.delta import (FLAG_FORMAT_CONVERSION, MAX_CLUSTER_SIZE, MIN_CLUSTER_SIZE,
                                   descriptor_problems, first_hole, open_delta)
from vz7native.image.descriptor import NULL_GUID, guid_key, read_descriptor
from vz7native.image.errors import ImageError
from vz7native.paths import descriptor_path, show

DeltaReport = collections.namedtuple(
    "DeltaReport",
    "guid file kind version cluster_size size file_size clusters in_use real_file outside")
DeltaReport.__doc__ = """What :func:`verify` saw of one delta: ``clusters`` is the number
of clusters it holds (BAT entries in use; for a raw image, all of its clusters).
``version``, ``size`` and the rest are None when the file could not be read.
``real_file`` is where it lives (symlinks resolved), ``outside`` whether that
is outside the directory of the descriptor (an absolute ``<File>``, or a
symlink pointing away)."""


class VerifyReport(object):
    """The result of :func:`verify`.

    ``path`` (the descriptor), ``problems`` (list of messages, each naming the
    file concerned), ``deltas`` (list of :class:`DeltaReport`, in descriptor
    order), ``ok`` (no problems) and ``clusters`` (``{guid: clusters held}``).
    """

    def __init__(self, path):
        self.path = path
        self.problems = []
        self.deltas = []

    @property
    def ok(self):
        return not self.problems

    @property
    def clusters(self):
        return collections.OrderedDict((d.guid, d.clusters) for d in self.deltas)

    def __repr__(self):
        return "<VerifyReport %s: %s>" % (
            show(self.path), "ok" if self.ok else "%d problem(s)" % len(self.problems))


def _check_tree(descriptor, problems):
    """Snapshot-tree problems: parents that do not exist, cycles."""
    name = show(descriptor.path)
    keys = {guid_key(g) for g in descriptor.images}
    parents = {guid_key(s.guid): guid_key(s.parent_guid) for s in descriptor.snapshots}
    for shot in descriptor.snapshots:
        if guid_key(shot.parent_guid) not in keys | {guid_key(NULL_GUID)}:
            problems.append("%s: snapshot %s has parent %s, which has no image"
                            % (name, shot.guid, shot.parent_guid))
    for start in parents:
        seen = set()
        guid = start
        while guid in parents and guid not in seen:
            seen.add(guid)
            guid = parents[guid]
        if guid in seen:
            problems.append("%s: the snapshot tree has a cycle through %s" % (name, start))
            break


def _location(descriptor, entry):
    """(real path, outside the image directory?) of a delta."""
    real = os.path.realpath(entry.file)
    home = os.path.dirname(os.path.realpath(descriptor.path))
    return real, not real.startswith(home + b"/")


def _check_delta(descriptor, entry, problems):
    """Open and check one delta; returns its DeltaReport."""
    where = _location(descriptor, entry)
    try:
        delta = open_delta(entry, descriptor.cluster_size)
    except (OSError, ImageError) as e:
        problems.append("%s: cannot open: %s" % (show(entry.file), e.strerror or e)
                        if isinstance(e, OSError) else str(e))
        return DeltaReport(entry.guid, entry.file, entry.kind, None, None, None, None, 0,
                           None, *where)
    try:
        name = show(delta.file)
        problems.extend(delta.layout_problems())
        problems.extend(descriptor_problems(delta, descriptor))
        cs = delta.cluster_size
        if delta.kind != "Plain":
            if not MIN_CLUSTER_SIZE <= cs <= MAX_CLUSTER_SIZE:
                problems.append("%s: %d-byte clusters are outside what libploop accepts "
                                "(%d to %d)" % (name, cs, MIN_CLUSTER_SIZE, MAX_CLUSTER_SIZE))
            if delta.file_size % cs:
                problems.append("%s: file length %d is not a whole number of %d-byte clusters"
                                % (name, delta.file_size, cs))
            if delta.header.first_block_offset % cs:
                problems.append("%s: data starts at byte %d, not on a cluster boundary"
                                % (name, delta.header.first_block_offset))
            if delta.header.flags & FLAG_FORMAT_CONVERSION:
                problems.append("%s: a format version conversion did not finish" % name)
            if delta.in_use:
                problems.append("%s: marked in use (open read-write by the kernel, or not "
                                "closed cleanly)" % name)
            hole = first_hole(delta.fd, delta.file_size)
            if hole is not None:
                problems.append("%s: the file is sparse (first hole at byte %d); libploop "
                                "refuses sparse deltas" % (name, hole))
        return DeltaReport(entry.guid, entry.file, delta.kind, delta.version, cs, delta.size,
                           delta.file_size, delta.allocated, delta.in_use, *where)
    finally:
        delta.close()


def verify(path):
    """Check the disk of DiskDescriptor.xml ``path`` (or its directory), read-only.

    Returns a :class:`VerifyReport`; problems are reported, not raised (only a
    bad ``path`` argument raises).
    """
    dd = descriptor_path(path)
    report = VerifyReport(dd)
    try:
        descriptor = read_descriptor(dd)
    except ImageError as e:
        report.problems.append(str(e))
        return report
    _check_tree(descriptor, report.problems)
    for entry in descriptor.images.values():
        report.deltas.append(_check_delta(descriptor, entry, report.problems))
    sizes = {d.cluster_size for d in report.deltas if d.cluster_size is not None}
    if len(sizes) > 1:
        report.problems.append("%s: the deltas have different cluster sizes: %s" % (
            show(dd), ", ".join(str(s) for s in sorted(sizes))))
    return report
