"""Killing a process in the middle of libploop's offline merge of a snapshot,
and what a test checks around it.

libploop (1.15 and 7.0.x alike) merges a snapshot's child into the snapshot
offline like this: it marks the snapshot's delta in use, reads the child's
BAT, then reads each of the child's clusters and writes it into the
snapshot's delta, writes the BAT, clears the mark, writes the new descriptor
and removes the child's file. :class:`MergeCopy` is a :class:`fanotify_gate.Gate`
``hold`` that stops the merging process at a read of the child while the mark
is set and some clusters are copied; :func:`write_after_the_snapshot` gives
the child clusters to copy (an ``edit_image`` change, as a container writes
into its disk after the snapshot); :func:`disk_hash` says whether the disk
still reads the same.
"""
import hashlib
import os

from vz7native import image
from vz7native.image.delta import HEADER, Header


class MergeCopy(object):
    """Hold the process that reads the child delta ``top`` while the
    snapshot's delta ``snapshot_delta`` is marked in use (a merge between the
    two), at its :attr:`HELD_READ`-th such read; only process ``pid`` if given."""

    # The merge reads the child's BAT, then each cluster before copying it: the
    # fourth read comes when two clusters are copied.
    HELD_READ = 4

    def __init__(self, top, snapshot_delta, pid=None):
        self.top = os.path.realpath(top)
        self.snapshot_delta = snapshot_delta
        self.pid = pid
        self.reads = 0

    def __call__(self, event):
        if (self.pid not in (None, event.pid) or event.path != self.top
                or not in_use(self.snapshot_delta)):
            return False
        self.reads += 1
        return self.reads == self.HELD_READ


def in_use(delta_file):
    """Whether the ploop1 delta ``delta_file`` is marked in use."""
    with open(delta_file, "rb") as f:
        return Header.parse(f.read(HEADER.size), delta_file).in_use


def write_after_the_snapshot(root):
    """Some MiB of new clusters and a few changed ones, in the filesystem at ``root``."""
    with open(os.path.join(root, b"var/written-after-the-snapshot"), "wb") as f:
        f.write(os.urandom(24 << 20))
    with open(os.path.join(root, b"etc/hostname"), "wb") as f:
        f.write(b"changed after the snapshot\n")


def disk_hash(dd):
    """sha256 of the virtual disk the live top shows."""
    digest = hashlib.sha256()
    with image.open_virtual_disk(dd) as disk:
        for offset in range(0, disk.size, 1 << 20):
            digest.update(disk.read(offset, min(1 << 20, disk.size - offset)))
    return digest.hexdigest()
