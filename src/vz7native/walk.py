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
  descriptor: no path is resolved twice, no symlink is followed, and paths
  longer than ``PATH_MAX`` work. An entry whose type the filesystem does not
  report, or that turned into a directory since it was listed, is told apart
  by that ``lstat`` (and entered like any directory; the pure-Python core
  stats an entry of unknown type once more).
* Entries are stat'ed in batches of up to 256, as the walk reaches them; a
  batch never reaches past a subdirectory, so an entry's stat is never older
  than the walk of the directories listed before it.
* Memory is O(depth): one open directory per level with a 32 KiB listing
  buffer. With ``sort=True`` each level holds its directory's sorted names
  instead. Each level holds one file descriptor (two with the pure-Python
  core, one with it and ``sort=True``), so a 300-level tree needs about 300:
  raise ``RLIMIT_NOFILE`` for deeper trees. A directory that cannot be opened
  because descriptors ran out is reported like any other.
* Entries that vanish during the walk or cannot be read are reported through
  ``on_error(path, exc)``; the walk goes on. Nothing is dropped silently.

How: the walk itself (order, excludes, mount points, errors, descriptors) is
Python; listing a directory and stat'ing names is a *core*'s job. The native
core (``vz7native._walk``) lists with ``getdents64`` on the open directory's
descriptor and stats with ``fstatat``, a batch of entries per call, and hands
back packed records from which Python builds the very ``os.stat_result`` that
``os.lstat`` gives. On a tree in the page cache the kernel's own work is then
about three quarters of a walk's time, against under two thirds with
``os.lstat`` (perf, Python 3.11; timings in docs/benchmarks.md).
At import the records are checked against ``os.lstat`` on this Python; on a
Python whose ``os.stat_result`` they do not fit, the pure-Python core takes
over: ``os.scandir`` + ``os.lstat(name, dir_fd=)``.
It lists through ``/proc/self/fd/N`` of the open directory descriptor: the one
way to list a directory by descriptor, with ``bytes`` names and ``d_type``,
that Python 3.6 (whose ``os.scandir`` takes no descriptor) and later versions
share; ``/proc`` must then be mounted.
"""
import errno
import fnmatch
import os
import re
import stat as _stat
import struct
from functools import partial
from operator import itemgetter

from vz7native import _check_build
from vz7native._walk import ffi, lib

_check_build("vz7native._walk", ffi, lib)

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


def _raise(path, exc):
    raise WalkError(exc.errno, exc.strerror, path) from exc


class _Excludes(object):
    """The exclude patterns of one walk (see ``walk``), compiled for its inner loop.

    Exact names and exact paths become one set of names per directory; globs
    become one regex ``match`` on names (``name_match``) and one on absolute
    paths (``path_match``), None if unused. ``skipper(prefix)`` puts them
    together for one directory.
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

    def skipper(self, prefix):
        """``skip(name)``, true for the names excluded in the directory whose
        entries' paths start with ``prefix`` (the cheapest such callable); None
        if nothing is excluded there."""
        names = self._names_by_prefix.get(prefix, self.names)
        name_match, path_match = self.name_match, self.path_match
        if path_match is None:
            if name_match is None:
                return names.__contains__ if names else None
            if not names:
                return name_match

        def skip(name):
            return (name in names
                    or (name_match is not None and name_match(name) is not None)
                    or (path_match is not None and path_match(prefix + name) is not None))
        return skip


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
    closed (``close()``, ``contextlib.closing``) or garbage-collected. The
    pure-Python core needs ``/proc`` (see the module docstring).
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
    return _walk(_CORE(), top, top_prefix, excluded, one_file_system, on_error or _raise,
                 order == "pre", sort)


