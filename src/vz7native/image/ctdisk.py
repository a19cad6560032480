"""Build container disks from a directory tree: GPT + ext4, as libploop lays them out.

``make_ct_raw_disk`` writes a raw disk: a GPT with one partition starting one
cluster into the disk and ending on the last whole cluster before the end, as
libploop 1.x labels its disks (``parted mklabel gpt mkpart primary``), then an
empty ext4 filesystem in it (``mkfs.ext4`` with 256-byte inodes, which hold
times up to 2446 with nanoseconds; smaller ext4s default to 128-byte inodes
that end in 2038), which is mounted through a loop device and filled by
:func:`vz7native.treecopy.copy_tree`: the image holds exactly the source tree,
every attribute included. ``new_ct_image`` puts that disk straight into a
new ploop image (:class:`~vz7native.image.writer.InPlaceImage`), where it is
filled in place; ``make_ct_disk`` fills it from a directory and seals it.

``mkfs.ext4 -d`` (e2fsprogs 1.47) is not used: it moves times after 2038 into
the past, turns hard-linked symlinks into separate ones, and takes minutes on
a directory of 100,000 entries.

The GPT is written by ``parted``, the tool libploop 1.x itself runs for this:
the layout matches libploop's by construction, and our own GPT reader is
tested against a table it did not write. parted is a dependency of libploop
on every distribution that ships it.
"""
import contextlib
import errno
import os
import shutil
import subprocess
import tempfile

from vz7native.image.descriptor import SECTOR_SIZE
from vz7native.paths import fspath, show
from vz7native.image.errors import ImageError, ToolError, TreeDoesNotFit
from vz7native.image.writer import (DEFAULT_CLUSTER_SIZE, READ_CHUNK, InPlaceImage,
                                    check_cluster_size, data_ranges)

