"""The test-tree helpers themselves: the tree has what it promises, and
compare_trees notices every kind of difference it claims to compare."""
import os
import shutil
import stat
import subprocess

import pytest

import ct_tree
from ct_tree import assert_same_tree, build_tree, compare_trees

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = os.path.join(os.fsencode(str(tmp_path_factory.mktemp("ct"))), b"tree")
    os.mkdir(root)
    build_tree(root)
    return root


@pytest.fixture
def copy(tree, tmp_path):
    target = os.path.join(os.fsencode(str(tmp_path)), b"copy")
    # GNU cp -a keeps everything describe() looks at (sockets, ACLs, capabilities too).
    subprocess.check_call([b"cp", b"-a", tree, target])
    return target


def test_the_tree_holds_every_kind(tree):
    kinds = set()
    depth = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        depth = max(depth, dirpath.count(b"/") - tree.count(b"/"))
        for name in dirnames + filenames:
            kinds.add(stat.S_IFMT(os.lstat(os.path.join(dirpath, name)).st_mode))
    assert kinds == {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
                     stat.S_IFBLK, stat.S_IFSOCK}
    assert depth > ct_tree.DEEP_LEVELS
    assert all(name in os.listdir(os.path.join(tree, b"srv")) for name in ct_tree.ODD_NAMES)
    described = ct_tree.describe(tree)
    assert described[os.path.join(ct_tree.NON_UTF8_DIR, ct_tree.NON_UTF8_FILE)]["uid"] == 65534
    assert described[b"var/lib/sparse.img"]["sparse"] is True
    assert described[b"srv/hostname"]["uid"] == 33
    assert "system.posix_acl_access" in described[b"srv/acl"]["xattrs"]
    assert "system.posix_acl_default" in described[b"home/user"]["xattrs"]


def test_a_faithful_copy_has_no_differences(tree, copy):
    assert_same_tree(tree, copy)


def _path(root, rel):
    return os.path.join(root, rel)


def _keep_times(path, change):
    st = os.lstat(path)
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _change_content(path):
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"X")


def _break_hardlink(path):
    data = open(path, "rb").read()
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)


def _retarget(path):
    os.unlink(path)
    os.symlink(b"elsewhere/at/all", path)


def _replace_with_fifo(path):
    os.unlink(path)
    os.mkfifo(path, 0o755)


def _replace_rdev(path):
    os.unlink(path)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))


CHANGES = {
    # name: (entry, change, the difference expected)
    "mode": (b"srv/setuid", lambda p: os.chmod(p, 0o755), "srv/setuid: mode"),
    "owner": (b"home/user/notes.txt", lambda p: os.chown(p, 1000, 1001),
              "home/user/notes.txt: gid"),
    "mtime": (b"etc/empty", lambda p: os.utime(p, (5, 5)), "etc/empty: mtime"),
    "content": (b"home/user/random.bin", lambda p: _keep_times(p, _change_content),
                "home/user/random.bin: sha256"),
    "xattr": (b"srv/xattr", lambda p: os.setxattr(p, b"user.comment", b"other"),
              "srv/xattr: xattrs"),
    "acl": (b"srv/acl", lambda p: subprocess.check_call([b"setfacl", b"-x", b"u:1234", p]),
            "srv/acl: xattrs"),
    "rdev": (b"dev/null", lambda p: _keep_times(p, _replace_rdev), "dev/null: rdev"),
    "symlink": (b"srv/dangling", lambda p: _keep_times(p, _retarget), "srv/dangling: target"),
    "hardlink": (b"srv/data.link", lambda p: _keep_times(p, _break_hardlink),
                 "srv/data.link: links"),
    "sparse": (b"var/lib/sparse.img",
               lambda p: _keep_times(p, lambda q: subprocess.check_call(
                   [b"fallocate", b"-l", b"%d" % os.lstat(q).st_size, q])),
               "var/lib/sparse.img: sparse"),
    "missing": (b"tmp/fifo", os.unlink, "tmp/fifo: missing"),
    "extra": (b"deep/extra", lambda p: open(p, "w").close(), "deep/extra: unexpected"),
    "name": (os.path.join(ct_tree.NON_UTF8_DIR, ct_tree.NON_UTF8_FILE),
             lambda p: os.rename(p, p + b".renamed"),
             "caf\\xe9-\\xff\\xfe/r\\xe9sum\\xe9\\x80.txt: missing"),
    "kind": (b"tmp/socket", lambda p: _keep_times(p, _replace_with_fifo), "tmp/socket: kind"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_kind_of_difference_is_reported(tree, copy, change):
    rel, apply, expected = CHANGES[change]
    apply(_path(copy, rel))
    problems = compare_trees(tree, copy)
    assert any(p.startswith(expected) for p in problems), problems


def test_ignore_leaves_out_top_level_names(tree, copy):
    _keep_times(copy, lambda p: os.mkdir(os.path.join(p, b"extra-dir")))
    assert compare_trees(tree, copy) != []
    assert compare_trees(tree, copy, ignore=(b"lost+found", b"extra-dir")) == []


def test_every_difference_is_listed(tree, copy):
    os.chmod(os.path.join(copy, b"srv/setgid"), 0o711)
    shutil.rmtree(os.path.join(copy, b"var/many"))
    problems = compare_trees(tree, copy)
    assert any(p.startswith("srv/setgid: mode") for p in problems)
    assert sum(p.startswith("var/many") and p.endswith("missing") for p in problems) == 301
    with pytest.raises(AssertionError, match="difference"):
        assert_same_tree(tree, copy)
