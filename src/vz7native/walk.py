"""A streaming directory walker: bytes paths, one stat per entry, nothing lost.

    >>> from vz7native.walk import walk
    >>> problems = []
    >>> for entry in walk(b"/mnt/ct", excludes=["*.tmp", "var/cache"], one_file_system=True,
    ...                   on_error=lambda path, exc: problems.append((path, exc))):
    ...     print(entry.path, entry.type, entry.stat.st_size)

What it promises:

* Paths are ``bytes``, always: names that are not valid UTF-8 come through
  unchanged. ``top`` may be given as ``str``, ``bytes`` or a path object.
* Every entry is stat'ed once. Directories are told apart by the directory
  entry's type (``d_type``) without a stat; a directory is then opened with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's file descriptor and its
  stat is the ``fstat`` of exactly the directory that is walked, so a directory
  swapped for a symlink or another directory mid-walk is never followed or
  misdescribed. Every other entry is ``lstat``'ed relative to its parent's
  descriptor (``dir_fd``): no path is resolved twice, no symlink is followed,
  and paths longer than ``PATH_MAX`` work. (On a filesystem that reports no
  ``d_type``, Python stats each entry once more to tell directories apart.)
* Memory is O(depth): one open directory listing per level (glibc buffers
  32 KiB of it). With ``sort=True`` each level holds its directory's sorted
  entries instead. Each level holds two file descriptors (the directory and its
  listing; one with ``sort=True``), so a 300-level tree needs about 600:
  raise ``RLIMIT_NOFILE`` for deeper trees. A directory that cannot be opened
  because descriptors ran out is reported like any other.
* Entries that vanish during the walk or cannot be read are reported through
  ``on_error(path, exc)``; the walk goes on. Nothing is dropped silently.

Directories are listed through ``/proc/self/fd/N`` of the open directory
descriptor: the one way to list a directory by descriptor, with ``bytes`` names
and ``d_type``, that Python 3.6 (whose ``os.scandir`` takes no descriptor) and
later versions share. ``os.scandir(fd)`` of 3.7+ yields ``str`` names, which
would have to be encoded back (measured about 4% slower on 3.11), and
``os.listdir(fd)`` has neither ``d_type`` nor O(1) memory per directory.
``/proc`` must therefore be mounted.
"""
import errno
import fnmatch
import os
import re
import stat as _stat
from operator import attrgetter, itemgetter

__all__ = ["walk", "Entry", "WalkError", "BALLOON_NAME",
           "FILE", "DIR", "SYMLINK", "FIFO", "SOCKET", "CHARDEV", "BLOCKDEV"]

# The hidden file VZ7 keeps in the root of a container's ext4 filesystem for the
# ploop balloon; it is no container data and is never restored.
BALLOON_NAME = b".balloon-c3a5ae3d-ce7f-43c4-a1ea-c61e2b4504e8"

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
FIFO = "fifo"
SOCKET = "socket"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"

_TYPE_OF_FORMAT = {
    _stat.S_IFREG: FILE, _stat.S_IFDIR: DIR, _stat.S_IFLNK: SYMLINK,
    _stat.S_IFIFO: FIFO, _stat.S_IFSOCK: SOCKET, _stat.S_IFCHR: CHARDEV,
    _stat.S_IFBLK: BLOCKDEV,
}

_PROC_FD = b"/proc/self/fd/%d"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TOP_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GLOB_CHARS = re.compile(br"[*?[]")
_ORDERS = ("post", "pre")


class WalkError(OSError):
    """An entry could not be stat'ed, opened or listed (raised by the default ``on_error``).

    ``errno`` and ``strerror`` are those of the underlying ``OSError`` (also
    chained as ``__cause__``); ``filename`` is the entry's absolute ``bytes`` path.
    """


class Entry(tuple):
    """One walked entry. Read it by attribute; the tuple layout is not part of the API.

    ``path``    absolute path (``bytes``), ``top`` as given plus the names below it
    ``stat``    the entry's ``os.stat_result``, never following a symlink (hardlink
                facts: ``st_dev``, ``st_ino``, ``st_nlink``)
    ``type``    one of ``FILE``, ``DIR``, ``SYMLINK``, ``FIFO``, ``SOCKET``,
                ``CHARDEV``, ``BLOCKDEV`` (the strings ``"file"``, ``"dir"``...)
    ``name``    the last path component (``bytes``)
    ``relpath`` the path relative to ``top`` (``b""`` for ``top`` itself)
    """

    __slots__ = ()

    path = property(itemgetter(0))
    stat = property(itemgetter(1))

    @property
    def type(self):
        return _TYPE_OF_FORMAT[_stat.S_IFMT(self[1].st_mode)]

    @property
    def name(self):
        return self[0].rpartition(b"/")[2]

    @property
    def relpath(self):
        return self[0][self[2]:]

    def __repr__(self):
        return "Entry(path=%r, type=%r)" % (self[0], self.type)


_entry_name = attrgetter("name")


def _raise(path, exc):
    raise WalkError(exc.errno, exc.strerror, path) from exc


