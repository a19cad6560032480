"""The container tree with every kind of file, and the tools to compare trees.

``build_tree(root)`` makes it (``vz7native.host.tree.write_tree``, which sandbox
hosts use too; needs root: device nodes, owners), ``change_tree(root)`` turns it
into "the container after a while" (what a snapshot must not show), and
(from ``vz7native.host.tree``) ``describe(root)`` gives a comparable picture of a tree (kinds, modes, owners,
sizes, device numbers, mtimes in nanoseconds, symlink targets, xattrs and ACLs,
content hashes, hard-link groups of every kind of entry, sparseness) so an
image's view can be compared with its source; ``compare_trees(expected, actual)``
lists every difference between two trees, entry by entry, and
``assert_same_tree`` fails with that list.

Access times are left out: listing a directory or reading a symlink sets them
(the content hashes are read with ``O_NOATIME``, so files keep theirs).
"""
import os

from vz7native.host.tree import (  # noqa: F401 (names the tests use)
    CAPABILITY, DEEP_LEVELS, NON_UTF8_DIR, NON_UTF8_FILE, ODD_NAMES, ODD_TIMES, OLD_MTIME,
    TIMES_DIR, compare_trees, describe, odd_dates, picture_differences, random_bytes,
    set_dir_times, write_file, write_tree)


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


def assert_same_tree(expected, actual, ignore=(b"lost+found",)):
    """Fail listing every difference :func:`compare_trees` finds."""
    problems = compare_trees(expected, actual, ignore)
    assert not problems, "%d difference(s):\n  %s" % (len(problems), "\n  ".join(problems))
