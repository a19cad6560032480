"""vz7native.image without libploop: descriptor, ploop1 layout, reader, GPT,
verify on damaged images, the writers and the CLI commands.

The cross-checks against libploop itself are in test_image_libploop.py.
"""
import array
import contextlib
import fcntl
import json
import os
import random
import struct
import subprocess
import sys
import threading

import pytest

from vz7native import cli, image
from vz7native.image import reader as reader_module
from vz7native.image.delta import HEADER, IN_USE_MAGIC, Header

MiB = 1 << 20
TOP = image.TOP_GUID
SNAP = "{d766232c-248f-493f-93ca-79de205778fa}"

# DiskDescriptor.xml as libploop 1.15 writes it after one snapshot.
DD_115 = """<?xml version="1.0"?>
<Parallels_disk_image>
  <Disk_Parameters>
    <Disk_size>131072</Disk_size>
    <Cylinders>256</Cylinders>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
    <Padding>0</Padding>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>131072</End>
      <Blocksize>2048</Blocksize>
      <Image>
        <GUID>{d766232c-248f-493f-93ca-79de205778fa}</GUID>
        <Type>Compressed</Type>
        <File>root.hds</File>
      </Image>
      <Image>
        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>
        <Type>Compressed</Type>
        <File>root.hds.{c87d731e-c07b-4201-8ef1-3d81f4e2f768}</File>
      </Image>
    </Storage>
  </StorageData>
  <Snapshots>
    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>
    <Shot>
      <GUID>{d766232c-248f-493f-93ca-79de205778fa}</GUID>
      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>
    </Shot>
    <Shot>
      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>
      <ParentGUID>{d766232c-248f-493f-93ca-79de205778fa}</ParentGUID>
    </Shot>
  </Snapshots>
</Parallels_disk_image>
"""

# The libploop 7.x dialect: other root, a temporary snapshot, Preallocated,
# 7.x-only elements, an absolute File.
DD_7X = """<?xml version="1.0"?>
<Virtuozzo_disk_image>
  <Disk_Parameters>
    <Disk_size>2097152</Disk_size>
    <Cylinders>2080</Cylinders>
    <Heads>16</Heads>
    <Sectors>63</Sectors>
    <Padding>0</Padding>
    <Encryption><KeyId>k1</KeyId></Encryption>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>2097152</End>
      <Blocksize>512</Blocksize>
      <Preallocated>1</Preallocated>
      <Max_delta_size>0</Max_delta_size>
      <Image>
        <GUID>{AAAAAAAA-0000-4000-8000-000000000001}</GUID>
        <Type>Compressed</Type>
        <File>%(base)s</File>
      </Image>
      <Image>
        <GUID>{aaaaaaaa-0000-4000-8000-000000000002}</GUID>
        <Type>Compressed</Type>
        <File>root.hds.tmp</File>
      </Image>
      <Image>
        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>
        <Type>Compressed</Type>
        <File>root.hds.top</File>
      </Image>
    </Storage>
  </StorageData>
  <Snapshots>
    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>
    <Shot>
      <GUID>{AAAAAAAA-0000-4000-8000-000000000001}</GUID>
      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>
    </Shot>
    <Shot>
      <GUID>{aaaaaaaa-0000-4000-8000-000000000002}</GUID>
      <ParentGUID>{AAAAAAAA-0000-4000-8000-000000000001}</ParentGUID>
      <Temporary/>
    </Shot>
    <Shot>
      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>
      <ParentGUID>{aaaaaaaa-0000-4000-8000-000000000002}</ParentGUID>
    </Shot>
  </Snapshots>
</Virtuozzo_disk_image>
"""


def write_pattern_disk(path, size, clusters, cluster_size=MiB, seed=0):
    """A raw disk whose ``clusters`` hold data unique to each 8-byte word (a
    misplaced read shows), the rest zeros. Returns the content."""
    data = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)  # sparse where there is no data
        for index in clusters:
            start, end = index * cluster_size, min((index + 1) * cluster_size, size)
            words = array.array("Q", range(start + seed + 1, end + seed + 1, 8))
            data[start:end] = words.tobytes()[:end - start]
            f.seek(start)
            f.write(data[start:end])
    return bytes(data)


def sparse_copy(src, dst):
    subprocess.check_call(["cp", "--sparse=always", src, dst])


