"""vz7native.image against libploop itself (Debian 1.15: CLI and binding), on real
container disks (GPT + ext4 filled by make_ct_raw_disk from a tree with every file kind).

libploop must accept what we write (``ploop check``), give it back unchanged
(``ploop convert -f raw``), snapshot and merge it; our reader must show every
snapshot exactly. Format v2 runs libploop in a namespace that fakes v2 support
(ploop_tools).
"""
import filecmp
import hashlib
import os
import shutil
import subprocess

import pytest

import ct_tree
from conftest import require
from fanotify_gate import FAN_ACCESS_PERM, Gate
from mid_merge import MergeCopy, in_use
from ploop_tools import (LibploopFailed, check_deltas, convert_to_raw, libploop_merge,
                         libploop_snapshot, run_binding, run_ploop, snapshotted_image,
                         start_binding)
from test_image import DAMAGES, MiB, write_pattern_disk, written_in_place
from vz7native import image

pytestmark = pytest.mark.root

DISK_SIZE = 128 * MiB
TOOLS = ("ploop", "unshare", "mkfs.ext4", "parted", "e2fsck", "debugfs", "setfacl", "mount")


@pytest.fixture(scope="module", autouse=True)
def tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    require(not missing, "missing tools: %s (tools/install-system-deps)" % ", ".join(missing))


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """Raw container disks of the tree before and after change_tree, and the trees."""
    base = tmp_path_factory.mktemp("ct")
    old_tree, new_tree = base / "old", base / "new"
    old_tree.mkdir()
    new_tree.mkdir()
    ct_tree.build_tree(str(old_tree))
    ct_tree.build_tree(str(new_tree))
    ct_tree.change_tree(str(new_tree))
    old_raw, new_raw = str(base / "old.raw"), str(base / "new.raw")
    image.make_ct_raw_disk(str(old_tree), DISK_SIZE, old_raw)
    image.make_ct_raw_disk(str(new_tree), DISK_SIZE, new_raw)
    return {"old_tree": str(old_tree), "new_tree": str(new_tree),
            "old": old_raw, "new": new_raw}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_content(vdisk, raw_path):
    """Compare a virtual disk with a raw disk file, 4 MiB at a time."""
    assert vdisk.size == os.path.getsize(raw_path)
    with open(raw_path, "rb") as f:
        for offset in range(0, vdisk.size, 4 * MiB):
            if vdisk.read(offset, 4 * MiB) != f.read(4 * MiB):
                return False
    return True


def extract_partition(vdisk, path):
    """Write the GPT partition of ``vdisk`` to the sparse file ``path``."""
    part = image.find_partition(vdisk)
    with open(path, "wb") as f:
        f.truncate(part.size)
        for offset in range(0, part.size, MiB):
            data = vdisk.read(part.offset + offset, min(MiB, part.size - offset))
            if data != bytes(len(data)):
                f.seek(offset)
                f.write(data)
    return path


def debugfs(fs_path, request):
    return subprocess.check_output(["debugfs", "-R", request, fs_path],
                                   stderr=subprocess.DEVNULL)


# -- what we write is what libploop writes ---------------------------------------

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", ["1001K", "64M", "300G"])
def test_an_empty_image_is_byte_identical_to_libploops(tmp_path, version, size):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    run_ploop("init", "-s", size, "-t", "none", "-v", str(version), theirs / "root.hds",
              fake_v2=version == 2)
    raw = tmp_path / "zeros.raw"
    with open(str(raw), "wb") as f:
        f.truncate(int(size[:-1]) << {"K": 10, "M": 20, "G": 30}[size[-1]])
    image.import_raw(str(raw), str(ours), version=version)
    assert filecmp.cmp(str(ours / "root.hds"), str(theirs / "root.hds"), shallow=False)
    # The descriptors differ only in the root element's name, which says which
    # libploop wrote it (1.x Parallels_, 7.x Virtuozzo_disk_image); both read either.
    our_root = image.read_descriptor(str(ours)).root
    their_root = image.read_descriptor(str(theirs)).root
    assert their_root in ("Parallels_disk_image", "Virtuozzo_disk_image")
    ours_text = (ours / "DiskDescriptor.xml").read_bytes()
    theirs_text = (theirs / "DiskDescriptor.xml").read_bytes()
    assert ours_text == theirs_text.replace(their_root.encode(), our_root.encode())


@pytest.mark.parametrize("version", [1, 2])
def test_libploop_checks_and_converts_back_what_we_import(tmp_path, disks, version):
    dd = image.import_raw(disks["old"], str(tmp_path / "ct"), version=version)
    check_deltas([e.file for e in image.read_descriptor(dd).chain()], fake_v2=version == 2)
    raw = convert_to_raw(dd, fake_v2=version == 2)
    assert filecmp.cmp(raw, disks["old"], shallow=False)


