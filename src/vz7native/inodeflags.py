"""Inode flags (what ``chattr`` sets): read and written through an open fd.

Immutable and append-only are the two that matter for a restore: a file that
has them can no longer be written, linked, renamed or have its attributes
changed, so a restore sets them after everything else.
"""
import fcntl
import os
import struct

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
# The inode flags chattr sets (s u c S i a d A j t D T P); others (extents,
# inline data, ...) belong to the filesystem and are left as it makes them.
SETTABLE_FLAGS = 0x000000FF | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x20000000
IMMUTABLE_FL = 0x10
APPEND_FL = 0x20
_LONG = struct.Struct("l")


def read_flags(fd):
    """The inode flags of the file open at ``fd``; -1 where the filesystem has none."""
    try:
        return _LONG.unpack(fcntl.ioctl(fd, FS_IOC_GETFLAGS, _LONG.pack(0)))[0] & 0xFFFFFFFF
    except OSError:
        return -1


def write_flags(fd, flags):
    """Set the chattr flags ``flags`` (others kept as the filesystem has them)."""
    current = read_flags(fd)
    if current < 0:
        current = 0
    wanted = (current & ~SETTABLE_FLAGS) | (flags & SETTABLE_FLAGS)
    if wanted != current:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, _LONG.pack(wanted))


def path_flags(path, is_dir):
    """The inode flags of a regular file or directory at ``path`` (never followed)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if is_dir:
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except OSError:
        return -1
    try:
        return read_flags(fd)
    finally:
        os.close(fd)
