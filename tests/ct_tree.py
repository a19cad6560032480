"""The container tree with every kind of file, and the tools to compare trees.

``build_tree(root)`` makes it (``vz7native.host.tree.write_tree``, which sandbox
hosts use too; needs root: device nodes, owners), ``change_tree(root)`` turns it
into "the container after a while" (what a snapshot must not show), and
``describe(root)`` gives a comparable picture of a tree (kinds, modes, owners,
sizes, device numbers, mtimes in nanoseconds, symlink targets, xattrs and ACLs,
content hashes, hard-link groups of every kind of entry, sparseness) so an
image's view can be compared with its source; ``compare_trees(expected, actual)``
lists every difference between two trees, entry by entry, and
``assert_same_tree`` fails with that list.

Access times are left out: listing a directory or reading a symlink sets them
(the content hashes are read with ``O_NOATIME``, so files keep theirs).
"""
import hashlib
import os
import stat

from vz7native.host.tree import (  # noqa: F401 (names the tests use)
    CAPABILITY, DEEP_LEVELS, NON_UTF8_DIR, NON_UTF8_FILE, ODD_NAMES, ODD_TIMES, OLD_MTIME,
    TIMES_DIR, odd_dates, random_bytes, set_dir_times, write_file, write_tree)


def build_tree(root):
    """Fill the (existing, empty) directory ``root`` with the seed-0 tree."""
    write_tree(root, seed=0)


def change_tree(root):
    """What a running container does after a snapshot: edit, add, remove, chmod."""
    root = os.fsencode(root)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    write_file(j(b"home/user/notes.txt"), b"second version\n" * 120, uid=1000, gid=1000,
               mtime=OLD_MTIME + 86400)
    write_file(j(b"home/user/new-file"), random_bytes(2, 2 << 20), uid=1000, gid=1000)
    os.unlink(j(b"var/lib/data.link"))
    os.unlink(j(NON_UTF8_DIR, NON_UTF8_FILE))
    os.chmod(j(b"etc/shadow"), 0o600)
    for n in range(0, 300, 3):
        os.unlink(j(b"var/many", b"file-%04d" % n))
    set_dir_times(root)


def describe(root, ignore=(b"lost+found",)):
    """``{relative path (bytes): properties}`` of every entry under ``root``.

    Properties are those a filesystem image keeps: kind, permission bits,
    owner, size (not for directories), rdev, mtime in nanoseconds, symlink
    target, xattrs (ACLs included), content hash, hard-link group (every path
    of an inode with more than one, sorted) and whether a file is sparse.
    """
    root = os.fsencode(root)
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in ignore]
        for name in sorted(dirnames + filenames) + ([b"."] if dirpath == root else []):
            path = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            props = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                     "gid": st.st_gid, "mtime": st.st_mtime_ns}
            if kind != stat.S_IFDIR:
                props["size"] = st.st_size
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                props["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind == stat.S_IFLNK:
                props["target"] = os.readlink(path)
            else:
                props["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                                   for k in sorted(os.listxattr(path, follow_symlinks=False))}
            if kind == stat.S_IFREG:
                digest = hashlib.sha256()
                with open(os.open(path, os.O_RDONLY | os.O_NOATIME), "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                props["sha256"] = digest.hexdigest()
                props["sparse"] = st.st_blocks * 512 < st.st_size
            if kind != stat.S_IFDIR and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
            entries[rel] = props
    for paths in inodes.values():
        for rel in paths:
            entries[rel]["links"] = sorted(paths)
    return entries


def compare_trees(expected, actual, ignore=(b"lost+found",)):
    """Every difference between the trees ``expected`` and ``actual``, entry by
    entry and property by property (see :func:`describe`), as a list of strings;
    empty when they are the same. ``ignore``: names left out at the top."""
    return picture_differences(describe(expected, ignore), describe(actual, ignore))


def picture_differences(want, got, same=None):
    """Every difference between two :func:`describe`-like pictures, as strings.
    ``same(key, expected, actual)``, when given, may accept values that differ."""
    problems = []
    for rel in sorted(set(want) | set(got)):
        shown = rel.decode("utf-8", "backslashreplace")
        if rel not in got:
            problems.append("%s: missing" % shown)
        elif rel not in want:
            problems.append("%s: unexpected" % shown)
        else:
            for key in sorted(set(want[rel]) | set(got[rel])):
                a, b = want[rel].get(key), got[rel].get(key)
                if a != b and not (same is not None and same(key, a, b)):
                    problems.append("%s: %s is %r, expected %r"
                                    % (shown, key, got[rel].get(key), want[rel].get(key)))
    return problems


def assert_same_tree(expected, actual, ignore=(b"lost+found",)):
    """Fail listing every difference :func:`compare_trees` finds."""
    problems = compare_trees(expected, actual, ignore)
    assert not problems, "%d difference(s):\n  %s" % (len(problems), "\n  ".join(problems))
