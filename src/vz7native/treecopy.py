"""Copy a directory tree into another filesystem exactly, as root.

    >>> from vz7native.treecopy import copy_tree
    >>> copy_tree(b"/var/tmp/ct-tree", b"/mnt/fresh-ext4")

What "exactly" covers, for every entry: its kind (regular file, directory,
symlink, FIFO, socket, character and block device with its device number),
owner, mode (setuid/setgid/sticky included), access and modification times in
nanoseconds (directories get theirs after everything inside them is written),
extended attributes (``user.*``, ``trusted.*``, ``security.*`` such as file
capabilities, and POSIX ACLs, which are the ``system.posix_acl_access`` and
``system.posix_acl_default`` attributes), hard links of every kind of entry
(symlinks and FIFOs too), holes (a sparse file stays sparse: only its data
ranges are written) and the inode flags of :data:`COPIED_FLAGS` (immutable,
append-only, ...), set last of all because they forbid the other changes.
The top directory's own attributes are copied onto ``target`` as well.

How: the walker (:func:`vz7native.walk.walk`) lists the source; every entry is
read and written relative to the open descriptors of its source and target
directories, so names may hold any byte and paths may be longer than
``PATH_MAX``. Calls that take no descriptor (the xattr calls on symlinks and
special files) go through ``/proc/self/fd/N/name``; ``/proc`` must be mounted.
Regular files are read with ``O_NOATIME`` where allowed, so the source keeps
its access times. Nothing in the source is followed or opened except regular
files and directories (a device node is never opened).

Anything that cannot be copied exactly raises :class:`CopyError` naming the
entry; what was copied until then stays in ``target``.
"""
import errno
import os
import stat

from vz7native.image.writer import data_ranges
from vz7native.inodeflags import APPEND_FL, IMMUTABLE_FL, read_flags, write_flags
from vz7native.paths import fspath, show
from vz7native.walk import walk

# <linux/fs.h> inode flags a copy carries over: those chattr sets and every
# Linux filesystem with flags keeps. The others (extents, inline data,
# encryption, ...) describe how one filesystem stores the file.
FS_SYNC_FL = 0x8
FS_NODUMP_FL = 0x40
FS_NOATIME_FL = 0x80
FS_DIRSYNC_FL = 0x10000
COPIED_FLAGS = (FS_SYNC_FL | IMMUTABLE_FL | APPEND_FL | FS_NODUMP_FL | FS_NOATIME_FL |
                FS_DIRSYNC_FL)

COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CopyError(OSError):
    """An entry could not be copied exactly. ``errno`` is the cause's, ``path`` the
    entry's path relative to the source top (bytes; ``b""`` for the top)."""

    def __init__(self, code, message, path):
        super(CopyError, self).__init__(code, message)
        self.path = path


def _proc(dir_fd, name):
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


class _Dir(object):
    """A directory being copied: open on both sides, finished once its entries are.
    ``plain``: made by the copy in a plain directory, so it has no setgid bit
    while it is filled (one that was there already, or made in one that has the
    bit, may have it and pass its group on); ``owner_as_made``: it got the owner
    of its source when it was made (see :func:`_owned_as_made`)."""

    __slots__ = ("rel", "src", "dst", "st", "plain", "owner_as_made")

    def __init__(self, rel, src, dst, st, plain, owner_as_made):
        self.rel, self.src, self.dst, self.st = rel, src, dst, st
        self.plain, self.owner_as_made = plain, owner_as_made

    def close(self):
        for fd in (self.src, self.dst):
            if fd >= 0:
                os.close(fd)
        self.src = self.dst = -1


def _get_flags(fd):
    """The source's inode flags (0 where its filesystem keeps none)."""
    return max(read_flags(fd), 0)

def _copy_xattrs(src_fd, dst_fd, name):
    """Every xattr of the source entry onto the target one: through their own
    descriptors when ``name`` is None, else ``name`` in the two directories."""
    if name is None:
        src, dst, follow = src_fd, dst_fd, True
    else:
        src, dst, follow = _proc(src_fd, name), _proc(dst_fd, name), False
    for key in os.listxattr(src, follow_symlinks=follow):
        os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=follow),
                    follow_symlinks=follow)


def _owned_as_made(st, parent):
    """Whether an entry this process creates in ``parent`` gets the owner of ``st``
    anyway (in a plain directory it gets our own): no chown needed."""
    return parent.plain and st.st_uid == os.geteuid() and st.st_gid == os.getegid()


def _set_inode(fd, st, owner_as_made):
    """Owner (unless ``owner_as_made``), then mode: chown first, since it clears
    setuid bits and file capabilities (the caller's xattrs come after both)."""
    if not owner_as_made:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def copy_data(src, dst, st):
    """The data of the file open at ``src`` (of stat ``st``) into the new file open at
    ``dst``: its data ranges only when it has holes."""
    size = st.st_size
    sparse = st.st_blocks * 512 < size
    pos = 0
    for start, end in data_ranges(src, size) if sparse else ((0, size),):
        pos = start
        while pos < end:
            data = os.pread(src, min(COPY_CHUNK, end - pos), pos)
            if not data:
                raise OSError(errno.EIO, "the file shrank while it was copied")
            view = memoryview(data)
            while view:
                written = os.pwrite(dst, view, pos)
                view = view[written:]
                pos += written
    if pos < size:      # a hole at the end
        os.ftruncate(dst, size)


def _open_source_file(dir_fd, name):
    if _NOATIME:
        try:
            return os.open(name, _READ_FLAGS | _NOATIME, dir_fd=dir_fd)
        except PermissionError:     # O_NOATIME needs ownership or CAP_FOWNER
            pass
    return os.open(name, _READ_FLAGS, dir_fd=dir_fd)