@pytest.fixture(scope="module")
def raw_disk(tmp_path_factory):
    """48 MiB with data in some clusters, one cluster holding a single byte.
    Shared by the module's tests: none of them changes it."""
    path = str(tmp_path_factory.mktemp("raw") / "disk.raw")
    content = bytearray(write_pattern_disk(path, 48 * MiB, [0, 1, 2, 5, 20, 21, 22, 23, 47]))
    content[9 * MiB + MiB - 1] = 1
    with open(path, "r+b") as f:
        f.seek(9 * MiB + MiB - 1)
        f.write(b"\x01")
    return path, bytes(content)


def imported(raw_path, tmp_path, name="img", **kw):
    return image.import_raw(raw_path, str(tmp_path / name), **kw)


# -- descriptor ----------------------------------------------------------------

def test_descriptor_as_libploop_1_15_writes_it(tmp_path):
    (tmp_path / "DiskDescriptor.xml").write_text(DD_115)
    dd = image.read_descriptor(str(tmp_path))
    assert dd.path == os.fsencode(str(tmp_path / "DiskDescriptor.xml"))
    assert dd.root == "Parallels_disk_image"
    assert dd.size == 64 * MiB and dd.cluster_size == MiB and dd.mode == "expanded"
    assert list(dd.images) == [SNAP, TOP] and dd.top_guid == TOP
    top = dd.images[TOP]
    assert top.file == os.fsencode(str(tmp_path)) + \
        b"/root.hds.{c87d731e-c07b-4201-8ef1-3d81f4e2f768}"
    assert top.kind == "Compressed"
    assert dd.snapshots == [image.Shot(SNAP, image.NULL_GUID, False),
                            image.Shot(TOP, SNAP, False)]
    assert [e.guid for e in dd.chain()] == [TOP, SNAP]
    assert [e.guid for e in dd.chain(SNAP)] == [SNAP]


def test_descriptor_as_libploop_7_writes_it(tmp_path):
    base = tmp_path / "elsewhere" / "base.hds"
    (tmp_path / "DiskDescriptor.xml").write_text(DD_7X % {"base": base})
    dd = image.read_descriptor(os.fsencode(str(tmp_path / "DiskDescriptor.xml")))
    assert dd.root == "Virtuozzo_disk_image"
    assert dd.size == 1 << 30 and dd.cluster_size == 256 << 10
    assert dd.mode == "preallocated"
    chain = dd.chain()
    assert [e.file for e in chain] == [os.fsencode(str(tmp_path / n)) for n in
                                       ("root.hds.top", "root.hds.tmp")] + [os.fsencode(str(base))]
    temporary = {s.guid: s.temporary for s in dd.snapshots}
    assert temporary == {"{AAAAAAAA-0000-4000-8000-000000000001}": False,
                         "{aaaaaaaa-0000-4000-8000-000000000002}": True, TOP: False}
    # GUIDs are found whatever their case and braces; the descriptor's spelling is kept.
    assert dd.chain("aaaaaaaa-0000-4000-8000-000000000001")[0].guid == \
        "{AAAAAAAA-0000-4000-8000-000000000001}"
    with pytest.raises(image.SnapshotNotFound) as err:
        dd.chain("{12345678-1234-1234-1234-123456789abc}")
    assert isinstance(err.value, image.ImageError) and isinstance(err.value, LookupError)
    assert "12345678-1234-1234-1234-123456789abc" in str(err.value)


def test_relative_files_resolve_against_the_real_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "DiskDescriptor.xml").write_text(DD_115)
    os.symlink(str(real / "DiskDescriptor.xml"), str(tmp_path / "link.xml"))
    dd = image.read_descriptor(str(tmp_path / "link.xml"))
    assert dd.images[SNAP].file == os.fsencode(str(real / "root.hds"))


def test_raw_mode_has_a_plain_base_and_ploop1_deltas_above(tmp_path):
    (tmp_path / "DiskDescriptor.xml").write_text(DD_115.replace("Compressed", "Plain"))
    dd = image.read_descriptor(str(tmp_path))
    assert dd.mode == "raw"
    assert [(e.guid, e.kind) for e in dd.chain()] == [(TOP, "Compressed"), (SNAP, "Plain")]


