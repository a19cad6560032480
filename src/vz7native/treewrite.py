"""Writing a tree below a directory fd, never following a symlink.

    >>> writer = TreeWriter(b"/vz/root/101", replace="always")
    >>> placed = writer.place(b"tmp/restore/etc/hosts", 0o100644)
    >>> os.write(placed.fd, data)
    >>> writer.set_attributes(placed, attrs, xattrs=[(b"user.a", b"1")], acls={})  # closes fd
    >>> problems = writer.finish()       # directory times and inode flags
    >>> writer.close()

A restore into a running container writes into a tree that the container's root
user controls and may change while the restore runs: a symlink planted on the
path must never make the restore write outside that tree. So:

* every path is walked from an fd on the root, one component at a time, each
  directory opened ``O_DIRECTORY|O_NOFOLLOW`` relative to its parent (VZ7's
  kernel has no ``openat2``); missing directories are created on the way
  (``mkdirat``); ``..`` is refused; a directory on another filesystem than the
  root (a mount inside the tree) is refused;
* entries are created with ``*at`` calls that never follow a symlink
  (``openat(O_CREAT|O_EXCL|O_NOFOLLOW)``, ``mkdirat``, ``mknodat``,
  ``symlinkat``, ``linkat`` without ``AT_SYMLINK_FOLLOW``); what was in the way is
  removed (``unlinkat``) as the replace policy allows;
* attributes are changed on the very inode that was created (owner, mode,
  xattrs, ACLs, times): through a new regular file's own data fd, kept open for
  this; otherwise an fd opened without following and checked by device and
  inode number (a directory fd, or for FIFOs, devices and hard links an
  ``O_PATH`` fd used through ``/proc/self/fd/N``); symlinks through
  ``fchownat``/``utimensat`` with ``AT_SYMLINK_NOFOLLOW``.

The order makes the result exact: owner first (``chown`` clears set-id bits and
``security.capability``), inherited ACLs removed, mode, xattrs, ACLs, times.
Directory times and inode flags (immutable, append-only...) are set by
:meth:`TreeWriter.finish`, once every entry exists: creating an entry changes its
directory's mtime, and an immutable file can no longer be linked or changed.
"""
import errno
import os
import stat

from vz7native.inodeflags import SETTABLE_FLAGS, write_flags
from vz7native.paths import show

__all__ = ["TreeWriter", "Placed", "TreeError", "REPLACE_POLICIES", "ACL_ACCESS", "ACL_DEFAULT"]

REPLACE_POLICIES = ("always", "ifnewer", "ifolder", "never")
ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Something may reappear between removing what was in the way and creating the
# entry (the tree's owner races us): a few more tries, then an error.
_CREATE_ATTEMPTS = 3


class TreeError(OSError):
    """An entry could not be written or its attributes set (the message says which)."""


class Placed(object):
    """An entry :meth:`TreeWriter.place` made: ``names`` (its path as a tuple of
    components, empty for the root), ``kind`` (``stat.S_IFMT`` bits), ``dev`` and
    ``ino`` of the inode created, ``fd`` (regular files: open for writing until
    :meth:`TreeWriter.close_data`), ``existed`` (a directory that was kept)."""

    __slots__ = ("names", "kind", "dev", "ino", "fd", "existed")

    def __init__(self, names, kind, dev, ino, fd=None, existed=False):
        self.names = names
        self.kind = kind
        self.dev = dev
        self.ino = ino
        self.fd = fd
        self.existed = existed

    @property
    def path(self):
        return b"/".join(self.names)


def components(path):
    """The names of a relative path; ``..`` refused."""
    names = tuple(part for part in path.split(b"/") if part not in (b"", b"."))
    if b".." in names:
        raise TreeError(errno.EINVAL, "a path with .. is not restored", show(path))
    return names


def _proc(fd):
    return b"/proc/self/fd/%d" % fd


