"""copy_tree: an exact copy, down to inode flags, hard-linked specials and
paths longer than PATH_MAX."""
import errno
import os
import stat
import subprocess

import pytest

from ct_tree import assert_same_tree, build_tree, describe
from vz7native import inodeflags, treecopy

pytestmark = pytest.mark.root

LONG_NAME = b"d" * 250
LONG_LEVELS = 20            # 20 x 251 bytes: past PATH_MAX (4096)


def _flags(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        return inodeflags.read_flags(fd)
    finally:
        os.close(fd)


def _chattr(spec, *paths):
    subprocess.check_call([b"chattr", spec] + list(paths))


def _long_chain(top, create):
    """The fd of the last of LONG_LEVELS nested LONG_NAME directories below ``top``."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(LONG_LEVELS):
        if create:
            os.mkdir(LONG_NAME, dir_fd=fd)
        next_fd = os.open(LONG_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    return fd


@pytest.fixture
def trees(tmp_path):
    base = os.fsencode(str(tmp_path))
    source, target = os.path.join(base, b"source"), os.path.join(base, b"target")
    os.mkdir(source)
    os.mkdir(target)
    pinned = []
    yield source, target, pinned
    for path in pinned:     # immutable and append-only entries cannot be removed
        if os.path.lexists(path):
            _chattr(b"-ia", path)


def test_a_copy_holds_exactly_the_tree(trees):
    source, target, pinned = trees
    build_tree(source)
    os.utime(source, ns=(-5, 7))
    treecopy.copy_tree(source, target)
    assert_same_tree(source, target, ignore=())
    assert describe(target)[b"."]["mtime"] == 7


def test_inode_flags_are_set_last(trees):
    source, target, pinned = trees
    locked_dir = os.path.join(source, b"locked")
    os.mkdir(locked_dir)
    for name, data in ((b"immutable", b"never changes\n"), (b"append", b"log\n")):
        with open(os.path.join(locked_dir, name), "wb") as f:
            f.write(data)
    os.link(os.path.join(locked_dir, b"immutable"), os.path.join(source, b"immutable.link"))
    os.utime(os.path.join(locked_dir, b"immutable"), ns=(1, 2))
    os.utime(locked_dir, ns=(3, 4))
    paths = [os.path.join(locked_dir, b"immutable"), os.path.join(locked_dir, b"append"),
             locked_dir]
    pinned.extend(paths + [os.path.join(target, os.path.relpath(p, source)) for p in paths])
    _chattr(b"+i", paths[0], locked_dir)
    _chattr(b"+a", paths[1])
    treecopy.copy_tree(source, target)
    copied = os.path.join(target, b"locked")
    assert _flags(os.path.join(copied, b"immutable")) & treecopy.COPIED_FLAGS == \
        inodeflags.IMMUTABLE_FL
    assert _flags(os.path.join(copied, b"append")) & treecopy.COPIED_FLAGS == \
        inodeflags.APPEND_FL
    assert _flags(copied) & treecopy.COPIED_FLAGS == inodeflags.IMMUTABLE_FL
    assert os.lstat(os.path.join(copied, b"immutable")).st_mtime_ns == 2
    assert os.lstat(copied).st_mtime_ns == 4
    assert describe(target) == describe(source)


def test_paths_longer_than_path_max(trees):
    source, target, _ = trees
    fd = _long_chain(source, create=True)
    try:
        with open(os.open(b"bottom", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd), "wb") as f:
            f.write(b"far down\n")
        os.symlink(b"bottom", b"bottom.link", dir_fd=fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as too_long:
        os.lstat(os.path.join(source, *[LONG_NAME] * LONG_LEVELS))
    assert too_long.value.errno == errno.ENAMETOOLONG
    treecopy.copy_tree(source, target)
    fd = _long_chain(target, create=False)
    try:
        with open(os.open(b"bottom", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"far down\n"
        assert stat.S_IMODE(os.lstat(b"bottom", dir_fd=fd).st_mode) == 0o640
        assert os.readlink(b"bottom.link", dir_fd=fd) == b"bottom"
    finally:
        os.close(fd)


def test_a_failure_names_the_entry(trees, tmpfs_at):
    source, _, _ = trees
    with open(os.path.join(source, b"big"), "wb") as f:
        f.write(os.urandom(2 << 20))
    small = tmpfs_at(b"small", options=b"size=1m")
    with pytest.raises(treecopy.CopyError, match="cannot copy big from .*: No space left") as e:
        treecopy.copy_tree(source, small)
    assert e.value.errno == errno.ENOSPC and e.value.path == b"big"


def test_a_setgid_target_passes_no_group_on(trees):
    source, target, _ = trees
    os.makedirs(os.path.join(source, b"sub/subsub"))
    for rel in (b"top-file", b"sub/file", b"sub/subsub/file"):
        open(os.path.join(source, rel), "w").close()
    os.chown(target, 0, 1234)
    os.chmod(target, 0o2775)            # what is made in it gets group 1234 and setgid dirs
    treecopy.copy_tree(source, target)
    assert describe(target) == describe(source)