# A core lists a directory and stats names in it, for _walk:
#
# open(fd, depth) -> listing   the state of listing directory ``fd`` (at that
#                              depth of the walk); may raise OSError
# close(listing)               release what ``open`` took (not ``fd``)
# list(listing, skip) -> (names, dirs, end, error)
#     the next listed names that ``skip`` (None: nothing) does not exclude, and
#     ``dirs``, one byte per name, 1 for a directory by its listed type; ``end``
#     _MORE, _DONE or _UNLISTABLE (``error`` the OSError that ended the listing)
# stat(fd, names) -> (stats, end, error)
#     os.stat_result of names[:len(stats)], never following a symlink; ``end``
#     _DONE (all of them), _MORE (go on with the rest), _DIR (the next name is a
#     directory) or _FAILED (lstat of the next name raised ``error``)
# list_stat(listing) -> (names, stats, end, error), or None if the core has none
#     list and stat in one go, when nothing is excluded: the next names of the
#     directory and the stats of names[:len(stats)]; ``end`` as for ``list``,
#     or _DIR / _FAILED for the last name, which is then not stat'ed
#
# Every batch is turned into Python objects before the core is called again.

_BATCH = lib.VZ7W_BATCH
_MORE, _DONE, _DIR, _FAILED, _UNLISTABLE, _SLOW = (
    lib.VZ7W_MORE, lib.VZ7W_DONE, lib.VZ7W_DIR, lib.VZ7W_FAILED, lib.VZ7W_UNLISTABLE,
    lib.VZ7W_SLOW)
_NOTHING = ()


def _lstat_names(fd, names):
    """The ``stat`` of both cores, done by ``os.lstat`` (see the core protocol above)."""
    lstat, S_ISDIR = os.lstat, _stat.S_ISDIR
    stats = []
    append = stats.append
    for name in names:
        try:
            st = lstat(name, dir_fd=fd)
        except OSError as exc:
            return stats, _FAILED, exc
        if S_ISDIR(st.st_mode):
            return stats, _DIR, None
        append(st)
    return stats, _DONE, None


class _PythonCore(object):
    """``os.scandir`` + ``os.lstat``: the core for a Python whose
    ``os.stat_result`` the native core's records do not fit."""

    list_stat = None
    stat = staticmethod(_lstat_names)

    def __init__(self):
        if not os.path.isdir(b"/proc/self/fd"):
            raise WalkError(errno.ENOENT, "vz7native.walk lists directories through "
                            "/proc/self/fd, which is missing: mount /proc", b"/proc/self/fd")

    def open(self, fd, depth):
        return os.scandir(_PROC_FD % fd)

    def close(self, listing):
        listing.close()

    def list(self, listing, skip):
        names, dirs = [], bytearray()
        left = _BATCH
        try:
            for dirent in listing:
                name = dirent.name
                if skip is not None and skip(name):
                    continue
                try:
                    # Stats only if the filesystem gave no d_type.
                    is_dir = dirent.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False  # the lstat will tell, and report its failure
                names.append(name)
                dirs.append(is_dir)
                left -= 1
                if not left:
                    return names, dirs, _MORE, None
        except OSError as exc:
            return names, dirs, _UNLISTABLE, exc
        return names, dirs, _DONE, None


# The fields of os.stat_result on Linux in positional order (7..9, the integer
# times, have no name), as vz7w_fill writes them: all int64 but st_ino
# (uint64) and the float times.
_STAT_FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                None, None, None, "st_atime", "st_mtime", "st_ctime",
                "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")
_RECORD = struct.Struct("=qQ8q3d6q")
# Batches and listing buffers are written by C before they are read.
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


