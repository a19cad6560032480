"""The sandbox host: what it builds, that a seed decides it all, and its cleanup."""
import hashlib
import os
import stat
import subprocess

import pytest

from conftest import require
from vz7native import image
from vz7native.host import RUNNING, STOPPED, procfs
from vz7native.host.sandbox import DEFAULT_DISK_SIZE, Sandbox, write_tree

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def as_root():
    require(os.geteuid() == 0, "needs root (device nodes, owners, bind mounts)")


def listing(top):
    """Everything a tree is made of, but inode numbers: {path: properties}."""
    result = {}
    for base, dirs, files in os.walk(os.fsencode(top)):
        for name in dirs + files + ([b"."] if base == os.fsencode(top) else []):
            path = os.path.normpath(os.path.join(base, name))
            st = os.lstat(path)
            props = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                     st.st_nlink, st.st_rdev, st.st_mtime_ns if name != b"." else None,
                     st.st_size if not stat.S_ISDIR(st.st_mode) else None)
            if stat.S_ISLNK(st.st_mode):
                props += (os.readlink(path),)
            else:
                props += (tuple((k, os.getxattr(path, k)) for k in sorted(os.listxattr(path))),)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    props += (hashlib.sha256(f.read()).hexdigest(),)
            result[os.path.relpath(path, os.fsencode(top))] = props
    return result


def mounts_under(path):
    prefix = os.path.realpath(os.fsencode(path)) + b"/"
    return [m.mount_point for m in procfs.mounts() if m.mount_point.startswith(prefix)]


def test_the_tree_has_every_kind_of_entry(tmp_path):
    write_tree(str(tmp_path / "t"), 5)
    root = os.fsencode(str(tmp_path / "t"))
    entries = listing(root)
    kinds = {props[0] for props in entries.values()}
    assert kinds == {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
                     stat.S_IFBLK}
    st = lambda rel: os.lstat(os.path.join(root, rel))  # noqa: E731
    assert st(b"home/alice/docs/report.txt").st_nlink == 3
    sparse = st(b"var/log/lastlog")
    assert sparse.st_blocks * 512 < sparse.st_size
    assert st(b"etc/empty.conf").st_size == 0
    assert stat.S_IMODE(st(b"usr/bin/passwd").st_mode) == 0o4755
    assert stat.S_IMODE(st(b"usr/bin/wall").st_mode) == 0o2755
    assert stat.S_IMODE(st(b"tmp").st_mode) == 0o1777
    assert {props[2] for props in entries.values()} >= {0, 48, 1000, 1001}
    assert not os.path.exists(os.readlink(os.path.join(root, b"home/bob/dangling")))
    assert os.path.isdir(os.path.join(root, b"home/alice/documents"))   # a link to a directory
    names = [rel for rel in entries if any(b > 0x7f for b in rel)]
    undecodable = []
    for rel in names:
        try:
            rel.decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(rel)
    assert len(undecodable) >= 3 and len(names) > len(undecodable)
    xattrs = {k for props in entries.values() if isinstance(props[8], tuple)
              for k, _ in props[8]}
    assert {"user.origin", "trusted.vz7native", "security.capability",
            "system.posix_acl_access", "system.posix_acl_default"} <= xattrs
    assert max(rel.count(b"/") for rel in entries) >= 25
    for top in (b"etc", b"var", b"home", b"root", b"dev", b"usr"):
        assert os.path.isdir(os.path.join(root, top))


def test_a_seed_decides_the_tree(tmp_path):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_tree(str(tmp_path / name), seed)
    assert listing(str(tmp_path / "a")) == listing(str(tmp_path / "b"))
    assert listing(str(tmp_path / "a")) != listing(str(tmp_path / "c"))


