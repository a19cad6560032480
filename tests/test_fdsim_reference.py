"""The reference plugin (tests/fdsim/plugins/reference_tree.py) backs up and
restores a real directory tree: Full, Incremental, Accurate deletion, and a
restore that gives back every name, type, owner, mode, time, xattr, ACL, hardlink
and hole -- showing that the drivers and the catalog work together."""
import os
import shutil
import stat
import subprocess

import pytest

from fdsim.testing import make_director, plugin_line
from vz7native.host.tree import CAPABILITY


def make_tree(root):
    """Files, directories, a symlink, a hardlink, a FIFO, a sparse file, an
    xattr, and a name that is not UTF-8."""
    os.makedirs(os.path.join(root, "d1", "d2"))
    with open(os.path.join(root, "a.txt"), "w") as f:
        f.write("hello")
    with open(os.path.join(root, "d1", "d2", "b.bin"), "wb") as f:
        f.write(os.urandom(300000))
    os.link(os.path.join(root, "a.txt"), os.path.join(root, "d1", "hard.txt"))
    os.symlink("../a.txt", os.path.join(root, "d1", "sym"))
    os.mkfifo(os.path.join(root, "fifo"), 0o640)
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.seek(3 * 262136)
        f.write(b"end")
    os.setxattr(os.path.join(root, "a.txt"), "user.test", b"v1")
    with open(os.path.join(root.encode(), b"K\xdcBLER.csv"), "w") as f:
        f.write("not UTF-8")
    os.chmod(os.path.join(root, "d1"), 0o750)
    for path in (os.path.join(root, "a.txt"), os.path.join(root, "d1")):
        os.utime(path, (1600000000, 1600000000))


def snapshot(root):
    """path -> comparable attributes (ctime and atime of dirs excluded)."""
    result = {}
    for directory, dirs, files in os.walk(root.encode()):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            entry = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                     int(st.st_mtime), st.st_size, st.st_nlink)
            if stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry += (f.read(),)
                entry += (sorted((n, os.getxattr(path, n)) for n in os.listxattr(path)),)
            result[os.path.relpath(path, root.encode())] = entry
    return result


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "src")
    make_tree(root)
    return root


@pytest.mark.parametrize("version, io", [(23, "plugin"), (23, "core"), (20, "plugin")])
def test_full_backup_and_restore(tmp_path, tree, version, io):
    director = make_director(tmp_path / "fdsim", bareos_version=version)
    line = plugin_line("reference_tree", root=tree, io=io)
    backup = director.backup(line, fileset_options={"sparse": True, "hardlinks": True})
    # the non-UTF-8 name is skipped with an M_ERROR: OK with warnings
    assert backup.status == "W"
    assert backup.plugin_messages("M_ERROR") == ["skipped %r: not a UTF-8 name or link target"
                                          % os.path.join(tree.encode(), b"K\xdcBLER.csv")]
    assert backup.files == 9
    where = str(tmp_path / "restored")
    restore = director.restore(where=where)
    assert restore.status == "T" and restore.files == 9
    expected = snapshot(tree)
    del expected[b"K\xdcBLER.csv"]
    assert snapshot(where + tree) == expected
    assert os.stat(where + tree + "/sparse").st_blocks * 512 < 3 * 262136  # holes restored


def test_restore_in_place_with_where_root(tmp_path, tree):
    """where=/ gives the plugin the original names (rp.where == ''); directories
    come with their trailing slash, which the plugin's calls accept."""
    director = make_director(tmp_path / "fdsim")
    director.backup(plugin_line("reference_tree", root=tree), fileset_options={"hardlinks": True})
    expected = snapshot(tree)
    del expected[b"K\xdcBLER.csv"]
    shutil.rmtree(tree)
    restore = director.restore(where="/")
    assert restore.status == "T" and restore.files == 9
    assert snapshot(tree) == expected