class _NativeCore(object):
    """getdents64 and fstatat in C (``vz7native._walk``), a batch per call.

    One result batch per walk, reused by every call; one listing state (the
    descriptor's number and a 32 KiB getdents64 buffer) per depth, reused by
    every directory at that depth: O(depth), allocated once.
    """

    def __init__(self):
        batch = self._batch = _new_uncleared("struct vz7w_batch *")
        self._names_view = ffi.buffer(batch.names)
        self._stats_view = memoryview(ffi.buffer(batch.stats))
        self._levels = []

    def open(self, fd, depth):
        levels = self._levels
        if depth == len(levels):
            levels.append(_new_uncleared("struct vz7w_dir *"))
        listing = levels[depth]
        lib.vz7w_dir_init(listing, fd)
        return listing

    def close(self, listing):
        """Nothing to release: the descriptor is the walk's, the buffer is reused."""

    def list(self, listing, skip):
        batch = self._batch
        end = lib.vz7w_list(listing, batch)
        names = self._names()
        dirs = ffi.buffer(batch.is_dir, len(names))[:]
        error = _os_error(batch.error) if end == _UNLISTABLE else None
        if skip is not None and any(map(skip, names)):
            kept = [(name, is_dir) for name, is_dir in zip(names, dirs) if not skip(name)]
            names = [name for name, _ in kept]
            dirs = bytes(is_dir for _, is_dir in kept)
        return names, dirs, end, error

    def stat(self, fd, names):
        end = lib.vz7w_stat(fd, b"\0".join(names) + b"\0", len(names), self._batch)
        return self._results(end, fd, names)

    def list_stat(self, listing):
        end = lib.vz7w_list_stat(listing, self._batch)
        names = self._names()
        stats, end, error = self._results(end, listing.fd, names)
        return names, stats, end, error

    def _names(self):
        size = self._batch.names_len
        return self._names_view[:size - 1].split(b"\0") if size else []

    def _results(self, end, fd, names):
        """(stats, end, error) of a call that returned ``end`` for ``names``."""
        batch = self._batch
        count = batch.nstats
        stats = list(map(os.stat_result, _RECORD.iter_unpack(
            self._stats_view[:count * _RECORD.size]))) if count else []
        if end == _SLOW:
            # Times C cannot give as int64 nanoseconds: CPython builds that stat.
            more, end, error = _lstat_names(fd, names[count:count + 1])
            stats += more
            return stats, (_MORE if end == _DONE else end), error
        if end == _FAILED:
            return stats, end, _os_error(batch.error, names[count])
        if end == _UNLISTABLE:
            return stats, end, _os_error(batch.error)
        return stats, end, None


def _os_error(code, *filename):
    """The OSError (FileNotFoundError for ENOENT...) os.lstat or os.scandir raises for ``code``."""
    return OSError(code, os.strerror(code), *filename)


def _stat_values(st):
    """All 19 values of an os.stat_result (its equality compares the first 10)."""
    return tuple(st[:10]) + tuple(getattr(st, name) for name in _STAT_FIELDS[10:])


def _native_core_fits():
    """Whether the native core's records make this Python's very os.stat_result:
    the same fields in the same places, and for a real file, what os.lstat gives."""
    n = len(_STAT_FIELDS)
    if os.stat_result.n_fields != n or lib.VZ7W_STAT_FIELDS != n or _RECORD.size != 8 * n:
        return False
    if _stat_values(os.stat_result(tuple(range(n)))) != tuple(range(n)):
        return False
    here, name = os.path.split(os.fsencode(os.path.abspath(__file__)))
    try:
        fd = os.open(here, _TOP_FLAGS)
    except OSError:
        return False
    try:
        # Twice, in case the file's times changed between the two stats.
        for _ in range(2):
            stats, end, _error = _NativeCore().stat(fd, [name])
            if end == _DONE and _stat_values(stats[0]) == _stat_values(os.lstat(name, dir_fd=fd)):
                return True
        return False
    finally:
        os.close(fd)


def _listings(core, listing, skip, sort):
    """Batches ``(names, dirs, error)`` of one directory's listing (see the
    core's ``list``): as listed or, with ``sort``, all of it in one batch in
    byte order of the names."""
    end = _MORE
    if not sort:
        while end == _MORE:
            names, dirs, end, error = core.list(listing, skip)
            yield names, dirs, error
        return
    listed = []
    while end == _MORE:
        names, dirs, end, error = core.list(listing, skip)
        listed.extend(zip(names, dirs))
    core.close(listing)
    listed.sort()
    yield [name for name, _ in listed], bytes(is_dir for _, is_dir in listed), error


