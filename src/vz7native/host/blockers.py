"""Blocker files: a glob inside a container whose matches veto a backup.

The glob is evaluated with the container's root as ``/`` (see ``rootfs``): a
symlink inside the container is followed as the container itself would follow it,
an absolute target means the container's own root, ``..`` stops at the root, and
nothing outside the root is ever looked at, whatever the container's owner put in
its tree. Glob rules are those of ``glob.glob``: ``*``, ``?`` and ``[...]`` within one
path component, names starting with ``.`` only matched by a pattern starting with
``.``, and a match is any entry, dangling symlinks included (``lexists``).
"""
import fnmatch
import os
import re

from vz7native.host import rootfs
from vz7native.host.errors import BlockerError
from vz7native.paths import show

_MAGIC = re.compile(br"[*?[]")


def find_blockers(root, pattern):
    """The paths (bytes, from the container's ``/``) that match ``pattern`` inside
    ``root``: an open directory fd (left open) or a path."""
    pattern = os.fsencode(pattern)
    parts = rootfs.components(pattern)
    if not parts:
        raise BlockerError("the blocker glob %r names nothing inside the container" % show(pattern))
    if isinstance(root, int):
        return _find(root, parts)
    try:
        root_fd = rootfs.open_root(root)
    except OSError as e:
        raise BlockerError("cannot look for blocker files in %s: %s" % (show(os.fsencode(root)),
                                                                         e.strerror))
    try:
        return _find(root_fd, parts)
    finally:
        os.close(root_fd)


def _find(root_fd, parts):
    found = []
    _expand(root_fd, [], [], parts, found)
    return sorted(set(found))


def _expand(root_fd, location, shown, parts, found):
    part, rest = parts[0], parts[1:]
    if part == b"..":
        children = [(location[:-1], part)]
    else:
        children = [(None, name) for name in _matches(root_fd, location, part)]
    for resolved, name in children:
        path = shown + [name]
        if resolved is None:
            try:
                resolved = rootfs.resolve(root_fd, location, name, follow_last=bool(rest))
                rootfs.lstat(root_fd, resolved)
            except OSError:
                continue
        if rest:
            _expand(root_fd, resolved, path, rest, found)
        else:
            found.append(rootfs.joined(path))


def _matches(root_fd, location, part):
    if not _MAGIC.search(part):
        return [part]
    try:
        fd = rootfs.open_dir(root_fd, location)
    except OSError:
        return []
    try:
        names = [os.fsencode(name) for name in os.listdir(fd)]
    except OSError:
        return []
    finally:
        os.close(fd)
    hidden_ok = part.startswith(b".")
    return sorted(name for name in names
                  if fnmatch.fnmatchcase(name, part) and (hidden_ok or not name.startswith(b".")))
