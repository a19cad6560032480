"""Paths inside a root directory, resolved as if that directory were ``/``.

A host root (``/`` or a sandbox tree) and a container root are both directories
whose absolute symlinks mean "from this root": ``/etc/vz/conf/101.conf`` links to
``/vz/private/101/ve.conf`` of the same host, a container's ``/var/run`` links to
its own ``/run``. Everything here walks from an open directory fd, one component
at a time: directories are opened with ``O_NOFOLLOW`` relative to their parent,
symlinks are read with ``readlink(dir_fd=...)`` and followed by hand, an absolute
target restarts at the root and ``..`` never climbs above it (what ``chroot``
gives). Nothing can be reached outside the root, even if the tree changes while it
is walked: a directory swapped for a symlink makes the next ``O_NOFOLLOW`` open
fail instead of being followed.

Locations are lists of names (bytes) from the root, with every symlink resolved.
"""
import errno
import os
import stat

MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def components(path):
    """The names of a path, without empty and ``.`` parts (``..`` is kept)."""
    return [part for part in path.split(b"/") if part not in (b"", b".")]


def open_root(root):
    """An fd on the directory ``root`` (bytes or str), for the functions below."""
    return os.open(os.fsencode(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(root_fd, names):
    """A new fd on the directory at the resolved location ``names``."""
    fd = os.dup(root_fd)
    try:
        for name in names:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat(root_fd, names):
    """``lstat`` of the entry at ``names`` (the root itself for ``[]``)."""
    if not names:
        return os.fstat(root_fd)
    parent = open_dir(root_fd, names[:-1])
    try:
        return os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def resolve(root_fd, start, path, follow_last=True):
    """The location of ``path`` (bytes) taken from location ``start``.

    Symlinks are followed inside the root; the last component is followed only if
    ``follow_last``. The last component need not exist; every earlier one must be a
    directory (OSError otherwise: ENOENT, ENOTDIR, ELOOP after 40 symlinks).
    """
    names = list(start)
    pending = list(reversed(components(path)))
    if path.startswith(b"/"):
        names = []
    hops = 0
    while pending:
        name = pending.pop()
        if name == b"..":
            del names[-1:]
            continue
        parent = open_dir(root_fd, names)
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                if pending:
                    raise
                return names + [name]
            follow = stat.S_ISLNK(st.st_mode) and (pending or follow_last)
            target = os.readlink(name, dir_fd=parent) if follow else None
        finally:
            os.close(parent)
        if target is not None:
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
            if target.startswith(b"/"):
                names = []
            pending.extend(reversed(components(target)))
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
        names.append(name)
    return names


def joined(names):
    """The absolute path (bytes) of a location."""
    return b"/" + b"/".join(names)


def realpath(root, path):
    """``path`` inside ``root`` with every symlink resolved there (absolute, bytes,
    in the root's view). A missing last component is kept as it is."""
    root_fd = open_root(root)
    try:
        return joined(resolve(root_fd, [], os.fsencode(path)))
    finally:
        os.close(root_fd)


def read_file(root, path, limit=1 << 20):
    """The bytes of the regular file at ``path`` inside ``root`` (symlinks followed
    inside the root), at most ``limit`` of them."""
    root_fd = open_root(root)
    try:
        names = resolve(root_fd, [], os.fsencode(path))
        if not names:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        parent = open_dir(root_fd, names[:-1])
        try:
            # O_NONBLOCK: a FIFO put where a file was expected must not hang the reader.
            fd = os.open(names[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=parent)
        finally:
            os.close(parent)
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks = []
        while limit > 0:
            chunk = os.read(fd, min(limit, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