class _Excludes(object):
    """The exclude patterns of one walk (see ``walk``), compiled for its inner loop.

    Exact names and exact paths become one set of names per directory
    (``names_in(prefix)``); globs become one regex ``match`` on names
    (``name_match``) and one on absolute paths (``path_match``), None if unused.
    """

    def __init__(self, patterns, top_prefix, paths=()):
        names, name_globs, path_globs, paths = set(), [], [], list(paths)
        for pattern in patterns:
            if not isinstance(pattern, (str, bytes)):
                raise TypeError("excludes: each pattern must be str or bytes, not %r" % (pattern,))
            body = os.fsencode(pattern).rstrip(b"/")
            if not body:
                raise ValueError("excludes: %r is no pattern (empty or only /)" % (pattern,))
            glob = _GLOB_CHARS.search(body) is not None
            if b"/" not in body:
                if glob:
                    name_globs.append((b"", body))
                else:
                    names.add(body)
                continue
            prefix = b"" if body.startswith(b"/") else top_prefix
            if glob:
                path_globs.append((prefix, body))
            else:
                paths.append(os.path.normpath(prefix + body))
        self.names = frozenset(names)
        by_prefix = {}
        for path in paths:
            parent, name = os.path.split(path)
            by_prefix.setdefault(parent.rstrip(b"/") + b"/", set(self.names)).add(name)
        self._names_by_prefix = {prefix: frozenset(below) for prefix, below in by_prefix.items()}
        self.name_match = _compile_globs(name_globs)
        self.path_match = _compile_globs(path_globs)

    def names_in(self, prefix):
        """The names excluded in the directory whose entries' paths start with ``prefix``."""
        return self._names_by_prefix.get(prefix, self.names)


def _compile_globs(prefixed_patterns):
    """One regex ``match`` for (literal prefix, fnmatch pattern) pairs of bytes, or None."""
    if not prefixed_patterns:
        return None
    # fnmatch translates str; latin-1 maps every byte to one character and back.
    alternatives = "|".join("(?:%s%s)" % (re.escape(prefix.decode("latin-1")),
                                          fnmatch.translate(pattern.decode("latin-1")))
                            for prefix, pattern in prefixed_patterns)
    return re.compile(alternatives.encode("latin-1")).match


def walk(top, *, excludes=(), one_file_system=False, skip_balloon=False, on_error=None,
         order="post", sort=False):
    """Walk the tree at ``top``, yielding an :class:`Entry` for it and everything below.

    ``top`` (``str``, ``bytes`` or path object) is made absolute with
    ``os.path.abspath``. If it is a symlink it is followed (like ``find -H``);
    nothing below it ever is. A ``top`` that is not a directory yields just
    itself. If ``top`` cannot be opened or stat'ed, the walk raises that
    ``OSError`` (a failure to list it goes to ``on_error`` like any other).

    ``order``: ``"post"`` (default) yields a directory after everything below it,
    so a restore can set directory times last; ``"pre"`` yields it before.
    ``top`` comes last or first, respectively.

    ``sort``: if true, each directory's entries are walked in byte order of
    their names (reproducible output); this holds one listing per level in
    memory. Otherwise they come in the filesystem's order.

    ``excludes``: patterns (``str`` or ``bytes``) that keep entries below
    ``top`` out of the walk. ``top`` itself is always yielded. An excluded
    directory is not entered, so everything below it is excluded too. Patterns
    are matched on names and paths before any stat. Three kinds:

    * no ``/``: an ``fnmatch`` glob on the entry's name, at any depth
      (``"*.tmp"``, ``".cache"``, ``"core.[0-9]*"``);
    * starting with ``/``: an absolute path. Without glob characters
      (``*?[``) it excludes that path and everything below it
      (``"/mnt/ct/var/tmp"``, not ``/mnt/ct/var/tmpx``); with them, an
      ``fnmatch`` glob on the absolute path (``"/mnt/ct/home/*/.cache"``);
    * any other pattern with a ``/``: the same, relative to ``top``
      (``"var/tmp"``, ``"home/*/.cache"``).

    Globs are Python's ``fnmatch`` (case-sensitive): ``*`` and ``?`` also match
    ``/``, ``[...]`` is a character set (``[*]`` matches a literal ``*``), as in
    Bareos' own wildcards. A trailing ``/`` is ignored.

    ``skip_balloon``: leave out VZ7's ploop balloon file (:data:`BALLOON_NAME`)
    directly below ``top``; give ``top`` as the container filesystem's root.

    ``one_file_system``: directories on another device (``st_dev``) than
    ``top``, i.e. mount points, are yielded but not entered. Bind mounts within
    one filesystem share its ``st_dev`` and are entered.

    ``on_error(path, exc)`` is called with the absolute ``bytes`` path and the
    ``OSError`` for every entry that vanished or could not be stat'ed, and for
    every directory that could not be opened or listed (entirely or part-way).
    A vanished entry is not yielded; a directory that could not be read is still
    yielded (with its stat), without what could not be read. If ``on_error``
    returns, the walk goes on; if it raises, the walk stops with that exception.
    The default (``None``) raises :class:`WalkError`, so nothing is ever lost
    silently: a backup passes a handler that records the problem and goes on.

    A walk left unfinished releases its descriptors when the generator is
    closed (``close()``, ``contextlib.closing``) or garbage-collected. Needs
    ``/proc`` (see the module docstring).
    """
    if order not in _ORDERS:
        raise ValueError("order must be one of %s, not %r" % (", ".join(map(repr, _ORDERS)), order))
    if on_error is not None and not callable(on_error):
        raise TypeError("on_error must be callable or None, not %r" % (on_error,))
    if isinstance(excludes, (str, bytes)):
        raise TypeError("excludes must be a sequence of patterns, not one %s" % type(excludes).__name__)
    top = os.path.abspath(os.fsencode(top))
    top_prefix = top if top.endswith(b"/") else top + b"/"
    patterns = list(excludes)
    balloon = [top_prefix + BALLOON_NAME] if skip_balloon else []
    excluded = _Excludes(patterns, top_prefix, balloon) if patterns or balloon else None
    if not os.path.isdir(b"/proc/self/fd"):
        raise WalkError(errno.ENOENT, "vz7native.walk lists directories through /proc/self/fd, "
                        "which is missing: mount /proc", b"/proc/self/fd")
    return _walk(top, top_prefix, excluded, one_file_system, on_error or _raise,
                 order == "pre", sort)