class TreeWriter(object):
    """Entries written below the directory ``root`` (a path; opened once, the
    root itself may be a symlink given by the host). ``replace``: what to do with
    an entry in the way (one of :data:`REPLACE_POLICIES`, as Bareos's
    ``replace``); ``one_file_system``: refuse directories on another
    filesystem; ``dir_mode``: the mode of directories created on the way (an
    entry's own attributes replace it when it is restored)."""

    def __init__(self, root, replace="always", one_file_system=True, dir_mode=0o755):
        if replace not in REPLACE_POLICIES:
            raise ValueError("replace must be one of %s, not %r"
                             % (", ".join(REPLACE_POLICIES), replace))
        self.replace = replace
        self.one_file_system = one_file_system
        self.dir_mode = dir_mode
        self.root = os.fsencode(root)
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root_dev = os.fstat(self.root_fd).st_dev
        self._chain = []            # [(name, fd)]: the directories of the last path
        self._made = set()          # names of the directories made on the way
        self._dir_times = []        # [(names, ino, (atime_ns, mtime_ns))]
        self._flags = []            # [(names, kind, ino, flags)]

    # -- directories ------------------------------------------------------------------

    def _dir(self, names, create):
        """An fd (owned by the chain: do not close it) on the directory ``names``."""
        chain = self._chain
        common = 0
        while common < len(chain) and common < len(names) and chain[common][0] == names[common]:
            common += 1
        for _, fd in chain[common:]:
            os.close(fd)
        del chain[common:]
        parent = chain[-1][1] if chain else self.root_fd
        for depth in range(common, len(names)):
            fd = self._open_dir(parent, names[:depth + 1], create)
            chain.append((names[depth], fd))
            parent = fd
        return parent

    def _open_dir(self, parent, names, create):
        """Open (or make) the directory ``names[-1]`` in ``parent``; ``names`` is its path."""
        name = names[-1]
        for _ in range(_CREATE_ATTEMPTS):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, self.dir_mode, dir_fd=parent)
                    self._made.add(tuple(names))
                except FileExistsError:
                    pass
                continue
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise TreeError(e.errno, "not a directory (a symlink or file is in the "
                                    "way)", show(b"/".join(names)))
                raise
            st = os.fstat(fd)
            if self.one_file_system and st.st_dev != self.root_dev:
                os.close(fd)
                raise TreeError(errno.EXDEV, "another filesystem is mounted there: not "
                                "written", show(b"/".join(names)))
            return fd
        raise TreeError(errno.EAGAIN, "the directory keeps disappearing", show(b"/".join(names)))

    # -- entries ----------------------------------------------------------------------

    def place(self, path, mode, rdev=0, target=None, link_to=None, mtime=None):
        """Create the entry ``path`` (relative to the root; empty: the root itself)
        of type ``stat.S_IFMT(mode)``: ``target`` is a symlink's target, ``link_to``
        (a relative path) makes a hard link to that entry instead. ``mtime``
        (seconds) is the backup's, for the ``ifnewer``/``ifolder`` policies.

        Returns a :class:`Placed`, or a str saying why the replace policy kept
        what exists. Permissions are restrictive until :meth:`set_attributes`.
        """
        names = components(path)
        kind = stat.S_IFMT(mode)
        if not names:
            if kind != stat.S_IFDIR:
                raise TreeError(errno.EISDIR, "the root can only be a directory", show(path))
            st = os.fstat(self.root_fd)
            return Placed(names, kind, st.st_dev, st.st_ino, existed=True)
        parent = self._dir(names[:-1], create=True)
        name = names[-1]
        for _ in range(_CREATE_ATTEMPTS):
            # Created first (nothing follows a name that exists: O_EXCL, mkdir,
            # symlink, mknod and link fail on it); what is in the way is looked at
            # only then.
            try:
                return self._create(parent, name, names, kind, mode, rdev, target, link_to)
            except FileExistsError:
                # A hard link's source walked the chain away and back: the
                # directory's fd may have another number now.
                parent = self._dir(names[:-1], create=True)
            try:
                existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                continue
            # A directory this writer made on the way is the entry's own.
            made_here = stat.S_ISDIR(existing.st_mode) and names in self._made
            reason = None if made_here else self._kept(existing, mtime)
            if reason:
                return reason
            if kind == stat.S_IFDIR and stat.S_ISDIR(existing.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                return Placed(names, kind, st.st_dev, st.st_ino, existed=True)
            self._remove(parent, name, existing, names)
        raise TreeError(errno.EEXIST, "something keeps reappearing in the way", show(path))

    def _kept(self, existing, mtime):
        policy = self.replace
        if policy == "never":
            return "Already exists"
        if policy == "ifnewer" and mtime is not None and mtime <= int(existing.st_mtime):
            return "Not newer"
        if policy == "ifolder" and mtime is not None and mtime >= int(existing.st_mtime):
            return "Not older"
        return None

    def _remove(self, parent, name, existing, names):
        try:
            if stat.S_ISDIR(existing.st_mode):
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise TreeError(e.errno, "cannot remove what is in the way: %s" % e.strerror,
                            show(b"/".join(names)))

    def _create(self, parent, name, names, kind, mode, rdev, target, link_to):
        if link_to is not None:
            source = components(link_to)
            if not source:
                raise TreeError(errno.EINVAL, "a hard link to the root", show(b"/".join(names)))
            # The chain holds one path: keep the source's directory, then walk
            # to the link's own directory again.
            source_parent = os.dup(self._dir(source[:-1], create=False))
            try:
                parent = self._dir(names[:-1], create=True)
                os.link(source[-1], name, src_dir_fd=source_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(source_parent)
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            return Placed(names, stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino)
        fd = None
        if kind == stat.S_IFREG:
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
            st = os.fstat(fd)
            return Placed(names, kind, st.st_dev, st.st_ino, fd=fd)
        if kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=parent)
        elif kind == stat.S_IFLNK:
            os.symlink(target, name, dir_fd=parent)
        elif kind == stat.S_IFIFO:
            os.mkfifo(name, 0o600, dir_fd=parent)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            os.mknod(name, kind | 0o600, rdev, dir_fd=parent)
        else:
            raise TreeError(errno.EINVAL, "cannot create a file of mode %o" % mode,
                            show(b"/".join(names)))
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_IFMT(st.st_mode) != kind:
            raise TreeError(errno.ESTALE, "replaced while it was created", show(b"/".join(names)))
        return Placed(names, kind, st.st_dev, st.st_ino)

    @staticmethod
    def close_data(placed):
        """Close the data fd of a regular file (idempotent)."""
        fd, placed.fd = placed.fd, None
        if fd is not None:
            os.close(fd)

    # -- attributes -------------------------------------------------------------------

    def _open_placed(self, placed, flags):
        """(parent fd or None, fd) of ``placed`` opened with ``flags``; TreeError if
        the name no longer holds the inode that was created."""
        if not placed.names:
            parent, fd = None, os.open(b".", flags & ~os.O_NOFOLLOW, dir_fd=self.root_fd)
        else:
            parent = self._dir(placed.names[:-1], create=False)
            fd = os.open(placed.names[-1], flags, dir_fd=parent)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (placed.dev, placed.ino):
            os.close(fd)
            raise TreeError(errno.ESTALE, "replaced by something else during the restore",
                            show(placed.path))
        return parent, fd

    def _attribute_fd(self, placed):
        """(fd, what the attribute calls take) on the inode of ``placed``, not a
        symlink: the data fd of a new regular file (opened ``O_EXCL`` on the
        inode itself), an fd on a directory, else an ``O_PATH`` fd used through
        its ``/proc`` name (the f* calls refuse ``O_PATH`` fds)."""
        if placed.fd is not None:
            fd, placed.fd = placed.fd, None
            return fd, fd
        if placed.kind == stat.S_IFDIR:
            fd = self._open_placed(placed, _DIR_FLAGS)[1]
            return fd, fd
        fd = self._open_placed(placed, _PATH_FLAGS)[1]
        return fd, _proc(fd)

    def set_attributes(self, placed, attrs, xattrs=(), acls=None):
        """Owner, mode, xattrs, ACLs and times of ``placed`` (directory times and
        inode flags wait for :meth:`finish`).

        ``attrs`` has ``uid``, ``gid``, ``mode``, ``atime_ns``, ``mtime_ns`` and
        ``flags`` (-1: unknown); ``xattrs`` (name, value) bytes pairs; ``acls``
        ``{ACL_ACCESS or ACL_DEFAULT: value}`` -- an ACL not in it is removed
        (one inherited from a default ACL of the directory). A regular file's
        data fd, when still open, is used and closed here."""
        acls = acls or {}
        problems = []

        def attempt(what, func, *args, **kw):
            try:
                func(*args, **kw)
            except OSError as e:
                problems.append("%s: %s" % (what, e.strerror or e))

        times = (attrs.atime_ns, attrs.mtime_ns)
        if placed.kind == stat.S_IFLNK:
            parent, fd = self._open_placed(placed, _PATH_FLAGS)
            try:
                name = placed.names[-1]
                attempt("owner", os.chown, name, attrs.uid, attrs.gid, dir_fd=parent,
                        follow_symlinks=False)
                where = _proc(parent) + b"/" + name
                for key, value in xattrs:
                    attempt("xattr %s" % show(key), os.setxattr, where, key, value,
                            follow_symlinks=False)
                attempt("times", os.utime, name, ns=times, dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(fd)
        else:
            fd, where = self._attribute_fd(placed)
            try:
                attempt("owner", os.chown, where, attrs.uid, attrs.gid)
                for acl in (ACL_ACCESS, ACL_DEFAULT) if placed.kind == stat.S_IFDIR else (
                        ACL_ACCESS,):
                    if acl not in acls:
                        attempt("inherited ACL", _remove_xattr, where, acl)
                attempt("mode", os.chmod, where, stat.S_IMODE(attrs.mode))
                for key, value in xattrs:
                    attempt("xattr %s" % show(key), os.setxattr, where, key, value)
                for acl in (ACL_ACCESS, ACL_DEFAULT):
                    if acl in acls:
                        attempt("ACL %s" % acl, os.setxattr, where, acl, acls[acl])
                if placed.kind == stat.S_IFDIR:
                    self._dir_times.append((placed.names, placed.ino, times))
                else:
                    attempt("times", os.utime, where, ns=times)
            finally:
                os.close(fd)
            if (attrs.flags > 0 and attrs.flags & SETTABLE_FLAGS
                    and placed.kind in (stat.S_IFREG, stat.S_IFDIR)):
                self._flags.append((placed, attrs.flags))
        if problems:
            raise TreeError(errno.EIO, "cannot set its %s" % "; ".join(problems),
                            show(placed.path))

    # -- the end ----------------------------------------------------------------------

    def finish(self):
        """Directory times, then inode flags; returns ``[(path, message)]`` of what
        could not be set (the rest is set regardless)."""
        problems = []
        for names, ino, times in self._dir_times:
            placed = Placed(names, stat.S_IFDIR, self.root_dev, ino)
            try:
                _, fd = self._open_placed(placed, _DIR_FLAGS)
                try:
                    os.utime(fd, ns=times)
                finally:
                    os.close(fd)
            except OSError as e:
                problems.append((placed.path, "cannot set its times: %s" % (e.strerror or e)))
        del self._dir_times[:]
        for placed, flags in self._flags:
            extra = os.O_DIRECTORY if placed.kind == stat.S_IFDIR else 0
            try:
                _, fd = self._open_placed(placed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                                          os.O_CLOEXEC | extra)
                try:
                    write_flags(fd, flags)
                finally:
                    os.close(fd)
            except OSError as e:
                problems.append((placed.path, "cannot set its inode flags: %s"
                                 % (e.strerror or e)))
        del self._flags[:]
        return problems

    def close(self):
        """Release every fd (call :meth:`finish` first to set what was deferred)."""
        for _, fd in self._chain:
            os.close(fd)
        del self._chain[:]
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


def _remove_xattr(path, name):
    try:
        os.removexattr(path, name)
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