FS_BLOCK_SIZE = 4096
# Enough for the GPT, one cluster of alignment and a small ext4 with a journal.
MIN_DISK_SIZE = 16 << 20
# Inodes large enough for the extra time bits (dates past 2038, nanoseconds).
INODE_SIZE = 256
# ext4 features left out: metadata_csum, as on VZ7 hosts, whose mkfs (e2fsprogs
# 1.42) does not know it; it would also checksum every inode and block the copy
# writes.
MKFS_FEATURES = "^metadata_csum"
# The filesystem is filled for the image file to be made of it, not to survive a
# crash on the way: no journal (noload: the fresh, clean journal stays as mkfs made
# it) and no cache flushes (each would fsync the scratch disk through the loop).
# Blocks allocated as they are written (nodelalloc) lie closer together than
# those allocated at the unmount: fewer clusters for the image to hold. The
# inode tables mkfs left uninitialised stay so (noinit_itable): the kernel would
# zero them in the background, allocating clusters that hold nothing.
# restore=ct fills its new disk with the same options.
FILL_OPTIONS = "rw,nosuid,nodev,noexec,noload,barrier=0,nodelalloc,noinit_itable"
# How long the kernel may take to let go of the loop device after the unmount.
LOOP_RELEASE_TIMEOUT = 10.0
_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class _Tool(object):
    """An external program, started at once; :meth:`finish` waits for it and
    raises ToolError if it failed, :meth:`wait` only waits."""

    def __init__(self, argv):
        tool = shutil.which(argv[0], path=os.environ.get("PATH", "") + ":" + _TOOL_PATH)
        if tool is None:
            raise ToolError("%s is not installed (Debian: %s)" % (
                argv[0], {"parted": "parted", "mkfs.ext4": "e2fsprogs"}.get(argv[0], argv[0])))
        self.argv = argv
        self._proc = subprocess.Popen([tool] + argv[1:], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait(self):
        return self._proc.communicate()[0]

    def finish(self):
        output = self.wait()
        if self._proc.returncode != 0:
            raise ToolError("%s failed (exit %d): %s" % (
                " ".join(os.fsdecode(a) for a in self.argv), self._proc.returncode,
                output.decode("utf-8", "replace").strip()))


def partition_layout(size, cluster_size=DEFAULT_CLUSTER_SIZE):
    """(first sector, last sector) of the partition libploop 1.x makes on a disk
    of ``size`` bytes: from one cluster in to the last whole cluster before the
    end, exclusive (libploop 7.x ends it one sector later)."""
    cluster = cluster_size // SECTOR_SIZE
    sectors = size // SECTOR_SIZE
    end = (sectors - cluster) // cluster * cluster
    return cluster, end - 1


def _check_disk_args(source_dir, size, cluster_size):
    """``source_dir`` as bytes (None stays None); ValueError or ImageError for bad ones."""
    check_cluster_size(cluster_size)
    if size < MIN_DISK_SIZE or size % cluster_size:
        raise ValueError("size must be a multiple of the cluster size (%d) and at least %d "
                         "bytes, not %r" % (cluster_size, MIN_DISK_SIZE, size))
    if source_dir is None:
        return None
    source_dir = fspath(source_dir)
    if not os.path.isdir(source_dir):
        raise ImageError("%s is not a directory" % show(source_dir))
    return source_dir


def make_ct_raw_disk(source_dir, size, raw_path, cluster_size=DEFAULT_CLUSTER_SIZE):
    """Write the raw disk ``raw_path`` (must not exist; sparse) of ``size`` bytes.

    GPT with one Linux partition at one cluster in (see :func:`partition_layout`),
    ext4 (4 KiB blocks) in it filled from ``source_dir``. ``source_dir`` None
    makes an empty filesystem with its inode tables and journal left
    uninitialised: the new sparse file reads as zeros already, so a disk of
    hundreds of GiB costs a few MiB until it is filled (mount it with
    ``noinit_itable`` to keep the kernel from zeroing the tables itself). Returns
    the :class:`~vz7native.image.gpt.Partition` (as parted wrote it).
    """
    from vz7native.image.gpt import find_partition
    from vz7native.image.reader import RawDiskFile

    source_dir = _check_disk_args(source_dir, size, cluster_size)
    raw_path = fspath(raw_path)
    first, last = partition_layout(size, cluster_size)
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                 getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        offset, length = first * SECTOR_SIZE, (last + 1 - first) * SECTOR_SIZE
        # Side by side: parted writes the GPT at both ends of the disk, mkfs.ext4
        # and the copy only inside the partition.
        parted = _Tool(["parted", "-s", raw_path, "mklabel", "gpt", "mkpart", "primary",
                        "%db" % offset, "%db" % (offset + length - 1)])
        try:
            _Tool(["mkfs.ext4", "-F", "-q", "-b", str(FS_BLOCK_SIZE), "-I", str(INODE_SIZE),
                   "-O", MKFS_FEATURES, "-e", "remount-ro", "-E",
                   # a new sparse file reads as zeros: nothing to initialise
                   "offset=%d,lazy_itable_init=1,lazy_journal_init=1" % offset,
                   raw_path, str(length // FS_BLOCK_SIZE)]).finish()
            if source_dir is not None:
                _fill(raw_path, offset, length, source_dir)
        except BaseException:
            parted.wait()
            raise
        parted.finish()
        with RawDiskFile(raw_path) as disk:
            partition = find_partition(disk)
        if (partition.offset, partition.size) != (offset, length):
            raise ToolError("parted made the partition bytes %d..%d, not %d..%d" % (
                partition.offset, partition.offset + partition.size, offset, offset + length))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(raw_path)
        raise
    return partition


def _fill(raw_path, offset, length, source_dir):
    """Copy ``source_dir`` into the ext4 at bytes ``offset``.. ``offset + length``
    of file ``raw_path``, mounted through a loop device on a scratch directory beside it;
    unmounted and detached on every path (the device clears itself once the
    mount and our fd are gone)."""
    from vz7native import devices, treecopy   # pyudev and the walker: not for the daemon

    mount_point = tempfile.mkdtemp(prefix=b".vz7n-ct-fill-", dir=os.path.dirname(raw_path))
    try:
        backing = os.path.realpath(raw_path)
        node, fd = devices.attach_loop(backing, offset, length, direct_io=False,
                                       read_only=False)
        try:
            devnum = os.fstat(fd).st_rdev
            devices.mount(node, mount_point, "ext4", FILL_OPTIONS)
        finally:
            os.close(fd)
        try:
            treecopy.copy_tree(source_dir, mount_point)
        except treecopy.CopyError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TreeDoesNotFit("%s does not fit into a %d-byte filesystem: %s" % (
                    show(source_dir), length, e)) from e
            raise ImageError(str(e)) from e
        finally:
            devices.umount(mount_point)
        if not devices.wait_loop_released(devnum, backing, LOOP_RELEASE_TIMEOUT):
            devices.detach_loop(node)
    except devices.DeviceError as e:
        raise ToolError("cannot fill %s: %s" % (show(raw_path), e)) from e
    finally:
        with contextlib.suppress(OSError):    # still mounted only if the unmount failed
            os.rmdir(mount_point)


def new_ct_image(size, target_dir, version=1, cluster_size=DEFAULT_CLUSTER_SIZE,
                 image_name=b"root.hds"):
    """A new ploop image in ``target_dir`` holding an empty container disk (the
    GPT and ext4 of :func:`make_ct_raw_disk`), to be filled in place.

    Returns ``(image, partition)``: an :class:`~vz7native.image.writer.InPlaceImage`
    (fill the ext4 at bytes ``image.data_offset + partition.offset`` of
    ``image.path``, ``partition.size`` long, then ``image.seal()``) and the
    :class:`~vz7native.image.gpt.Partition`. The GPT and the empty filesystem
    (a few MiB, whatever the size) are made in a scratch raw disk beside the
    image and copied in.
    """
    _check_disk_args(None, size, cluster_size)
    new_image = InPlaceImage(target_dir, size, version, cluster_size, image_name)
    try:
        scratch = tempfile.mkdtemp(prefix=b".vz7n-ct-disk-", dir=os.path.dirname(new_image.path))
        try:
            raw = os.path.join(scratch, b"disk.raw")
            partition = make_ct_raw_disk(None, size, raw, cluster_size)
            _copy_data(raw, new_image.path, new_image.data_offset, size)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        new_image.remove()
        raise
    return new_image, partition


def _copy_data(source, target, offset, size):
    """The data of sparse file ``source`` (holes skipped) into ``target`` at
    ``offset`` onwards. (Not treecopy.copy_data: restore=ct runs this inside the
    file daemon, which must not load the walker; and that one keeps offsets.)"""
    source_fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        target_fd = os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            for start, end in data_ranges(source_fd, size):
                while start < end:
                    data = os.pread(source_fd, min(end - start, READ_CHUNK), start)
                    if not data:
                        break
                    os.pwrite(target_fd, data, offset + start)  # a regular file: whole
                    start += len(data)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def make_ct_disk(source_dir, size, target_dir, version=1, cluster_size=DEFAULT_CLUSTER_SIZE,
                 image_name=b"root.hds"):
    """A ploop image in ``target_dir`` of a container disk filled from ``source_dir``.

    :func:`new_ct_image`, its ext4 filled by :func:`vz7native.treecopy.copy_tree`
    through a loop device on the delta file itself, then sealed (format
    ``version``). Returns the DiskDescriptor.xml path; nothing is left on failure.
    """
    source_dir = _check_disk_args(source_dir, size, cluster_size)
    new_image, partition = new_ct_image(size, target_dir, version, cluster_size, image_name)
    try:
        if source_dir is not None:
            _fill(new_image.path, new_image.data_offset + partition.offset, partition.size,
                  source_dir)
        return new_image.seal()
    except BaseException:
        new_image.remove()
        raise