@pytest.mark.parametrize("change,message", [
    (lambda t: "not xml <", "not well-formed XML"),
    (lambda t: t.replace("Parallels_disk_image", "Other_image"), "root element <Other_image>"),
    (lambda t: t.replace("<File>root.hds</File>", ""), "<File> is missing"),
    (lambda t: t.replace("<Blocksize>2048", "<Blocksize>3000"), "not a power of two"),
    (lambda t: t.replace("<Disk_size>131072", "<Disk_size>lots"), "<Disk_size> is not a number"),
    (lambda t: t.replace("<TopGUID>{5fbaabe3", "<TopGUID>{6fbaabe3"), "<TopGUID>"),
    (lambda t: t.replace("<Snapshots>", "<Snapshots_>").replace("</Snapshots>", "</Snapshots_>"),
     "<Snapshots> is missing"),
    (lambda t: t.replace("<GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n      <Parent",
                         "<GUID>{5fbaabe3-6958-40ff-92a7-860e329aab42}</GUID>\n      <Parent"),
     "has no image"),
    (lambda t: t.replace("<Blocksize>2048</Blocksize>",
                         "<Blocksize>2048</Blocksize><Preallocated>1</Preallocated>"
                         ).replace("Compressed", "Plain"), "not compatible with Plain"),
])
def test_malformed_descriptors_raise_descriptor_error(tmp_path, change, message):
    (tmp_path / "DiskDescriptor.xml").write_text(change(DD_115))
    with pytest.raises(image.DescriptorError) as err:
        image.read_descriptor(str(tmp_path))
    assert message in str(err.value)
    assert "DiskDescriptor.xml" in str(err.value)


def test_missing_descriptor(tmp_path):
    with pytest.raises(image.DescriptorError, match="No such file"):
        image.read_descriptor(str(tmp_path))


@pytest.mark.parametrize("parent,message", [
    ("{99999999-0000-4000-8000-000000000000}", "has no image"),
    (TOP, "cycle"),
])
def test_broken_snapshot_trees(tmp_path, parent, message):
    text = DD_115.replace("<ParentGUID>{00000000-0000-0000-0000-000000000000}",
                          "<ParentGUID>%s" % parent)
    (tmp_path / "DiskDescriptor.xml").write_text(text)
    dd = image.read_descriptor(str(tmp_path))
    with pytest.raises(image.DescriptorError, match=message):
        dd.chain()
    assert any(message in p for p in image.verify(str(tmp_path)).problems)


# -- the ploop1 layout import_raw writes ----------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_import_raw_writes_the_ploop1_layout(tmp_path, raw_disk, version):
    raw_path, content = raw_disk
    dd = imported(raw_path, tmp_path, version=version)
    assert dd == os.fsencode(str(tmp_path / "img" / "DiskDescriptor.xml"))
    path = str(tmp_path / "img" / "root.hds")
    data = open(path, "rb").read()
    sig, kind, _, _, cluster_sectors, clusters, size_sectors, in_use, first, flags, _ = \
        HEADER.unpack_from(data)
    assert sig == (b"WithoutFreeSpace" if version == 1 else b"WithouFreSpacExt")
    assert (kind, cluster_sectors, clusters, in_use, first, flags) == (2, 2048, 48, 0, 2048, 0)
    assert size_sectors & (0xFFFFFFFF if version == 1 else ~0) == 48 * 2048
    bat = struct.unpack_from("<48I", data, 64)
    stored = [0, 1, 2, 5, 9, 20, 21, 22, 23, 47]
    unit = 512 if version == 1 else MiB
    # Non-zero clusters are appended in order after the 1 MiB header cluster.
    assert [i for i in range(48) if bat[i]] == stored
    for n, index in enumerate(stored):
        assert bat[index] * unit == (n + 1) * MiB
        assert data[(n + 1) * MiB:(n + 2) * MiB] == content[index * MiB:(index + 1) * MiB]
    assert len(data) == (len(stored) + 1) * MiB
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) == len(data), "the image must not be sparse"
    finally:
        os.close(fd)
    descriptor = image.read_descriptor(dd)
    assert (descriptor.size, descriptor.cluster_size, descriptor.mode) == \
        (48 * MiB, MiB, "expanded")
    report = image.verify(dd)
    assert report.ok, report.problems
    assert report.clusters == {TOP: len(stored)}
    assert report.deltas[0].version == version


def test_import_raw_rounds_the_disk_up_to_whole_clusters(tmp_path):
    raw_path = str(tmp_path / "odd.raw")
    content = write_pattern_disk(raw_path, 3 * 256 * 1024 + 4096, [3], cluster_size=256 * 1024)
    dd = imported(raw_path, tmp_path, cluster_size=256 * 1024)
    with image.open_virtual_disk(dd) as disk:
        assert disk.size == 4 * 256 * 1024
        assert disk.read(0, disk.size) == content + bytes(disk.size - len(content))


def test_import_raw_stores_only_data_of_a_large_sparse_disk(tmp_path):
    raw_path = str(tmp_path / "big.raw")
    with open(raw_path, "wb") as f:
        f.truncate(8 << 30)
        f.seek(3 << 30)
        f.write(b"three")
        f.seek((8 << 30) - 5)
        f.write(b"eight")
    dd = imported(raw_path, tmp_path, version=2)
    assert os.path.getsize(str(tmp_path / "img" / "root.hds")) == 3 * MiB
    with image.open_virtual_disk(dd) as disk:
        assert disk.read(3 << 30, 5) == b"three"
        assert disk.read((8 << 30) - 5, 10) == b"eight"
        assert disk.read((3 << 30) - 5, 10) == bytes(5) + b"three"