def _listing(fd, sort):
    """(iterator over the DirEntry objects of directory ``fd``, what to close, read error)."""
    entries = os.scandir(_PROC_FD % fd)
    if not sort:
        return entries, entries, None
    listed = []
    error = None
    with entries:
        try:
            # extend keeps what was read before a failure.
            listed.extend(entries)
        except OSError as exc:
            error = exc
    listed.sort(key=_entry_name)
    return iter(listed), None, error


def _walk(top, top_prefix, excluded, one_file_system, report, pre, sort):
    lstat, fstat, os_open, close = os.lstat, os.fstat, os.open, os.close
    S_ISDIR = _stat.S_ISDIR
    off = len(top_prefix)
    filtering = excluded is not None
    if filtering:
        names_in, name_match, path_match = excluded.names_in, excluded.name_match, excluded.path_match
    try:
        fd = os_open(top, _TOP_FLAGS)
    except NotADirectoryError:
        yield Entry((top, os.stat(top), off))
        return
    # A frame per open directory: (fd, DirEntry iterator, path prefix, its Entry, to close).
    stack = []
    try:
        # ``fd``, ``path``, ``entry``: the directory to enter next, ``top`` first.
        path = top
        entry = Entry((top, fstat(fd), off))
        top_dev = entry[1].st_dev if one_file_system else None
        while True:
            if fd is not None:
                try:
                    entries, closable, error = _listing(fd, sort)
                except OSError as exc:
                    close(fd)
                    fd = None
                    report(path, exc)
                    yield entry
                else:
                    stack.append((fd, entries, path + b"/" if stack else top_prefix, entry, closable))
                    fd = None
                    if error is not None:
                        report(path, error)
                    if pre:
                        yield entry
            if not stack:
                break

            dir_fd, entries, prefix, dir_entry, closable = stack[-1]
            if filtering:
                skip_names = names_in(prefix)
            # The loop stops for: 0 the directory is done, 1 entering the directory
            # ``name``, 2 an lstat failure. Reports are made outside it, so an
            # exception from ``report`` is never taken for a failed directory read.
            stopped = 0
            error = None
            try:
                for dirent in entries:
                    name = dirent.name
                    path = prefix + name
                    if filtering and (
                            name in skip_names
                            or (name_match is not None and name_match(name) is not None)
                            or (path_match is not None and path_match(path) is not None)):
                        continue
                    if dirent.is_dir(follow_symlinks=False):
                        stopped = 1
                        break
                    try:
                        st = lstat(name, dir_fd=dir_fd)
                    except OSError as exc:
                        error = exc
                        stopped = 2
                        break
                    yield Entry((path, st, off))
            except OSError as exc:
                error = exc

            if stopped == 2:
                report(path, error)
            elif stopped == 1:
                try:
                    fd = os_open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    # Vanished, swapped for a non-directory, or not openable.
                    try:
                        st = lstat(name, dir_fd=dir_fd)
                    except OSError:
                        report(path, exc)
                        continue
                    if S_ISDIR(st.st_mode):
                        report(path, exc)
                    yield Entry((path, st, off))
                    continue
                entry = Entry((path, fstat(fd), off))
                if top_dev is not None and entry[1].st_dev != top_dev:
                    close(fd)
                    fd = None
                    yield entry
            else:
                stack.pop()
                if closable is not None:
                    closable.close()
                close(dir_fd)
                if error is not None:
                    report(dir_entry[0], error)
                if not pre:
                    yield dir_entry
    finally:
        if fd is not None:
            close(fd)
        for frame in stack:
            if frame[4] is not None:
                frame[4].close()
            close(frame[0])