def _chunks(core, dir_fd, listing, skip, sort):
    """The chunks of one directory (what ``list_stat`` returns) when its names
    are listed first and stat'ed afterwards: with excludes, matched on the names
    before any stat, and with ``sort``. Names are stat'ed in runs of up to
    _BATCH that end at the next directory; the last chunk is _DONE. A listing
    error is passed on where it was met: after the names before it, or
    (``sort``) first."""
    for names, dirs, error in _listings(core, listing, skip, sort):
        if error is not None and sort:
            yield _NOTHING, _NOTHING, _UNLISTABLE, error
        start, count = 0, len(names)
        while start < count:
            limit = min(count, start + _BATCH)
            stop = dirs.find(1, start, limit)
            at_dir = stop >= 0
            if not at_dir:
                stop = limit
            if start < stop:
                stats, end, failure = core.stat(dir_fd, names[start:stop])
            else:
                stats, end, failure = _NOTHING, _DONE, None
            if end == _DONE:
                # Every name up to the directory (or the limit) was stat'ed.
                end = _DIR if at_dir else _MORE
                taken = stop - start + at_dir
            else:
                taken = len(stats) + (end != _MORE)
            yield names[start:start + taken], stats, end, failure
            start += taken
        if error is not None and not sort:
            yield _NOTHING, _NOTHING, _UNLISTABLE, error
    yield _NOTHING, _NOTHING, _DONE, None


def _walk(core, top, top_prefix, excluded, one_file_system, report, pre, sort):
    lstat, fstat, os_open, close = os.lstat, os.fstat, os.open, os.close
    S_ISDIR = _stat.S_ISDIR
    off = len(top_prefix)
    list_stat = None if sort else core.list_stat
    try:
        fd = os_open(top, _TOP_FLAGS)
    except NotADirectoryError:
        yield Entry((top, os.stat(top), off))
        return
    # A frame per open directory: (fd, listing, path prefix, its Entry, its next chunk).
    stack = []
    try:
        # ``fd``, ``path``, ``entry``: the directory to enter next, ``top`` first.
        path = top
        entry = Entry((top, fstat(fd), off))
        top_dev = entry[1].st_dev if one_file_system else None
        while True:
            if fd is not None:
                prefix = path + b"/" if stack else top_prefix
                try:
                    listing = core.open(fd, len(stack))
                except OSError as exc:
                    close(fd)
                    fd = None
                    report(path, exc)
                    yield entry
                else:
                    skip = excluded.skipper(prefix) if excluded is not None else None
                    if list_stat is not None and skip is None:
                        next_chunk = partial(list_stat, listing)
                    else:
                        next_chunk = _chunks(core, fd, listing, skip, sort).__next__
                    stack.append((fd, listing, prefix, entry, next_chunk))
                    fd = None
                    if pre:
                        yield entry
            if not stack:
                break

            dir_fd, listing, prefix, dir_entry, next_chunk = stack[-1]
            # Reports are made outside the core's calls, so an exception from
            # ``report`` is never taken for a failed directory read.
            names, stats, end, error = next_chunk()
            for name, st in zip(names, stats):
                yield Entry((prefix + name, st, off))
            if end == _MORE:
                continue
            if end == _DIR:
                name = names[-1]
                path = prefix + name
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
            elif end == _FAILED:
                report(prefix + names[-1], error)
            elif end == _UNLISTABLE:
                report(dir_entry[0], error)
            else:
                stack.pop()
                core.close(listing)
                close(dir_fd)
                if not pre:
                    yield dir_entry
    finally:
        if fd is not None:
            close(fd)
        for frame in stack:
            core.close(frame[1])
            close(frame[0])


# The core of every walk: the native one wherever its records fit.
_CORE = _NativeCore if _native_core_fits() else _PythonCore