# -- InPlaceImage: a new image written through a raw view of its delta --------------

# (virtual offset, bytes) written into a 48 MiB disk: a few bytes 8 KiB into cluster 0,
# cluster 3 whole, a piece of cluster 40, the last sector of cluster 47.
IN_PLACE_WRITES = [(8192 + 100, b"a" * 100), (3 * MiB, b"b" * MiB), (40 * MiB + 4096, b"c" * 4096),
                   (48 * MiB - 512, b"d" * 512)]


def written_in_place(path, version=1):
    """An InPlaceImage with IN_PLACE_WRITES at its data offset; returns (image, raw
    disk content)."""
    new = image.InPlaceImage(path, 48 * MiB, version=version)
    content = bytearray(48 * MiB)
    fd = os.open(new.path, os.O_WRONLY)
    try:
        for offset, data in IN_PLACE_WRITES:
            os.pwrite(fd, data, new.data_offset + offset)
            content[offset:offset + len(data)] = data
    finally:
        os.close(fd)
    return new, bytes(content)


@pytest.mark.parametrize("version", [1, 2])
def test_an_in_place_image_seals_into_a_whole_expanded_image(tmp_path, version):
    new, content = written_in_place(str(tmp_path / "img"), version)
    assert not os.path.exists(new.descriptor)
    with pytest.raises(image.FormatError, match="no ploop1 signature"):   # not an image yet
        Header.parse(open(new.path, "rb").read(HEADER.size), new.path)
    dd = new.seal()
    assert dd == new.descriptor
    report = image.verify(dd)
    assert report.ok, report.problems        # no holes, BAT in the file, no overlaps
    assert report.clusters == {TOP: 4}
    # Clusters 40 and 47 moved into the holes after cluster 0: the file holds the
    # metadata cluster and the four data clusters, nothing more.
    assert os.path.getsize(new.path) == 5 * MiB
    with image.open_virtual_disk(dd) as disk:
        assert disk.read(0, disk.size) == content
    assert image.read_descriptor(dd).mode == "expanded"


def test_an_empty_in_place_image_seals_into_an_empty_image(tmp_path):
    new = image.InPlaceImage(str(tmp_path / "img"), 4 * MiB)
    dd = new.seal()
    assert os.path.getsize(new.path) == new.data_offset
    assert image.verify(dd).ok
    data = open(new.path, "rb").read(HEADER.size)
    assert HEADER.unpack_from(data)[9] == 1     # flags: empty


def test_an_in_place_image_refuses_and_removes_what_it_made(tmp_path):
    target = tmp_path / "img"
    new, _ = written_in_place(str(target))
    with pytest.raises(image.ImageError, match="already exists"):
        image.InPlaceImage(str(target), 48 * MiB)
    new.remove()
    assert not target.exists()
    with pytest.raises(ValueError, match="multiple of the cluster size"):
        image.InPlaceImage(str(target), 48 * MiB + 4096)
    assert not target.exists()


def test_import_raw_refuses_and_leaves_nothing_behind(tmp_path, raw_disk):
    raw_path, _ = raw_disk
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"x" * 1000)
    with pytest.raises(image.ImageError, match="512-byte sectors"):
        imported(str(odd), tmp_path, name="new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="cluster_size"):
        imported(raw_path, tmp_path, name="new", cluster_size=3 * 4096)
    with pytest.raises(ValueError, match="version"):
        imported(raw_path, tmp_path, name="new", version=3)
    with pytest.raises(ValueError, match="plain file name"):
        imported(raw_path, tmp_path, name="new", image_name=b"a/b")
    with pytest.raises(ValueError, match="UTF-8"):
        imported(raw_path, tmp_path, name="new", image_name=b"\xff.hds")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "root.hds").write_bytes(b"precious")
    with pytest.raises(image.ImageError, match="already exists"):
        imported(raw_path, tmp_path, name="existing")
    assert sorted(os.listdir(str(existing))) == ["root.hds"]
    assert (existing / "root.hds").read_bytes() == b"precious"


# -- reading ---------------------------------------------------------------------

@pytest.mark.parametrize("version,cluster_size", [(1, MiB), (2, MiB), (1, 64 << 10),
                                                  (2, 256 << 10)])
