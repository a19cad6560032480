"""The test-tree helpers themselves: the rich tree has what it promises, and
compare_trees notices every kind of difference it claims to compare."""
import os
import shutil
import stat
import subprocess

import pytest

from trees import ODD_NAMES, assert_same_tree, build_rich_tree, compare_trees

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return build_rich_tree(os.path.join(os.fsencode(str(tmp_path_factory.mktemp("rich"))),
                                        b"tree"))


@pytest.fixture
def copy(rich, tmp_path):
    target = os.path.join(os.fsencode(str(tmp_path)), b"copy")
    # GNU cp -a keeps everything compare_trees looks at (sockets, ACLs, capabilities too).
    subprocess.check_call([b"cp", b"-a", rich, target])
    return target


def test_rich_tree_holds_every_kind(rich):
    kinds = set()
    for dirpath, dirnames, filenames in os.walk(rich):
        for name in dirnames + filenames:
            kinds.add(stat.S_IFMT(os.lstat(os.path.join(dirpath, name)).st_mode))
    assert kinds == {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
                     stat.S_IFBLK, stat.S_IFSOCK}
    names = os.listdir(os.path.join(rich, b"dir"))
    assert all(n in names for n in ODD_NAMES)
    assert os.stat(os.path.join(rich, b"linked")).st_nlink == 3
    sparse = os.stat(os.path.join(rich, b"sparse"))
    assert sparse.st_blocks * 512 < sparse.st_size
    assert "system.posix_acl_access" in os.listxattr(os.path.join(rich, b"acl"))
    assert "system.posix_acl_default" in os.listxattr(os.path.join(rich, b"acl.d"))


def test_a_faithful_copy_has_no_differences(rich, copy):
    assert_same_tree(rich, copy)


def _change_content(path):
    with open(os.path.join(path, b"big.bin"), "r+b") as f:
        f.seek(1 << 20)
        f.write(b"X")


def _break_hardlink(path):
    victim = os.path.join(path, b"dir", b"linked.2")
    data = open(victim, "rb").read()
    st = os.lstat(victim)
    os.unlink(victim)
    with open(victim, "wb") as f:
        f.write(data)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fill_hole(path):
    victim = os.path.join(path, b"sparse")
    st = os.lstat(victim)
    subprocess.check_call([b"fallocate", b"-l", b"%d" % st.st_size, victim])
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def _retarget(path):
    link = os.path.join(path, b"dangling")
    st = os.lstat(link)
    os.unlink(link)
    os.symlink(b"elsewhere", link)
    os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _rename_odd(path):
    os.rename(os.path.join(path, b"dir", b"caf\xe9"), os.path.join(path, b"dir", b"cafe"))


CHANGES = {
    "mode": (lambda p: os.chmod(os.path.join(p, b"setuid"), 0o755), "setuid: mode"),
    "owner": (lambda p: os.chown(os.path.join(p, b"owned"), 1000, 1001), "owned: gid"),
    "mtime": (lambda p: os.utime(os.path.join(p, b"empty"), (5, 5)), "empty: mtime"),
    "content": (_change_content, "big.bin: sha256"),
    "xattr": (lambda p: os.setxattr(os.path.join(p, b"xattrs"), b"user.text", b"other"),
              "xattrs: xattrs"),
    "acl": (lambda p: subprocess.check_call([b"setfacl", b"-x", b"u:1234",
                                             os.path.join(p, b"acl")]), "acl: xattrs"),
    "rdev": (lambda p: (os.unlink(os.path.join(p, b"char")),
                        os.mknod(os.path.join(p, b"char"), 0o620 | stat.S_IFCHR,
                                 os.makedev(1, 5))), "char: rdev"),
    "symlink": (_retarget, "dangling: target"),
    "hardlink": (_break_hardlink, "hard-link groups"),
    "sparse": (_fill_hole, "sparse: sparse"),
    "missing": (lambda p: os.unlink(os.path.join(p, b"fifo")), "fifo: missing"),
    "extra": (lambda p: open(os.path.join(p, b"deep", b"extra"), "w").close(),
              "deep/extra: unexpected"),
    "name": (_rename_odd, "dir/caf\\xe9: missing"),
    "type": (lambda p: (os.unlink(os.path.join(p, b"socket")),
                        os.mkfifo(os.path.join(p, b"socket"), 0o755)), "socket: type"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_kind_of_difference_is_reported(rich, copy, change):
    apply, expected = CHANGES[change]
    apply(copy)
    problems = compare_trees(rich, copy)
    assert any(p.startswith(expected) for p in problems), problems


def test_ignore_root_leaves_out_top_level_names(rich, copy):
    os.mkdir(os.path.join(copy, b"lost+found"))
    assert compare_trees(rich, copy) != []
    assert compare_trees(rich, copy, ignore_root=(b"lost+found",)) == []


def test_every_difference_is_listed(rich, copy):
    os.chmod(os.path.join(copy, b"setgid"), 0o711)
    shutil.rmtree(os.path.join(copy, b"acl.d"))
    problems = compare_trees(rich, copy)
    assert any(p.startswith("setgid: mode") for p in problems)
    assert any(p.startswith("acl.d: missing") for p in problems)
