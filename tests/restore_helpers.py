"""What the restore tests share: a sandbox host whose container images hold every
attribute a restore must give back, a stand-in ``prlctl``, exact tree pictures.

* :func:`edit_image` changes a container's ploop image in place (the image read
  into a sparse raw disk, loop-mounted read-write, changed, written back with
  ``write_clusters``): the sandbox builds its images with ``mkfs.ext4 -d``, which
  keeps whole seconds only and no inode flags;
* :func:`add_exact_entries` is the change that adds what ``mkfs -d`` cannot
  carry: nanosecond times (directories and the root too), times before 1970 and
  after 2106, a uid above 2^31, immutable and append-only files and an
  immutable directory, a sparse file whose data blocks are partly zeros, 20 MiB
  of data;
* :func:`exact` describes a tree as :func:`ct_tree.describe` does plus
  nanosecond atime and mtime, inode flags and allocated blocks;
  :func:`differences` compares two such pictures (allocation within one Bareos
  block);
* :func:`stand_in_prlctl` writes a ``prlctl`` that registers a container in a
  sandbox host the way prlctl does on a real one (the ``/etc/vz/conf`` and
  ``/etc/vz/names`` links).
"""
import contextlib
import os
import stat
import subprocess

from ct_tree import describe, picture_differences
from vz7native import image, mount, procfs
from vz7native.inodeflags import APPEND_FL, IMMUTABLE_FL, read_flags, write_flags

BAREOS_BLOCK = 256 << 10
NS = 1000000000
NS_TIMES = (1234567890 * NS + 123456789, 1300000000 * NS + 987654321)
OLD_TIMES = (-2000000000 * NS + 111111111, -1000000000 * NS + 222222222)     # 1906, 1938
FUTURE_TIMES = ((1 << 32) * NS + 333333333, ((1 << 32) + 86400) * NS + 444444444)  # 2106+
BIG_UID = 3000000000
PRLCTL = """#!/bin/sh
# prlctl register <private> --preserve-uuid, as it looks in sandbox hosts: the
# host roots it serves are listed in prlctl.roots beside it
set -e
private="$2"
uuid=$(basename "$private")
while read -r root; do
    [ -d "$root$private" ] || continue
    name=$(sed -n 's/^NAME="\\(.*\\)"$/\\1/p' "$root$private/ve.conf")
    ln -s "$private/ve.conf" "$root/etc/vz/conf/$uuid.conf"
    [ -z "$name" ] || ln -s "/etc/vz/conf/$uuid.conf" "$root/etc/vz/names/$name"
    echo "The CT has been successfully registered."
    exit 0
done < "$(dirname "$0")/prlctl.roots"
echo "no sandbox host has $private" >&2
exit 1
"""