def test_reads_give_the_raw_disk(tmp_path, version, cluster_size):
    raw_path = str(tmp_path / "disk.raw")
    clusters = 32 * MiB // cluster_size
    rng = random.Random(version * cluster_size)
    content = write_pattern_disk(raw_path, 32 * MiB,
                                 sorted(rng.sample(range(clusters), clusters // 3)),
                                 cluster_size=cluster_size)
    dd = imported(raw_path, tmp_path, version=version, cluster_size=cluster_size)
    with image.open_virtual_disk(dd) as disk:
        assert (disk.size, disk.cluster_size, disk.guid) == (32 * MiB, cluster_size, TOP)
        assert [d.version for d in disk.deltas] == [version]
        assert disk.read(0, disk.size) == content
        for _ in range(200):
            offset = rng.randrange(disk.size)
            length = rng.choice([1, 511, 4096, cluster_size + 3, 3 * cluster_size])
            assert disk.read(offset, length) == content[offset:offset + length]
        buf = bytearray(MiB)
        assert disk.readinto(disk.size - 1000, buf) == 1000
        assert bytes(buf[:1000]) == content[-1000:]
        assert disk.readinto(disk.size, buf) == 0
        assert disk.read(disk.size + 10, 10) == b""
        view = memoryview(bytearray(8192))[100:4196]
        assert disk.readinto(5 * cluster_size - 7, view) == 4096
        assert view.tobytes() == content[5 * cluster_size - 7:5 * cluster_size + 4089]
        with pytest.raises(ValueError):
            disk.read(-1, 10)


def test_contiguous_clusters_are_read_with_one_pread(tmp_path, monkeypatch):
    raw_path = str(tmp_path / "disk.raw")
    content = write_pattern_disk(raw_path, 16 * MiB, [0, 1, 2, 3, 4, 5, 6, 7, 9, 10])
    dd = imported(raw_path, tmp_path)
    calls = []
    real_pread, real_preadv = os.pread, reader_module._preadv

    def pread(fd, n, offset):
        calls.append((n, offset))
        return real_pread(fd, n, offset)

    def preadv(fd, buffers, offset):
        calls.append((sum(len(b) for b in buffers), offset))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(reader_module.os, "pread", pread)
    if real_preadv is not None:
        monkeypatch.setattr(reader_module, "_preadv", preadv)
    with image.open_virtual_disk(dd) as disk:
        del calls[:]
        assert disk.read(0, 8 * MiB) == content[:8 * MiB]
        assert calls == [(8 * MiB, MiB)]
        del calls[:]
        # Cluster 8 is in no delta (zeros, no read); 9 and 10 follow 7 in the file.
        assert disk.read(7 * MiB + 5, 3 * MiB) == content[7 * MiB + 5:10 * MiB + 5]
        assert calls == [(MiB - 5, 8 * MiB + 5), (MiB + 5, 9 * MiB)]


def test_concurrent_reads(tmp_path, raw_disk):
    raw_path, content = raw_disk
    dd = imported(raw_path, tmp_path)
    errors = []
    with image.open_virtual_disk(dd) as disk:
        def work(seed):
            rng = random.Random(seed)
            buf = bytearray(256 << 10)
            for _ in range(100):
                offset = rng.randrange(disk.size)
                got = disk.readinto(offset, buf)
                if bytes(buf[:got]) != content[offset:offset + got]:
                    errors.append(offset)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_a_closed_disk_refuses_reads(tmp_path, raw_disk):
    dd = imported(raw_disk[0], tmp_path)
    disk = image.open_virtual_disk(dd)
    fds = [d.fd for d in disk.deltas]
    disk.close()
    disk.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        disk.read(0, 10)


def test_close_waits_for_reads_in_flight(tmp_path, raw_disk, monkeypatch):
    raw_path, content = raw_disk
    disk = image.open_virtual_disk(imported(raw_path, tmp_path))
    entered, release = threading.Event(), threading.Event()
    real_pread, real_preadv = os.pread, reader_module._preadv

    def held(real):
        def read(*args):
            entered.set()
            release.wait(10)
            return real(*args)
        return read

    monkeypatch.setattr(reader_module.os, "pread", held(real_pread))
    if real_preadv is not None:
        monkeypatch.setattr(reader_module, "_preadv", held(real_preadv))
    result = []
    reading = threading.Thread(target=lambda: result.append(disk.read(0, 3 * MiB)))
    closing = threading.Thread(target=disk.close)
    reading.start()
    assert entered.wait(10)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive(), "close() must wait for the read in flight"
    release.set()
    reading.join(10)
    closing.join(10)
    assert result == [content[:3 * MiB]]
    assert all(d.fd == -1 for d in disk.deltas)


# -- GPT ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "sub").mkdir()
    (root / "sub" / "data").write_bytes(os.urandom(200000))
    return str(root)


@pytest.mark.parametrize("cluster_size", [MiB, 256 << 10])
def test_find_partition_reads_the_gpt(tmp_path, small_tree, cluster_size):
    raw_path = str(tmp_path / "ct.raw")
    made = image.make_ct_raw_disk(small_tree, 64 * MiB, raw_path, cluster_size=cluster_size)
    first, last = image.partition_layout(64 * MiB, cluster_size)
    with image.RawDiskFile(raw_path) as disk:
        part = image.find_partition(disk)
    assert part == made
    assert part == image.Partition(1, cluster_size, (last - first + 1) * 512,
                                   image.LINUX_FILESYSTEM, "primary")
    dd = image.make_ct_disk(small_tree, 64 * MiB, str(tmp_path / "ct"), version=2,
                            cluster_size=cluster_size)
    with image.open_virtual_disk(dd) as disk:
        assert image.find_partition(disk) == part
        superblock = disk.read(part.offset + 1024, 1024)
    assert struct.unpack_from("<H", superblock, 56)[0] == 0xEF53  # ext4 magic
    assert sorted(os.listdir(str(tmp_path))) == ["ct", "ct.raw"]  # no scratch left


def test_find_partition_uses_the_backup_gpt(tmp_path, small_tree):
    raw_path = str(tmp_path / "ct.raw")
    made = image.make_ct_raw_disk(small_tree, 32 * MiB, raw_path)
    with open(raw_path, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"garbage")  # the primary header's checksum fails now
    with image.RawDiskFile(raw_path) as disk:
        assert image.find_partition(disk) == made
    with open(raw_path, "r+b") as f:
        f.seek(32 * MiB - 512 + 40)
        f.write(b"garbage")
    with image.RawDiskFile(raw_path) as disk:
        with pytest.raises(image.FormatError, match="GPT is damaged"):
            image.find_partition(disk)


def test_no_partition_table(tmp_path, raw_disk):
    dd = imported(raw_disk[0], tmp_path)
    with image.open_virtual_disk(dd) as disk:
        with pytest.raises(image.NoPartitionTable) as err:
            image.find_partition(disk)
    assert isinstance(err.value, image.ImageError)
    assert "DiskDescriptor.xml has no GPT" in str(err.value)


def test_make_ct_raw_disk_refuses_bad_input(tmp_path, small_tree):
    with pytest.raises(ValueError, match="multiple of the cluster size"):
        image.make_ct_raw_disk(small_tree, 64 * MiB + 4096, str(tmp_path / "a.raw"))
    with pytest.raises(image.ImageError, match="not a directory"):
        image.make_ct_raw_disk(str(tmp_path / "none"), 64 * MiB, str(tmp_path / "a.raw"))
    (tmp_path / "exists.raw").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        image.make_ct_raw_disk(small_tree, 64 * MiB, str(tmp_path / "exists.raw"))
    assert (tmp_path / "exists.raw").read_bytes() == b"keep"
    # A tree that does not fit: the copy fails, the raw file is removed.
    big = tmp_path / "big"
    big.mkdir()
    (big / "f").write_bytes(os.urandom(20 * MiB))
    with pytest.raises(image.TreeDoesNotFit, match="big does not fit into a 14680064-byte "
                       "filesystem: .*cannot copy f .*No space left on device"):
        image.make_ct_raw_disk(str(big), 16 * MiB, str(tmp_path / "small.raw"))
    assert not (tmp_path / "small.raw").exists()
    assert sorted(os.listdir(str(tmp_path))) == ["big", "exists.raw"]   # no mount point left


# -- damaged images: verify reports, the reader refuses ---------------------------

def _bat_entry(path, index, value=None):
    """Read (or set) BAT entry ``index`` of a delta file."""
    with open(path, "r+b") as f:
        f.seek(64 + 4 * index)
        if value is None:
            return struct.unpack("<I", f.read(4))[0]
        f.write(struct.pack("<I", value))


def _set_disk_size(dd, sectors):
    text = open(dd).read()
    start = text.index("<Disk_size>") + len("<Disk_size>")
    end = text.index("</Disk_size>")
    with open(dd, "w") as f:
        f.write(text[:start] + str(sectors) + text[end:])


def _punch_hole(path, offset, length):
    subprocess.check_call(["fallocate", "--punch-hole", "--offset", str(offset),
                           "--length", str(length), path])


# Each: (damage(delta path, descriptor path), what verify says, what the reader
# raises, or None when the data still reads right).
DAMAGES = {
    "truncated data": (lambda f, dd: os.truncate(f, os.path.getsize(f) - MiB),
                       "past the end of the file", "past the end of the file"),
    "truncated BAT": (lambda f, dd: os.truncate(f, 100), "is truncated", "is truncated"),
    "BAT past EOF": (lambda f, dd: _bat_entry(f, 5, 4096 * 2048),
                     "BAT entry 5 points to byte 4294967296, past the end",
                     "past the end of the file"),
    "BAT into header": (lambda f, dd: _bat_entry(f, 20, 8), "inside the header/BAT area",
                        "BAT entry 20 points to byte 4096, inside the header/BAT area"),
    "overlapping BAT": (lambda f, dd: _bat_entry(f, 21, _bat_entry(f, 0)),
                        "BAT entry 21 points to byte 1048576, like entry 0",
                        "the clusters overlap"),
    "misaligned BAT": (lambda f, dd: _bat_entry(f, 22, _bat_entry(f, 22) + 1),
                       "not cluster-aligned", "not cluster-aligned"),
    "wrong signature": (lambda f, dd: _overwrite(f, 0, b"WithoutFreeSpacf"),
                        "no ploop1 signature", "no ploop1 signature"),
    "descriptor size": (lambda f, dd: _set_disk_size(dd, 40 * 2048),
                        "the header says the disk has 50331648 bytes, the descriptor 41943040",
                        "the header says the disk has 50331648 bytes, the descriptor 41943040"),
    "sparse": (lambda f, dd: _punch_hole(f, 64 * 1024, 512 * 1024),
               "the file is sparse (first hole at byte 65536)", None),
    "in use": (lambda f, dd: _overwrite(f, 44, struct.pack("<I", IN_USE_MAGIC)),
               "marked in use", None),
    "partial cluster": (lambda f, dd: _overwrite(f, os.path.getsize(f), b"tail"),
                        "not a whole number of 1048576-byte clusters", None),
}


def _overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_images(tmp_path, raw_disk, damage):
    raw_path, content = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    action, reported, raised = DAMAGES[damage]
    action(delta, dd)
    report = image.verify(dd)
    assert not report.ok
    assert any(reported in p for p in report.problems), report.problems
    assert all(os.fsdecode(delta) in p for p in report.problems), report.problems
    if raised is None:
        with image.open_virtual_disk(dd) as disk:
            assert disk.read(0, disk.size) == content
    else:
        with pytest.raises(image.FormatError) as err:
            image.open_virtual_disk(dd)
        assert raised in str(err.value)
        assert os.fsdecode(delta) in str(err.value)


def test_verify_reports_every_problem_and_counts_clusters(tmp_path, raw_disk):
    raw_path, _ = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    for index in range(30, 45):
        _bat_entry(delta, index, 9000 * 2048)
    _overwrite(delta, 44, struct.pack("<I", IN_USE_MAGIC))
    report = image.verify(dd)
    bat = [p for p in report.problems if "BAT" in p]
    assert len(bat) == 11 and bat[-1].endswith("... and 5 more BAT problems")
    assert all("past the end of the file" in p for p in bat[:-1])
    assert any("marked in use" in p for p in report.problems)
    assert report.clusters == {TOP: 25}
    assert report.deltas[0].in_use is True


def test_verify_reports_a_missing_delta(tmp_path, raw_disk):
    dd = imported(raw_disk[0], tmp_path)
    os.unlink(os.path.join(os.path.dirname(dd), b"root.hds"))
    report = image.verify(dd)
    assert report.problems == ["%s: cannot open: No such file or directory"
                               % os.fsdecode(os.path.join(os.path.dirname(dd), b"root.hds"))]
    with pytest.raises(image.ImageError, match="cannot open delta"):
        image.open_virtual_disk(dd)


# -- write_clusters ------------------------------------------------------------------

@contextlib.contextmanager
def libploop_lock(dd):
    """libploop's lock of the disk ``dd``, held by someone else meanwhile."""
    lock = os.open(dd + b".lck", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def test_write_clusters_into_a_single_delta(tmp_path, raw_disk):
    raw_path, content = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    size_before = os.path.getsize(delta)
    changed = bytearray(content)
    changed[1 * MiB + 10:1 * MiB + 20] = b"0123456789"      # held: rewritten in place
    changed[30 * MiB:30 * MiB + 3] = b"new"                 # not held: appended
    changed[47 * MiB:48 * MiB] = bytes(MiB)                 # held, now zeros
    new_raw = tmp_path / "changed.raw"
    new_raw.write_bytes(bytes(changed))
    assert image.write_clusters(dd, str(new_raw)) == 3
    assert os.path.getsize(delta) == size_before + MiB
    with image.open_virtual_disk(dd) as disk:
        assert disk.read(0, disk.size) == bytes(changed)
    assert image.verify(dd).ok
    assert image.write_clusters(dd, str(new_raw)) == 0


def test_write_clusters_refuses(tmp_path, raw_disk):
    raw_path, _ = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    short = tmp_path / "short.raw"
    short.write_bytes(bytes(MiB))
    with pytest.raises(image.ImageError, match="has 1048576 bytes, but the disk"):
        image.write_clusters(dd, str(short))
    with libploop_lock(dd), pytest.raises(image.ImageError, match="locked by another process"):
        image.write_clusters(dd, raw_path)
    before = open(delta, "rb").read()
    _overwrite(delta, 44, struct.pack("<I", IN_USE_MAGIC))
    with pytest.raises(image.ImageError, match="in use"):
        image.write_clusters(dd, str(short))
    assert open(delta, "rb").read()[64:] == before[64:]


# -- clear_in_use -------------------------------------------------------------------

def test_clear_in_use_cuts_off_what_the_bat_does_not_point_to(tmp_path, raw_disk):
    raw_path, content = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    before = open(delta, "rb").read()
    guid = image.read_descriptor(dd).top_guid
    assert image.clear_in_use(dd, guid) is False
    # as a killed merge leaves it: marked, two clusters appended but not entered
    _overwrite(delta, 44, struct.pack("<I", IN_USE_MAGIC))
    _overwrite(delta, len(before), os.urandom(2 * MiB))
    assert image.clear_in_use(dd, guid) is True
    assert open(delta, "rb").read() == before
    assert image.verify(dd).ok


def test_clear_in_use_refuses(tmp_path, raw_disk):
    raw_path, _ = raw_disk
    dd = imported(raw_path, tmp_path)
    delta = os.path.join(os.path.dirname(dd), b"root.hds")
    guid = image.read_descriptor(dd).top_guid
    _overwrite(delta, 44, struct.pack("<I", IN_USE_MAGIC))
    with pytest.raises(image.SnapshotNotFound):
        image.clear_in_use(dd, SNAP)
    with libploop_lock(dd), pytest.raises(image.ImageError, match="locked by another process"):
        image.clear_in_use(dd, guid)
    _bat_entry(delta, 21, _bat_entry(delta, 0))
    before = open(delta, "rb").read()
    with pytest.raises(image.ImageError, match="BAT is not sound, so the mark is left: .*"
                                               "BAT entry 21 points to byte 1048576, like entry 0"):
        image.clear_in_use(dd, guid)
    assert open(delta, "rb").read() == before


# -- the CLI ------------------------------------------------------------------------------

def test_cli_import_raw_and_check(tmp_path, raw_disk, capsys):
    raw_path, _ = raw_disk
    target = str(tmp_path / "ct")
    assert cli.main(["import-raw", "-v", "2", "-b", "512K", raw_path, target]) == 0
    dd = os.path.join(target, "DiskDescriptor.xml")
    assert capsys.readouterr().out.strip() == dd
    assert image.read_descriptor(dd).cluster_size == 512 << 10
    assert cli.main(["check", target]) == 0
    out = capsys.readouterr().out
    assert "ploop1 v2, 19 cluster(s) of 512.0 KiB" in out and "no problems found" in out
    _bat_entry(os.path.join(target, "root.hds"), 6, 99999)
    assert cli.main(["check", "--json", dd]) == cli.EXIT_FORMAT
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "BAT entry 6" in report["problems"][0]
    assert report["deltas"][0]["clusters"] == 20
    assert cli.main(["import-raw", raw_path, target]) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_image_commands_do_not_need_libploop(tmp_path, raw_disk):
    """check and import-raw work where libploop (the compiled binding) is absent."""
    raw_path, _ = raw_disk
    code = ("import sys; sys.modules['vz7native._ploop'] = None\n"
            "from vz7native import cli\n"
            "rc = cli.main(sys.argv[1:])\n"
            "assert 'vz7native.ploop' not in sys.modules\n"
            "sys.exit(rc)")
    target = str(tmp_path / "ct")
    for argv in (["import-raw", raw_path, target], ["check", target]):
        proc = subprocess.run([sys.executable, "-c", code] + argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        assert proc.returncode == 0, proc.stderr
    os.unlink(os.path.join(target, "DiskDescriptor.xml"))
    proc = subprocess.run([sys.executable, "-c", code, "check", target],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == cli.EXIT_FORMAT
    assert b"cannot read" in proc.stdout