def _copy_file(parent, name, st):
    """A regular file: data, owner, mode, xattrs, times. Returns its copied flags."""
    src = _open_source_file(parent.src, name)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(errno.ESTALE, "replaced by something else during the copy")
        dst = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=parent.dst)
        try:
            copy_data(src, dst, st)   # writes drop capabilities: data first
            _set_inode(dst, st, _owned_as_made(st, parent))
            _copy_xattrs(src, dst, None)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
        return _get_flags(src) & COPIED_FLAGS
    finally:
        os.close(src)


def _copy_special(parent, name, st):
    """A symlink, FIFO, socket or device node: made, then owner, mode, xattrs, times."""
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=parent.src), name, dir_fd=parent.dst)
    else:
        os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=parent.dst)
    if not _owned_as_made(st, parent):
        os.chown(name, st.st_uid, st.st_gid, dir_fd=parent.dst, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=parent.dst)
    _copy_xattrs(parent.src, parent.dst, name)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent.dst,
             follow_symlinks=False)


def _enter_dir(parent, name, rel, st):
    created = True
    try:
        os.mkdir(name, 0o700, dir_fd=parent.dst)
    except FileExistsError:
        created = False     # e.g. lost+found of a fresh ext4: taken over (not if no dir)
    owner_as_made = created and _owned_as_made(st, parent)
    src = os.open(name, _DIR_FLAGS, dir_fd=parent.src)
    try:
        dst = os.open(name, _DIR_FLAGS, dir_fd=parent.dst)
    except BaseException:
        os.close(src)
        raise
    return _Dir(rel, src, dst, st, created and parent.plain, owner_as_made)


def _finish_dir(directory, flags):
    """A directory's own attributes, once everything inside it is there."""
    _set_inode(directory.dst, directory.st, directory.owner_as_made)
    _copy_xattrs(directory.src, directory.dst, None)
    os.utime(directory.dst, ns=(directory.st.st_atime_ns, directory.st.st_mtime_ns))
    copied = _get_flags(directory.src) & COPIED_FLAGS
    if copied:
        flags.append((directory.rel, copied))


def _open_dir_below(root_fd, rel):
    """Open directory ``rel`` below the directory ``root_fd`` one name at a time
    (no symlink followed, no PATH_MAX limit)."""
    fd = os.dup(root_fd)
    for name in rel.split(b"/") if rel else ():
        try:
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def _link(stack, root_fd, first, parent, name):
    """Hard-link ``name`` in ``parent`` to the copy of ``first`` (relative path)."""
    first_dir, first_name = os.path.split(first)
    for directory in reversed(stack):
        if directory.rel == first_dir:
            os.link(first_name, name, src_dir_fd=directory.dst, dst_dir_fd=parent.dst,
                    follow_symlinks=False)
            return
    fd = _open_dir_below(root_fd, first_dir)
    try:
        os.link(first_name, name, src_dir_fd=fd, dst_dir_fd=parent.dst, follow_symlinks=False)
    finally:
        os.close(fd)


def _set_flags(root_fd, flags):
    """Inode flags, last: immutable and append-only forbid everything done before."""
    for rel, value in flags:
        parent, name = os.path.split(rel)
        dir_fd = _open_dir_below(root_fd, parent)
        try:
            fd = os.open(name or b".", _READ_FLAGS, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            write_flags(fd, value)
        except OSError as e:
            raise CopyError(e.errno, "cannot set inode flags %#x on %s: %s"
                            % (value, show(rel), e.strerror), rel)
        finally:
            os.close(fd)


def copy_tree(source, target):
    """Copy everything below the directory ``source`` into the existing directory
    ``target`` (normally the empty root of a freshly made filesystem), exactly
    (see the module docstring), and give ``target`` the attributes of ``source``.

    Entries that exist in ``target`` already are an error, except directories,
    which are taken over (a fresh ext4's ``lost+found``). Needs root.
    """
    source = os.path.abspath(fspath(source))
    target = os.path.abspath(fspath(target))
    stack = []
    flags = []
    links = {}
    rel = b""
    try:
        root_fd = os.open(target, _DIR_FLAGS)
    except OSError as e:
        raise CopyError(e.errno, "cannot open the target %s: %s" % (show(target), e.strerror),
                        target)
    try:
        for entry in walk(source, order="pre"):
            rel, st = entry.relpath, entry.stat
            if not stack:
                stack.append(_Dir(b"", os.open(source, _DIR_FLAGS), os.dup(root_fd), st,
                                  False, False))
                continue
            parent_rel, name = os.path.split(rel)
            while stack[-1].rel != parent_rel:
                directory = stack.pop()
                try:
                    _finish_dir(directory, flags)
                finally:
                    directory.close()
            parent = stack[-1]
            if stat.S_ISDIR(st.st_mode):
                stack.append(_enter_dir(parent, name, rel, st))
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                _link(stack, root_fd, links[key], parent, name)
                continue
            if stat.S_ISREG(st.st_mode):
                copied = _copy_file(parent, name, st)
                if copied:
                    flags.append((rel, copied))
            else:
                _copy_special(parent, name, st)
            if st.st_nlink > 1:
                links[key] = rel
        while stack:
            directory = stack.pop()
            rel = directory.rel
            try:
                _finish_dir(directory, flags)
            finally:
                directory.close()
        _set_flags(root_fd, flags)
    except CopyError:
        raise
    except OSError as e:
        raise CopyError(e.errno, "cannot copy %s from %s into %s: %s" % (
            show(rel) or ".", show(source), show(target), e.strerror or e), rel) from e
    finally:
        for directory in stack:
            directory.close()
        os.close(root_fd)
