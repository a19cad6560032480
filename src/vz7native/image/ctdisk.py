"""Build container disks from a directory tree: GPT + ext4, as libploop lays them out.

``make_ct_raw_disk`` writes a raw disk: a GPT with one partition starting one
cluster into the disk and ending on the last whole cluster before the end, as
libploop 1.x labels its disks (``parted mklabel gpt mkpart primary``), then an
ext4 filesystem in it filled from the source directory by ``mkfs.ext4 -d``,
which keeps owners, modes, hard links, device nodes, FIFOs, symlinks, xattrs
and times (whole seconds). ``make_ct_disk`` then imports that as a ploop image.

The GPT is written by ``parted``, the tool libploop 1.x itself runs for this:
the layout matches libploop's by construction, and our own GPT reader is
tested against a table it did not write. parted is a dependency of libploop
on every distribution that ships it.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile

from vz7native.image.descriptor import SECTOR_SIZE
from vz7native.paths import fspath, show
from vz7native.image.errors import ImageError, ToolError
from vz7native.image.writer import DEFAULT_CLUSTER_SIZE, check_cluster_size, import_raw

FS_BLOCK_SIZE = 4096
# Enough for the GPT, one cluster of alignment and a small ext4 with a journal.
MIN_DISK_SIZE = 16 << 20
_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _run(argv):
    tool = shutil.which(argv[0], path=os.environ.get("PATH", "") + ":" + _TOOL_PATH)
    if tool is None:
        raise ToolError("%s is not installed (Debian: %s)" % (
            argv[0], {"parted": "parted", "mkfs.ext4": "e2fsprogs"}.get(argv[0], argv[0])))
    proc = subprocess.Popen([tool] + argv[1:], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate()[0]
    if proc.returncode != 0:
        raise ToolError("%s failed (exit %d): %s" % (
            " ".join(os.fsdecode(a) for a in argv), proc.returncode,
            output.decode("utf-8", "replace").strip()))


def partition_layout(size, cluster_size=DEFAULT_CLUSTER_SIZE):
    """(first sector, last sector) of the partition libploop 1.x makes on a disk
    of ``size`` bytes: from one cluster in to the last whole cluster before the
    end, exclusive (libploop 7.x ends it one sector later)."""
    cluster = cluster_size // SECTOR_SIZE
    sectors = size // SECTOR_SIZE
    end = (sectors - cluster) // cluster * cluster
    return cluster, end - 1


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

    check_cluster_size(cluster_size)
    raw_path = fspath(raw_path)
    if source_dir is not None:
        source_dir = fspath(source_dir)
    if source_dir is not None and not os.path.isdir(source_dir):
        raise ImageError("%s is not a directory" % show(source_dir))
    if size < MIN_DISK_SIZE or size % cluster_size:
        raise ValueError("size must be a multiple of the cluster size (%d) and at least %d "
                         "bytes, not %r" % (cluster_size, MIN_DISK_SIZE, size))
    first, last = partition_layout(size, cluster_size)
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                 getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        _run(["parted", "-s", raw_path, "mklabel", "gpt", "mkpart", "primary",
              "%db" % (first * SECTOR_SIZE), "%db" % ((last + 1) * SECTOR_SIZE - 1)])
        with RawDiskFile(raw_path) as disk:
            partition = find_partition(disk)
        if partition.offset != first * SECTOR_SIZE:
            raise ToolError("parted put the partition at byte %d, not %d" % (
                partition.offset, first * SECTOR_SIZE))
        extended = "offset=%d" % partition.offset
        fill = ["-d", source_dir]
        if source_dir is None:
            extended += ",lazy_itable_init=1,lazy_journal_init=1"
            fill = []
        _run(["mkfs.ext4", "-F", "-q", "-b", str(FS_BLOCK_SIZE), "-e", "remount-ro",
              "-E", extended] + fill + [raw_path, str(partition.size // FS_BLOCK_SIZE)])
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(raw_path)
        raise
    return partition


def make_ct_disk(source_dir, size, target_dir, version=1, cluster_size=DEFAULT_CLUSTER_SIZE,
                 image_name=b"root.hds"):
    """A ploop image in ``target_dir`` of a container disk filled from ``source_dir``.

    :func:`make_ct_raw_disk` into a temporary file beside the image, then
    :func:`~vz7native.image.writer.import_raw` (format ``version``). Returns
    the DiskDescriptor.xml path.
    """
    target_dir = os.path.abspath(fspath(target_dir))
    parent = os.path.dirname(target_dir)
    scratch = tempfile.mkdtemp(prefix=b".vz7n-ct-disk-", dir=parent)
    try:
        raw = os.path.join(scratch, b"disk.raw")
        make_ct_raw_disk(source_dir, size, raw, cluster_size)
        return import_raw(raw, target_dir, version=version, cluster_size=cluster_size,
                          image_name=image_name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