def test_incremental_and_accurate_deletion(tmp_path, tree):
    clock_now = [2000000000]
    director = make_director(tmp_path / "fdsim", clock=lambda: clock_now[0])
    for path, _, files in os.walk(tree):  # everything is older than the Full
        for name in files + [""]:
            os.utime(os.path.join(path, name), (1600000000, 1600000000), follow_symlinks=False)
    line = plugin_line("reference_tree", root=tree)
    full = director.backup(line, accurate=True)
    assert full.files == 9

    clock_now[0] += 100
    os.unlink(os.path.join(tree, "d1", "d2", "b.bin"))
    with open(os.path.join(tree, "new.txt"), "w") as f:
        f.write("new")
    incr = director.backup(line, level="I", accurate=True)
    rows = {r["path"]: r for r in director.files(incr.jobid)}
    # new.txt, its parent (mtime changed), d2 (mtime changed) and the deletion
    assert sorted(rows) == sorted([tree + "/new.txt", tree + "/", tree + "/d1/d2/",
                                   tree + "/d1/d2/b.bin"])
    assert rows[tree + "/d1/d2/b.bin"]["deleted"] == 1

    where = str(tmp_path / "restored")
    restore = director.restore(where=where)  # latest Full + Incremental
    assert restore.status == "T"
    assert os.path.exists(where + tree + "/new.txt")
    assert not os.path.exists(where + tree + "/d1/d2/b.bin")  # the restore tree hides it
    assert os.path.exists(where + tree + "/a.txt")


@pytest.mark.root
def test_devices_owners_and_acls(tmp_path, tree):
    os.mknod(os.path.join(tree, "null"), 0o20640 | 0, os.makedev(1, 3))
    os.chown(os.path.join(tree, "a.txt"), 1234, 5678)
    os.lchown(os.path.join(tree, "d1", "sym"), 4321, 8765)
    subprocess.check_call(["setfacl", "-m", "u:1:r", os.path.join(tree, "a.txt")])
    # A file capability survives only if it is set after the owner (chown drops it).
    os.setxattr(os.path.join(tree, "a.txt"), "security.capability", CAPABILITY)
    director = make_director(tmp_path / "fdsim")
    director.backup(plugin_line("reference_tree", root=tree), fileset_options={"hardlinks": True})
    where = str(tmp_path / "restored")
    assert director.restore(where=where).status == "T"
    null = os.lstat(where + tree + "/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert (os.lstat(where + tree + "/a.txt").st_uid, os.lstat(where + tree + "/d1/sym").st_uid) == (
        1234, 4321)
    assert (os.getxattr(where + tree + "/a.txt", "system.posix_acl_access")
            == os.getxattr(tree + "/a.txt", "system.posix_acl_access"))
    assert os.getxattr(where + tree + "/a.txt", "security.capability") == CAPABILITY
    expected = snapshot(tree)
    del expected[b"K\xdcBLER.csv"]
    assert snapshot(where + tree) == expected


@pytest.mark.root
def test_restore_everything_through_the_core(tmp_path, tree):
    """restore=core: CF_CORE for every entry.  The core creates directories (with
    owner and mode), symlinks, hardlinks and FIFOs, but no device nodes, and it
    restores no times (§6, §13)."""
    os.mknod(os.path.join(tree, "null"), 0o20640, os.makedev(1, 3))
    director = make_director(tmp_path / "fdsim")
    director.backup(plugin_line("reference_tree", root=tree),
                    fileset_options={"hardlinks": True})
    where = str(tmp_path / "restored")
    result = director.restore(where=where, plugin_options="python3:restore=core")
    assert result.status == "T"
    base = where + tree
    assert stat.S_IMODE(os.lstat(base + "/d1").st_mode) == 0o750
    assert os.path.samefile(base + "/a.txt", base + "/d1/hard.txt")
    assert os.readlink(base + "/d1/sym") == "../a.txt"
    assert stat.S_ISFIFO(os.lstat(base + "/fifo").st_mode)
    assert not os.path.lexists(base + "/null")
    assert int(os.lstat(base + "/a.txt").st_mtime) != 1600000000