def test_a_seed_decides_the_host(tmp_path):
    boxes = [Sandbox.build(str(tmp_path / name), count=2, seed=seed, running=())
             for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = [[(ct.uuid, ct.name) for ct in box.containers] for box in boxes]
    assert a == b and a != c
    assert [name for _, name in a] == ["web01", "db02"]
    for ct_a, ct_b in zip(boxes[0].containers, boxes[1].containers):
        with open(os.path.join(ct_a.private, b"ve.conf"), "rb") as f_a, \
                open(os.path.join(ct_b.private, b"ve.conf"), "rb") as f_b:
            assert f_a.read() == f_b.read()
        assert listing(boxes[0].tree(ct_a)) == listing(boxes[1].tree(ct_b))


def test_what_a_container_is_made_of(tmp_path):
    box = Sandbox.build(str(tmp_path / "host"), count=2, seed=1, running=(1,))
    try:
        stopped, running = box.containers
        for ct in box.containers:
            uuid = ct.uuid.encode()
            assert ct.ctid == ct.uuid
            assert os.readlink(box.host.real(b"/etc/vz/conf/%s.conf" % uuid)) == \
                b"/vz/private/%s/ve.conf" % uuid
            assert os.readlink(box.host.real(b"/etc/vz/names/" + ct.name.encode())) == \
                b"/etc/vz/conf/%s.conf" % uuid
            assert os.readlink(os.path.join(ct.private, b".ve.layout")) == b"5"
            assert sorted(os.listdir(ct.private)) == [
                b".owner", b".ve.layout", b"dump", b"root.hdd", b"scripts", b"ve.conf"]
            assert ct.disk_descriptor == os.path.join(ct.private, b"root.hdd/DiskDescriptor.xml")
            assert ct.disk_size == DEFAULT_DISK_SIZE
            assert ct.diskspace == (DEFAULT_DISK_SIZE, DEFAULT_DISK_SIZE)
            assert image.verify(ct.disk_descriptor).ok
        assert box.host.status(stopped).state == STOPPED
        assert box.host.status(running).state == RUNNING
        assert mounts_under(box.root) == [os.path.realpath(running.root)]
        assert listing(running.root) == listing(box.tree(running))
    finally:
        box.close()
    assert mounts_under(box.root) == []


def test_a_crashed_sandbox_is_cleaned_up_by_the_next_one(tmp_path):
    root = str(tmp_path / "host")
    crashed = Sandbox.build(root, count=2, seed=2, running=(0, 1))
    assert len(mounts_under(root)) == 2        # never closed, as after a crash
    fresh = Sandbox.create(root)
    try:
        assert mounts_under(root) == []
        assert fresh.host.containers() == ([], [])
        assert not os.path.exists(crashed.tree(crashed.containers[0]))
    finally:
        fresh.close()


def test_an_unrelated_directory_is_never_taken_over(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious").write_text("keep")
    with pytest.raises(FileExistsError, match="is not a sandbox host"):
        Sandbox.create(str(tmp_path / "data"))
    assert (tmp_path / "data" / "precious").read_text() == "keep"


def test_stage_refuses_unknown_states(tmp_path):
    box = Sandbox.create(str(tmp_path / "host"))
    box.write_container("2d109ae4-5231-475f-bc44-5cabf5d8503b", "web01")
    with pytest.raises(ValueError, match="cannot stage state 'paused'"):
        box.stage(box.host.find(name="web01"), "paused")


def test_cleanup_leaves_other_mounts_alone(tmp_path):
    inside, outside = tmp_path / "host" / "m", tmp_path / "elsewhere"
    box = Sandbox.create(str(tmp_path / "host"))
    inside.mkdir()
    outside.mkdir()
    subprocess.check_call(["mount", "-t", "tmpfs", "none", str(inside)])
    subprocess.check_call(["mount", "-t", "tmpfs", "none", str(outside)])
    try:
        box.close()
        assert mounts_under(str(tmp_path / "host")) == []
        assert mounts_under(str(tmp_path)) == [os.fsencode(str(outside))]
    finally:
        subprocess.check_call(["umount", str(outside)])