def stand_in_prlctl(bin_dir, host_root):
    """A stand-in prlctl in ``bin_dir`` that (also) serves the sandbox ``host_root``."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "prlctl")
    with open(path, "w") as f:
        f.write(PRLCTL)
    os.chmod(path, 0o755)
    with open(os.path.join(bin_dir, "prlctl.roots"), "a") as f:
        f.write(os.path.abspath(os.fsdecode(host_root)) + "\n")
    return path


@contextlib.contextmanager
def loop_mounted(raw, offset, size, target, readonly=False):
    options = "loop,offset=%d,sizelimit=%d%s" % (offset, size, ",ro,noload" if readonly else "")
    subprocess.check_call(["mount", "-t", "ext4", "-o", options, os.fsdecode(raw),
                           os.fsdecode(target)])
    try:
        yield target
    finally:
        subprocess.check_call(["umount", os.fsdecode(target)])


def edit_image(dd, scratch, change):
    """Apply ``change(mount point)`` to the filesystem of the (unmounted) image ``dd``."""
    os.makedirs(scratch, exist_ok=True)
    raw = os.path.join(scratch, "disk.raw")
    target = os.path.join(scratch, "mnt")
    os.makedirs(target, exist_ok=True)
    with image.open_virtual_disk(dd) as vdisk:
        cluster = vdisk.cluster_size
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, vdisk.size)
            for index in range(-(-vdisk.size // cluster)):
                if vdisk.locate(index)[0] is not None:
                    os.pwrite(fd, vdisk.read(index * cluster, cluster), index * cluster)
        finally:
            os.close(fd)
        partition = image.find_partition(vdisk)
    with loop_mounted(raw, partition.offset, partition.size, target):
        change(os.fsencode(target))
    image.write_clusters(dd, raw)
    os.unlink(raw)


def _set_flags(path, flags, directory=False):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else 0))
    try:
        write_flags(fd, flags)
    finally:
        os.close(fd)


def add_exact_entries(root):
    """What mkfs -d cannot carry (see the module docstring), under ``root/exact``."""
    j = lambda *parts: os.path.join(root, b"exact", *parts)  # noqa: E731
    os.mkdir(j())
    for name, times in ((b"ns", NS_TIMES), (b"old", OLD_TIMES), (b"future", FUTURE_TIMES)):
        with open(j(name), "wb") as f:
            f.write(name * 100)
        os.utime(j(name), ns=times)
    os.chown(j(b"ns"), BIG_UID, BIG_UID + 1)
    os.utime(j(b"ns"), ns=NS_TIMES)
    with open(j(b"big"), "wb") as f:
        f.write(os.urandom(20 << 20))
    with open(j(b"holes"), "wb") as f:
        f.write(os.urandom(4096))
        f.seek(1 << 20)
        # Bareos sends this 72 KiB run as data blocks: a zero run inside them
        f.write(os.urandom(4096) + bytes(60 << 10) + os.urandom(8192))
        f.truncate(8 << 20)
    os.symlink(b"ns", j(b"ns.link"))
    os.utime(j(b"ns.link"), ns=NS_TIMES, follow_symlinks=False)
    os.mkdir(j(b"frozen"))
    with open(j(b"frozen", b"inside"), "wb") as f:
        f.write(b"cannot be changed\n")
    for name in (b"immutable", b"append-only"):
        with open(j(name), "wb") as f:
            f.write(name + b"\n")
    for path in (j(b"frozen", b"inside"), j(b"immutable"), j(b"append-only"), j(b"frozen"),
                 j(b"big"), j(b"holes")):
        os.utime(path, ns=NS_TIMES)
    os.utime(j(), ns=OLD_TIMES)
    os.utime(root, ns=NS_TIMES)
    _set_flags(j(b"immutable"), IMMUTABLE_FL)
    _set_flags(j(b"append-only"), APPEND_FL)
    _set_flags(j(b"frozen"), IMMUTABLE_FL, directory=True)


def exact(root, ignore=(), atime=True):
    """:func:`ct_tree.describe` plus ns times (the root's too), inode flags and
    allocated blocks of every entry under ``root``. ``atime`` False leaves atimes
    out: reading a tree on a read-write mount changes them (relatime)."""
    root = os.fsencode(root)
    entries = describe(root, ignore)
    for rel, props in entries.items():
        path = os.path.normpath(os.path.join(root, rel))
        st = os.lstat(path)
        props["mtime"] = st.st_mtime_ns
        if atime:
            props["atime"] = st.st_atime_ns
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                props["flags"] = read_flags(fd) & (IMMUTABLE_FL | APPEND_FL | 0xFF)
            finally:
                os.close(fd)
        if stat.S_ISREG(st.st_mode):
            props["blocks"] = st.st_blocks
    return entries


def _within_a_block(key, want, got):
    return (key == "blocks" and want is not None and got is not None
            and abs(want - got) * 512 <= BAREOS_BLOCK)


def differences(want, got):
    """Every difference between two :func:`exact` pictures (allocated blocks
    within one Bareos block of each other count as the same), as strings."""
    return picture_differences(want, got, _within_a_block)


def assert_exact(want, got):
    problems = differences(want, got)
    assert not problems, "%d difference(s):\n  %s" % (len(problems), "\n  ".join(problems[:60]))


@contextlib.contextmanager
def image_view(dd, target):
    """The filesystem of the image ``dd`` mounted read-only at ``target``."""
    os.makedirs(target, exist_ok=True)
    with mount.mount_readonly(dd, target, backend="portable") as view:
        yield os.fsencode(view.target)


def picture_of_image(dd, target, ignore=()):
    with image_view(dd, target) as root:
        return exact(root, ignore)


def mounts_under(path):
    prefix = os.path.realpath(os.fsencode(path)) + b"/"
    return sorted(m.mount_point for m in procfs.mounts() if m.mount_point.startswith(prefix))


def host_state(host_root):
    """What a refused restore must leave as it was: the containers' configuration
    links, private areas, root directories and lock-free staging, and the mounts."""
    root = os.fsencode(host_root)
    listing = {}
    for d in (b"etc/vz/conf", b"etc/vz/names", b"vz/private", b"vz/root"):
        listing[d] = sorted(os.listdir(os.path.join(root, d)))
    listing[b"mounts"] = mounts_under(root)
    return listing