@pytest.mark.parametrize("version", [1, 2])
def test_libploop_checks_and_converts_back_an_in_place_image(tmp_path, version):
    new, content = written_in_place(str(tmp_path / "ct"), version)
    dd = new.seal()
    check_deltas([new.path], fake_v2=version == 2)
    with open(convert_to_raw(dd, fake_v2=version == 2), "rb") as f:
        assert f.read() == content


def damaged_image(tmp_path, damage):
    """A pattern disk imported and then damaged as DAMAGES says; returns (raw, dd, delta)."""
    raw = str(tmp_path / "disk.raw")
    write_pattern_disk(raw, 48 * MiB, [0, 1, 2, 5, 20, 21, 22, 23, 47])
    dd = image.import_raw(raw, str(tmp_path / "img"))
    delta = image.read_descriptor(dd).chain()[0].file
    action, reported, _ = DAMAGES[damage]
    action(delta, dd)
    assert any(reported in p for p in image.verify(dd).problems)
    return raw, dd, delta


@pytest.mark.parametrize("damage", sorted(set(DAMAGES) - {
    "descriptor size", "partial cluster", "sparse"}))
def test_libploop_also_rejects_what_verify_reports(tmp_path, damage):
    _, _, delta = damaged_image(tmp_path, damage)
    rc, output = run_ploop("check", "-r", "-f", "-c", delta, check=False)
    assert rc != 0, output


def test_libploop_fills_the_holes_verify_reports(tmp_path):
    """A sparse delta: 1.15's read-only check refuses it, 7.x's accepts it (7.x
    can create sparse images). Both fill the holes on request (-S); the delta
    then passes both checks and still holds the same disk."""
    raw, dd, delta = damaged_image(tmp_path, "sparse")
    run_ploop("check", "-f", "-S", delta)
    assert image.verify(dd).ok, image.verify(dd).problems
    check_deltas([delta])
    # The hole punched at 64 KiB of the file lies in the BAT's zero padding,
    # so the disk reads as before.
    with image.open_virtual_disk(dd) as vdisk, open(raw, "rb") as f:
        assert vdisk.read(0, vdisk.size) == f.read()


# -- snapshots ----------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_snapshot_views_and_merge(tmp_path, disks, version):
    fake_v2 = version == 2
    dd = image.import_raw(disks["old"], str(tmp_path / "ct"), version=version)
    guid = libploop_snapshot(dd, fake_v2=fake_v2)
    descriptor = image.read_descriptor(dd)
    snapshot_file = descriptor.images[guid].file
    frozen = sha256(snapshot_file)
    written = image.write_clusters(dd, disks["new"])
    assert written > 0
    assert sha256(snapshot_file) == frozen, "the snapshot's delta must not change"

    top_file = descriptor.images[image.TOP_GUID].file
    check_deltas([top_file, snapshot_file], fake_v2=fake_v2)
    report = image.verify(dd)
    assert report.ok, report.problems
    assert report.clusters[image.TOP_GUID] == written

    fs = {}
    for name, view in (("old", guid), ("new", None)):
        with image.open_virtual_disk(dd, view) as vdisk:
            assert [d.guid for d in vdisk.deltas] == (
                [guid] if view else [image.TOP_GUID, guid])
            assert same_content(vdisk, disks[name])
            fs[name] = extract_partition(vdisk, str(tmp_path / (name + ".ext4")))
        subprocess.check_call(["e2fsck", "-fn", fs[name]], stdout=subprocess.DEVNULL)
    assert debugfs(fs["old"], "cat /home/user/notes.txt") == b"first version\n" * 100
    assert debugfs(fs["new"], "cat /home/user/notes.txt") == b"second version\n" * 120
    assert b"new-file" not in debugfs(fs["old"], "ls /home/user")
    assert b"new-file" in debugfs(fs["new"], "ls /home/user")

    libploop_merge(dd, fake_v2=fake_v2)
    assert len(image.read_descriptor(dd).images) == 1
    raw = convert_to_raw(dd, fake_v2=fake_v2)
    assert filecmp.cmp(raw, disks["new"], shallow=False)


