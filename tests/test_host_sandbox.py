"""The sandbox host: what it builds, that a seed decides it all, and its cleanup."""
import os
import stat
import subprocess

import pytest

from conftest import require
from ct_tree import assert_same_tree, describe
from vz7native import image, procfs
from vz7native.mount import mount_readonly, state
from vz7native.host import RUNNING, STOPPED
from vz7native.host.sandbox import DEFAULT_DISK_SIZE, Sandbox
from vz7native.host.tree import (DEEP_LEVELS, NON_UTF8_DIR, NON_UTF8_FILE, OLD_MTIME, TIMES_DIR,
                                 odd_dates, write_tree)

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def as_root():
    require(os.geteuid() == 0, "needs root (device nodes, owners, bind mounts)")


def mounts_under(path):
    prefix = os.path.realpath(os.fsencode(path)) + b"/"
    return [m.mount_point for m in procfs.mounts() if m.mount_point.startswith(prefix)]


def test_the_tree_has_every_kind_of_entry(tmp_path):
    root = os.fsencode(str(tmp_path / "t"))
    os.mkdir(root)
    write_tree(root, 5)
    entries = describe(root)
    assert {props["kind"] for props in entries.values()} == {
        stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
        stat.S_IFBLK}
    assert entries[b"var/lib/data"]["links"] == [b"srv/data.link", b"var/lib/data",
                                                 b"var/lib/data.link"]
    assert entries[b"var/lib/sparse.img"]["sparse"] and entries[b"etc/empty"]["size"] == 0
    assert {rel: entries[rel]["mode"] for rel in (b"srv/setuid", b"usr/bin/passwd",
                                                  b"srv/setgid", b"tmp")} == {
        b"srv/setuid": 0o4755, b"usr/bin/passwd": 0o4755, b"srv/setgid": 0o2750, b"tmp": 0o1777}
    assert {props["uid"] for props in entries.values()} == {0, 33, 1000, 65534}
    assert entries[b"srv/dangling"]["target"] == b"nowhere/at/all"
    for link in (b"var/run", b"home/user/srv"):            # symlinks to directories
        assert os.path.isdir(os.path.join(root, link)) and entries[link]["kind"] == stat.S_IFLNK
    assert os.path.join(NON_UTF8_DIR, NON_UTF8_FILE) in entries
    assert b"home/user/\xe2\x9c\x93 done.txt" in entries and b"srv/" + b"n" * 255 in entries
    xattrs = {k for props in entries.values() for k in props.get("xattrs", ())}
    assert {"user.comment", "user.empty", "trusted.seed", "security.capability",
            "system.posix_acl_access", "system.posix_acl_default"} <= xattrs
    assert max(rel.count(b"/") for rel in entries) == DEEP_LEVELS + 1
    for top in (b"etc", b"var/log", b"home", b"root", b"dev", b"usr/bin", b"tmp", b"run"):
        assert entries[top]["kind"] == stat.S_IFDIR


def test_a_seed_decides_the_tree(tmp_path):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        os.mkdir(str(tmp_path / name))
        write_tree(str(tmp_path / name), seed)
    assert describe(str(tmp_path / "a")) == describe(str(tmp_path / "b"))
    assert describe(str(tmp_path / "a")) != describe(str(tmp_path / "c"))
    top = os.fsencode(str(tmp_path / "a"))
    odd = {os.path.join(TIMES_DIR, name): ns for name, ns in odd_dates()}
    odd[os.path.join(TIMES_DIR, b"fifo-2038.link")] = odd[os.path.join(TIMES_DIR, b"fifo-2038")]
    times = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            # describe() listed the directories and read the symlinks: their atimes moved.
            atime = st.st_atime_ns if name in files and not stat.S_ISLNK(st.st_mode) else None
            times[os.path.relpath(path, top)] = (atime, st.st_mtime_ns)
    assert {rel: t for rel, t in times.items() if rel in odd} == {
        rel: (ns if times[rel][0] is not None else None, ns) for rel, ns in odd.items()}
    assert {t[1] for rel, t in times.items() if rel not in odd} == {OLD_MTIME * 10 ** 9}


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
        assert describe(boxes[0].tree(ct_a)) == describe(boxes[1].tree(ct_b))


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
        assert describe(running.root) == describe(box.tree(running))
    finally:
        box.close()
    assert mounts_under(box.root) == []


def test_the_image_holds_exactly_the_tree(tmp_path):
    """Through the portable mount, entry by entry: times before 1970 and past 2038
    in nanoseconds, hard-linked symlinks and FIFOs, and everything else."""
    box = Sandbox.build(str(tmp_path / "host"), count=1, seed=4, running=())
    ct = box.containers[0]
    target = tmp_path / "view"
    target.mkdir()
    old_run_dir = os.environ.get(state.RUN_DIR_ENV)
    os.environ[state.RUN_DIR_ENV] = str(tmp_path / "run")
    try:
        with mount_readonly(ct.disk_descriptor, str(target), backend="portable") as view:
            assert_same_tree(box.tree(ct), view.target)
            seen = describe(view.target)
            times = os.path.join(view.target, TIMES_DIR)
            for name, ns in odd_dates():
                st = os.lstat(os.path.join(times, name))
                assert (st.st_atime_ns, st.st_mtime_ns) == (ns, ns), name
    finally:
        box.close()
        if old_run_dir is None:
            del os.environ[state.RUN_DIR_ENV]
        else:
            os.environ[state.RUN_DIR_ENV] = old_run_dir
    assert seen[b"srv/os-release"]["links"] == [b"etc/os-release.link", b"srv/os-release"]
    assert seen[b"srv/os-release"]["kind"] == stat.S_IFLNK
    assert seen[b"tmp/fifo"]["links"] == [b"srv/fifo.link", b"tmp/fifo"]
    assert seen[os.path.join(TIMES_DIR, b"fifo-2038")]["links"] == [
        os.path.join(TIMES_DIR, b"fifo-2038"), os.path.join(TIMES_DIR, b"fifo-2038.link")]


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


def test_the_sandbox_prlctl_registers_there_and_does_nothing_else(tmp_path):
    """What the plugin's restore=ct runs as prlctl in the self-test: a container
    restored into the sandbox gets its /etc/vz links; other commands and other
    paths are refused without a change."""
    with Sandbox.build(str(tmp_path / "host"), count=1, running=()) as box:
        registers_only(box, tmp_path)


def registers_only(box, tmp_path):
    ct = box.containers[0]
    links = box.registration_links(ct.ctid, ct.name)
    for link in links:
        os.unlink(link)
    prlctl = box.write_prlctl(str(tmp_path / "bin"))

    def run(*args):
        return subprocess.run([prlctl] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)

    for args, status, said in (
            (["list", "-a"], 2, "only 'register <private> [--preserve-uuid]' is served"),
            (["register", "/vz/private/nosuch", "--preserve-uuid"], 1,
             "no container in /vz/private/nosuch of the sandbox host %s" % box.root.decode())):
        proc = run(*args)
        assert (proc.returncode, said in proc.stdout) == (status, True), proc.stdout
        assert not any(os.path.lexists(link) for link in links)
    proc = run("register", box.host.view(ct.private).decode(), "--preserve-uuid")
    assert proc.returncode == 0, proc.stdout
    assert box.host.find(uuid=ct.uuid).name == ct.name
    assert [os.readlink(link) for link in links] == [
        box.host.view(ct.private) + b"/ve.conf", b"/etc/vz/conf/%s.conf" % ct.ctid.encode()]