def test_a_merge_killed_midway_is_finished_after_clear_in_use(tmp_path, disks):
    """What libploop leaves when its offline merge of a snapshot is killed while
    it copies the clusters: the descriptor as it was (7.x marks the snapshot
    temporary), the new one beside it, the snapshot's delta marked in use,
    which its next merge refuses.
    clear_in_use releases the delta, libploop then merges; the disk reads the
    same throughout."""
    dd, guid = snapshotted_image(disks["old"], disks["new"], str(tmp_path / "ct"))
    descriptor = image.read_descriptor(dd)
    snapshot_file = descriptor.images[guid].file
    top_file = descriptor.images[image.TOP_GUID].file
    # 7.x marks the snapshot it deletes as temporary first; 1.15 leaves it as it is.
    marked = [s._replace(temporary=s.temporary or s.guid == guid) for s in descriptor.snapshots]
    delete = "with ploop.Disk.open(args[0]) as disk: disk.delete_snapshot(args[1])"
    with Gate(MergeCopy(top_file, snapshot_file)) as gate:
        gate.watch(top_file, FAN_ACCESS_PERM)
        merge = start_binding(delete, dd, guid)
        held = gate.wait_held(60)
        merge.kill()
        output = merge.communicate()[0]
        assert held is not None and held.pid == merge.pid, output
    killed = image.read_descriptor(dd)
    assert killed.images == descriptor.images
    assert killed.snapshots in (descriptor.snapshots, marked)
    assert os.path.exists(dd + b".tmp") and in_use(snapshot_file)
    with image.open_virtual_disk(dd) as vdisk:
        assert same_content(vdisk, disks["new"])
    with pytest.raises(LibploopFailed, match="open_delta: Device or resource busy"):
        run_binding(delete, dd, guid)

    assert image.clear_in_use(dd, guid) is True
    check_deltas([snapshot_file, top_file])
    with image.open_virtual_disk(dd) as vdisk:
        assert same_content(vdisk, disks["new"])
    run_binding(delete, dd, guid)
    assert list(image.read_descriptor(dd).images) == [image.TOP_GUID]
    assert not os.path.exists(top_file) and not os.path.exists(dd + b".tmp")
    raw = convert_to_raw(dd)
    assert filecmp.cmp(raw, disks["new"], shallow=False)


def test_raw_mode_image_with_a_snapshot(tmp_path, disks):
    """A raw (Plain) base under a ploop1 top: libploop's raw mode after a snapshot."""
    run_ploop("init", "-f", "raw", "-s", "%dK" % (DISK_SIZE >> 10), "-t", "none",
              tmp_path / "root.hds")
    dd = str(tmp_path / "DiskDescriptor.xml")
    assert image.write_clusters(dd, disks["old"]) > 0  # in place, into the raw file
    assert filecmp.cmp(str(tmp_path / "root.hds"), disks["old"], shallow=False)
    guid = libploop_snapshot(dd)
    image.write_clusters(dd, disks["new"])
    descriptor = image.read_descriptor(dd)
    assert descriptor.mode == "raw"
    assert [e.kind for e in descriptor.chain()] == ["Compressed", "Plain"]
    check_deltas([descriptor.images[image.TOP_GUID].file])
    for view, name in ((guid, "old"), (None, "new")):
        with image.open_virtual_disk(dd, view) as vdisk:
            assert same_content(vdisk, disks[name])
    assert image.verify(dd).ok
    libploop_merge(dd)
    assert filecmp.cmp(str(tmp_path / "root.hds"), disks["new"], shallow=False)


def test_make_ct_disk_v2_with_libploop(tmp_path, disks):
    dd = image.make_ct_disk(disks["old_tree"], 64 * MiB, str(tmp_path / "ct"), version=2)
    check_deltas([image.read_descriptor(dd).chain()[0].file], fake_v2=True)
    spec = run_binding("d = ploop.Disk.open(args[0]); print(d.format_version, d.size)", dd,
                       fake_v2=True).split()
    assert spec == ["2", str(64 * MiB)]


def test_snapshotted_image_helper(tmp_path, disks):
    dd, guid = snapshotted_image(disks["old"], disks["new"], str(tmp_path / "ct"), version=2)
    assert [e.guid for e in image.read_descriptor(dd).chain()] == [image.TOP_GUID, guid]
    with image.open_virtual_disk(dd, guid) as vdisk:
        assert same_content(vdisk, disks["old"])


# -- the disk builder -------------------------------------------------------------------

def test_the_disk_builder_keeps_every_file_kind(tmp_path, disks):
    """make_ct_raw_disk keeps what a container needs: the
    ext4 in the raw disk, mounted read-only over loop, equals its source tree."""
    for name in ("old", "new"):
        mount_point = tmp_path / name
        mount_point.mkdir()
        with image.RawDiskFile(disks[name]) as disk:
            part = image.find_partition(disk)
        subprocess.check_call(["mount", "-o", "ro,loop,offset=%d,sizelimit=%d"
                               % (part.offset, part.size), disks[name], str(mount_point)])
        try:
            seen = ct_tree.describe(str(mount_point))
        finally:
            subprocess.check_call(["umount", str(mount_point)])
        assert seen == ct_tree.describe(disks[name + "_tree"])
    old = ct_tree.describe(disks["old_tree"])
    assert os.path.join(ct_tree.NON_UTF8_DIR, ct_tree.NON_UTF8_FILE) in old
    assert old[b"srv/ping"]["xattrs"]["security.capability"] == ct_tree.CAPABILITY
    assert old[b"var/lib/sparse.img"]["sparse"] is True
    assert old[b"var/lib/data"]["links"] == [b"srv/data.link", b"var/lib/data",
                                             b"var/lib/data.link"]
