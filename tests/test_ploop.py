"""vz7native.ploop against the real libploop (no mock): images, snapshots, errors."""
import os
import re
import subprocess
import sys
import threading

import pytest

from vz7native import image, ploop
from vz7native._ploop import ffi, lib

MiB = 1 << 20
GUID_RE = re.compile(r"^\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}$")
G1 = "{11111111-2222-4333-8444-555555555555}"
G2 = "{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}"


@pytest.fixture
def disk(tmp_path):
    dd = ploop.create_image(str(tmp_path / "root.hds"), 64 * MiB)
    with ploop.Disk.open(dd) as d:
        yield d


def tree(disk):
    """{guid: (parent_guid, file name, current)} of the disk as libploop now says."""
    return {s.guid: (s.parent_guid, os.path.basename(s.file), s.current) for s in disk.snapshots}


def on_disk_tree(disk):
    """The same, read by a fresh handle: what DiskDescriptor.xml holds now."""
    with ploop.Disk.open(disk.path) as fresh:
        return tree(fresh)


# -- images ------------------------------------------------------------------

@pytest.mark.parametrize("fmt,file_size", [
    ("expanded", MiB),                 # the header cluster only
    ("preallocated", 64 * MiB + MiB),  # every cluster allocated after the header
    ("raw", 64 * MiB),                 # a plain disk
])
def test_create_image_in_each_format(tmp_path, fmt, file_size):
    image = tmp_path / "root.hds"
    dd = ploop.create_image(str(image), 64 * MiB, fmt=fmt)
    assert dd == os.fsencode(str(tmp_path / "DiskDescriptor.xml"))
    assert os.path.getsize(str(image)) == file_size
    with ploop.Disk.open(dd) as d:
        assert d.mode == fmt
        assert d.size == 64 * MiB
        assert d.cluster_size == MiB
        assert d.top_guid == ploop.TOP_GUID
        assert d.images == {ploop.TOP_GUID: os.fsencode(str(image))}
        assert d.top_delta == d.base_delta == os.fsencode(str(image))
        assert d.snapshots == [ploop.Snapshot(ploop.TOP_GUID, ploop.NULL_GUID, False,
                                              os.fsencode(str(image)), True)]
        if fmt != "raw":
            assert d.format_version == 1  # v2 needs the kernel driver's large-disk support


def test_create_image_rounds_size_to_sectors_and_takes_a_cluster_size(tmp_path):
    dd = ploop.create_image(str(tmp_path / "root.hds"), 32 * MiB + 1, cluster_size=512 * 1024)
    with ploop.Disk.open(dd) as d:
        assert d.cluster_size == 512 * 1024
        assert d.size >= 32 * MiB + 1 and d.size % 512 == 0


def test_create_image_refuses_bad_arguments_and_leaves_nothing(tmp_path):
    with pytest.raises(ploop.ParamError, match="unknown image format"):
        ploop.create_image(str(tmp_path / "a.hds"), MiB, fmt="qcow2")
    with pytest.raises(ploop.ParamError, match="positive number of bytes"):
        ploop.create_image(str(tmp_path / "a.hds"), 0)
    with pytest.raises(ploop.ParamError):
        ploop.create_image(str(tmp_path / "a.hds"), MiB, version=3)
    with pytest.raises(ploop.CreateError, match="does not exist"):
        ploop.create_image(str(tmp_path / "missing" / "a.hds"), MiB)
    assert os.listdir(str(tmp_path)) == []


def test_create_image_never_overwrites(tmp_path, disk):
    before = sorted(os.listdir(str(tmp_path)))
    with pytest.raises(ploop.CreateError, match="already exists"):
        ploop.create_image(str(tmp_path / "other.hds"), 64 * MiB)
    assert sorted(os.listdir(str(tmp_path))) == before


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_create_image_with_a_filesystem_needs_the_driver(tmp_path, capfd):
    # Refused before libploop runs: 7.x's clean-up after a device it could not
    # set up would unmount a filesystem that is not the image's.
    with pytest.raises(ploop.DeviceError) as info:
        ploop.create_image(str(tmp_path / "root.hds"), 64 * MiB, fstype="ext4")
    assert (info.value.code, info.value.name) == (2, "SYSEXIT_DEVICE")
    assert "/proc/vz/ploop_minor is missing" in info.value.message
    assert os.listdir(str(tmp_path)) == []
    assert capfd.readouterr().err == ""


def test_undecodable_paths_stay_bytes(tmp_path):
    directory = os.path.join(os.fsencode(str(tmp_path)), b"ct-\xff\xfe")
    os.mkdir(directory)
    dd = ploop.create_image(os.path.join(directory, b"root.hds"), 16 * MiB)
    with ploop.Disk.open(directory) as d:
        guid = d.create_snapshot()
        assert d.path == dd
        assert all(isinstance(f, bytes) and f.startswith(directory) for f in d.images.values())
        d.delete_snapshot(guid)


def test_paths_of_more_than_4000_bytes(tmp_path):
    # Debian's libploop copies 4077 bytes from every path argument; a long path must
    # work as well as a short one (PATH_MAX is 4096 including the delta file name).
    directory = os.fsencode(str(tmp_path))
    while len(directory) < 3990:
        directory = os.path.join(directory, b"d" * min(200, 3990 - len(directory)))
    os.makedirs(directory)
    dd = ploop.create_image(os.path.join(directory, b"r.hds"), 16 * MiB)
    assert len(dd) > 4000
    with ploop.Disk.open(dd) as d:
        guid = d.create_snapshot(G1)
        assert [s.guid for s in d.snapshots] == [G1, ploop.TOP_GUID]
        assert len(d.top_delta) > 4000
        d.delete_snapshot(guid)
        assert [s.guid for s in d.snapshots] == [ploop.TOP_GUID]


# -- snapshots ---------------------------------------------------------------

def test_snapshot_with_given_and_generated_guids(disk):
    base = os.path.basename(disk.top_delta)
    assert disk.create_snapshot(G1) == G1
    # The frozen state takes the given GUID; the live top keeps the fixed one in a new file.
    t = tree(disk)
    assert t[G1] == (ploop.NULL_GUID, base, False)
    top_parent, top_file, current = t[ploop.TOP_GUID]
    assert (top_parent, current) == (G1, True) and top_file != base
    assert os.path.exists(disk.top_delta)

    generated = disk.create_snapshot()
    assert GUID_RE.match(generated)
    assert generated not in (G1, ploop.TOP_GUID)
    t = tree(disk)
    assert t[generated][0] == G1
    assert t[ploop.TOP_GUID][0] == generated
    assert len(disk.chain()) == 3
    assert disk.chain(G1) == [disk.images[G1]]
    assert tree(disk) == on_disk_tree(disk)


def test_guid_without_braces_is_accepted(disk):
    assert disk.create_snapshot(G1.strip("{}")) == G1
    assert G1 in disk.images


def test_delete_snapshot_merges_the_child_into_it(disk):
    disk.create_snapshot(G1)
    disk.create_snapshot(G2)
    files_before = dict(disk.images)
    disk.delete_snapshot(G1)
    # G1's child (G2) was merged into G1's file, which now carries the child's GUID.
    t = tree(disk)
    assert set(t) == {G2, ploop.TOP_GUID}
    assert t[G2] == (ploop.NULL_GUID, os.path.basename(files_before[G1]), False)
    assert not os.path.exists(files_before[G2])
    assert tree(disk) == on_disk_tree(disk)


def test_merge_snapshot_merges_into_the_parent(disk):
    disk.create_snapshot(G1)
    disk.create_snapshot(G2)
    files_before = dict(disk.images)
    disk.merge_snapshot(G2)
    # G2 merged into its parent G1; the merged file keeps G2 and G1 disappears.
    t = tree(disk)
    assert set(t) == {G2, ploop.TOP_GUID}
    assert t[G2][0] == ploop.NULL_GUID
    assert disk.images[G2] == files_before[G1]
    assert not os.path.exists(files_before[G2])

    disk.merge_snapshot()  # the top into G2
    assert tree(disk) == {ploop.TOP_GUID: (ploop.NULL_GUID, os.path.basename(files_before[G1]),
                                           True)}


def test_merge_all(disk):
    first = disk.top_delta
    for _ in range(3):
        disk.create_snapshot()
    assert len(disk.snapshots) == 4
    deltas = disk.chain()
    disk.merge_snapshot(merge_all=True)
    assert tree(disk) == {ploop.TOP_GUID: (ploop.NULL_GUID, os.path.basename(first), True)}
    assert [f for f in deltas if os.path.exists(f)] == [first]
    with pytest.raises(ploop.ParamError):
        disk.merge_snapshot(G1, merge_all=True)


def test_switch_snapshot(disk):
    disk.create_snapshot(G1)
    disk.create_snapshot(G2)
    old_top = disk.top_delta
    disk.switch_snapshot(G1)
    # A new empty top on G1; the old top is gone, G2 stays as a branch.
    t = tree(disk)
    assert t[ploop.TOP_GUID][0] == G1
    assert t[G2][0] == G1
    assert not os.path.exists(old_top)
    assert os.path.exists(disk.top_delta)
    assert disk.chain() == [disk.top_delta, disk.images[G1]]
    assert tree(disk) == on_disk_tree(disk)


def test_refresh_sees_changes_made_by_another_handle(disk):
    with ploop.Disk.open(disk.path) as other:
        other.create_snapshot(G1)
    disk.refresh()
    assert G1 in disk.images
    assert disk.chain() == [disk.top_delta, disk.images[G1]]


# -- errors ------------------------------------------------------------------

def test_unknown_guid_is_sysexit_nosnap(disk):
    with pytest.raises(ploop.NoSnapshotError) as info:
        disk.delete_snapshot(G2)
    e = info.value
    assert (e.code, e.name, e.func) == (43, "SYSEXIT_NOSNAP", "ploop_delete_snapshot")
    assert e.path == disk.path
    assert G2 in e.message
    assert G2 in str(e) and "SYSEXIT_NOSNAP" in str(e)
    assert isinstance(e, LookupError)
    with pytest.raises(ploop.NoSnapshotError):
        disk.chain(G2)
    # libploop's switch and merge report an unknown GUID as a bad parameter.
    with pytest.raises(ploop.ParamError, match=re.escape(G2)):
        disk.switch_snapshot(G2)
    with pytest.raises(ploop.ParamError, match=re.escape(G2)):
        disk.merge_snapshot(G2)


def test_malformed_guid_is_refused_before_libploop(disk):
    with pytest.raises(ploop.ParamError, match="not a GUID"):
        disk.create_snapshot("not-a-guid")
    with pytest.raises(ploop.ParamError, match="not a GUID"):
        disk.create_snapshot(G1, cbt_uuid="{not-a-guid}")
    assert len(disk.snapshots) == 1


def test_guid_spellings():
    for spelling in (G2, G2.strip("{}"), G2.upper()):
        assert ploop.bare_guid(spelling).lower() == G2.strip("{}")
        assert ploop.normalize_guid(spelling).lower() == G2


@pytest.mark.parametrize("cbt_uuid", [G2, G2.strip("{}")])
def test_snapshot_with_a_cbt_uuid(disk, cbt_uuid):
    # 7.x takes the UUID (offline too) only without braces: the binding passes
    # it so whatever the caller wrote. 1.15 has no changed-block tracking.
    if not ploop.build_info()["cbt"]:
        with pytest.raises(ploop.ParamError, match="needs libploop 7.x"):
            disk.create_snapshot(G1, cbt_uuid=cbt_uuid)
        assert [s.guid for s in disk.snapshots] == [ploop.TOP_GUID]
        return
    assert disk.create_snapshot(G1, cbt_uuid=cbt_uuid) == G1
    assert [s.guid for s in disk.snapshots] == [G1, ploop.TOP_GUID]


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_mount_without_the_driver_is_sysexit_device(disk, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    for kwargs in ({}, {"readonly": True, "component": "vz7native-test"},
                   {"readonly": True, "guid": ploop.TOP_GUID}):
        with pytest.raises(ploop.DeviceError) as info:
            disk.mount(str(target), **kwargs)
        assert info.value.code == 2
        assert "/proc/vz/ploop_minor" in info.value.message
    assert not disk.is_mounted()
    assert disk.device() is None and disk.mount_point() is None
    with pytest.raises(ploop.DeviceNotMountedError) as info:
        disk.umount()
    assert info.value.code == 40


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_failed_temporary_snapshot_is_merged_back(disk, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    before = tree(disk)
    with pytest.raises(ploop.DeviceError):
        with disk.temporary_snapshot("vz7native-test", str(target)):
            pytest.fail("the snapshot cannot be mounted without the driver")
    assert on_disk_tree(disk) == before


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_filesystem_info_without_the_driver_leaves_nothing_behind(disk, tmp_path):
    # The descriptor's lock file is libploop's: 1.15 makes it when the disk is
    # opened, 7.x at the first locked call. Nothing else may appear or stay.
    lock = "DiskDescriptor.xml.lck"
    before = set(os.listdir(str(tmp_path))) - {lock}
    with pytest.raises(ploop.PloopError):
        disk.filesystem_info()
    assert set(os.listdir(str(tmp_path))) - {lock} == before


def delta_versions(disk):
    """The ploop1 version in each delta's header, read without libploop."""
    with image.open_virtual_disk(disk.path) as vdisk:
        return [d.version for d in vdisk.deltas]


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_which_calls_rewrite_v1_deltas_as_v2(disk, tmp_path):
    """As the docstrings say: 7.x converts v1 deltas to v2 for a read-write mount
    of the top without a component name (also inside resize and
    filesystem_info), even when the mount then fails; 1.15 never does. Other
    mounts and the lookups leave the format alone on both."""
    target = tmp_path / "mnt"
    target.mkdir()
    disk.create_snapshot(G1)
    assert delta_versions(disk) == [1, 1]
    for kwargs in ({"readonly": True}, {"component": "vz7native-test"},
                   {"readonly": True, "guid": G1}):
        with pytest.raises(ploop.DeviceError):
            disk.mount(str(target), **kwargs)
    assert not disk.is_mounted() and disk.device() is None
    assert disk.format_version == 1
    assert delta_versions(disk) == [1, 1]
    converts = ploop.build_info()["flavor"] == "vz7"
    for rewrite in (lambda: disk.mount(str(target)), lambda: disk.resize(128 * MiB),
                    disk.filesystem_info):
        with pytest.raises(ploop.PloopError):
            rewrite()
        assert delta_versions(disk) == ([2, 2] if converts else [1, 1])


def test_missing_descriptor(tmp_path):
    with pytest.raises(ploop.DiskDescriptorError) as info:
        ploop.Disk.open(str(tmp_path / "DiskDescriptor.xml"))
    assert info.value.code == 39 and "does not exist" in info.value.message


@pytest.mark.parametrize("content", [
    b"",
    b"<?xml version='1.0'?><Parallels_disk_image><Disk_Parameters>",
    b"this is not xml at all",
    b"<?xml version='1.0'?><Parallels_disk_image></Parallels_disk_image>",
])
def test_malformed_descriptor(tmp_path, content):
    dd = tmp_path / "DiskDescriptor.xml"
    dd.write_bytes(content)
    # 7.x's ploop_read_dd and 1.15's parser both answer -1 here; the binding
    # reports it as SYSEXIT_DISKDESCR, as the ploop tool does.
    with pytest.raises(ploop.DiskDescriptorError) as info:
        ploop.Disk.open(str(dd))
    assert (info.value.code, info.value.name) == (39, "SYSEXIT_DISKDESCR")
    assert info.value.message


def test_descriptor_pointing_to_a_missing_delta(disk):
    missing = disk.top_delta
    disk.close()
    os.unlink(missing)
    with ploop.Disk.open(disk.path) as again:
        for operation in (lambda: again.format_version, again.create_snapshot):
            with pytest.raises(ploop.OpenError) as info:
                operation()
            assert info.value.code == lib.SYSEXIT_OPEN
            assert os.fsdecode(missing) in info.value.message


def test_messages_are_per_call_and_never_stale(disk):
    with pytest.raises(ploop.NoSnapshotError):
        disk.delete_snapshot(G1)
    assert G1 in ffi.string(lib.ploop_get_last_error()).decode()
    disk.create_snapshot()  # succeeds: the old text must not survive into the next error
    assert ffi.string(lib.ploop_get_last_error()) == b""
    with pytest.raises(ploop.NoSnapshotError) as info:
        disk.delete_snapshot(G2)
    assert G2 in info.value.message and G1 not in info.value.message


def test_libdevmapper_messages_are_kept_not_printed(tmp_path):
    """What libdevmapper reports (libploop 7.x links it) is kept per call, not
    printed: its log function is registered in the libdevmapper that the
    given library uses. Shown with libdevmapper itself (a parse error of its
    own, on any host), in a child, as the setting is process-wide."""
    code = r"""
import ctypes, ctypes.util, sys
from vz7native import ploop
from vz7native._ploop import ffi, lib
name = ctypes.util.find_library("devmapper")
dm = ctypes.CDLL(name)
dm.dm_config_from_string.restype = ctypes.c_void_p
print(lib.vz7n_capture_devmapper(name.encode()), lib.vz7n_capture_devmapper(b"libnothing.so"))
lib.vz7n_clear_messages()
assert dm.dm_config_from_string(b"a = {") is None
assert dm.dm_config_from_string(b"b = {") is None
print(ffi.string(lib.vz7n_devmapper_text()).decode().replace("\n", "|"))
disk = ploop.Disk.open(ploop.create_image(sys.argv[1], 16 << 20))
try:
    disk.delete_snapshot("%s")
except ploop.NoSnapshotError as e:
    print(repr(e.devmapper))
""" % G1
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "root.hds")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    installed, kept, stale = proc.stdout.splitlines()
    assert installed == "1 0"
    # Both complaints, one a line, in order.
    assert [m.split(":")[0] for m in kept.split("|")] == ["Parse error at byte 5 (line 1)"] * 2
    assert stale == "''"    # a later call starts with nothing


def test_devmapper_messages_are_part_of_the_error():
    e = ploop.error_for(2, "ploop_mount_image", "Error in f (x.c:1): no device",
                        b"/vz/DiskDescriptor.xml", devmapper="open failed\nno driver")
    assert isinstance(e, ploop.DeviceError) and e.devmapper == "open failed\nno driver"
    assert e.detail == "no device [device-mapper: open failed; no driver]"
    assert str(e) == ("ploop_mount_image(/vz/DiskDescriptor.xml): Error in f (x.c:1): "
                      "no device [device-mapper: open failed; no driver] (SYSEXIT_DEVICE)")
    assert ploop.error_for(2, "f", "no device").detail == "no device"


def test_closed_disk_refuses_work(tmp_path):
    dd = ploop.create_image(str(tmp_path / "root.hds"), 16 * MiB)
    d = ploop.Disk.open(dd)
    d.close()
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.create_snapshot()


# -- threads -----------------------------------------------------------------

def test_two_threads_on_two_disks(tmp_path):
    rounds = 15
    results = {}

    def work(name):
        directory = tmp_path / name
        directory.mkdir()
        dd = ploop.create_image(str(directory / "root.hds"), 32 * MiB)
        mine = "{%08x-0000-4000-8000-000000000000}" % (1 if name == "a" else 2)
        errors, guids = [], []
        with ploop.Disk.open(dd) as d:
            for i in range(rounds):
                guids.append(d.create_snapshot())
                try:
                    d.delete_snapshot(mine)
                except ploop.NoSnapshotError as e:
                    errors.append(e.message)
            while len(d.snapshots) > 1:
                d.delete_snapshot(d.snapshots[0].guid)
            results[name] = (guids, errors, tree(d), sorted(os.listdir(str(directory))))

    threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"a", "b"}
    for name, (guids, errors, final, files) in results.items():
        mine = "{%08x-0000-4000-8000-000000000000}" % (1 if name == "a" else 2)
        assert len(set(guids)) == rounds
        # Each thread saw its own error text for each failing call, never the other's.
        assert len(errors) == rounds and all(mine in m for m in errors)
        assert list(final) == [ploop.TOP_GUID]
        assert [f for f in files if f.startswith("root.hds")] == ["root.hds"]


# -- kernel driver (VZ7 hosts only) --------------------------------------------

@pytest.fixture
def ext4_disk(tmp_path):
    dd = ploop.create_image(str(tmp_path / "root.hds"), 512 * MiB, fstype="ext4")
    with ploop.Disk.open(dd) as d:
        yield d


@pytest.mark.kernel_ploop
def test_kernel_mount_read_write_and_read_only(ext4_disk, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    with ext4_disk.mount(str(target)) as m:
        assert ext4_disk.is_mounted()
        assert ext4_disk.device() == m.device
        assert ext4_disk.mount_point() == os.fsencode(str(target))
        assert ext4_disk.is_mounted_readonly() is False
        (target / "hello").write_bytes(b"world")
        assert ext4_disk.filesystem_info().blocks > 0
    assert not ext4_disk.is_mounted()
    with ext4_disk.mount(str(target), readonly=True, component="vz7native-test") as m:
        assert (target / "hello").read_bytes() == b"world"
        assert ext4_disk.is_mounted_readonly("vz7native-test") is True
    assert ext4_disk.device("vz7native-test") is None


@pytest.mark.kernel_ploop
def test_kernel_temporary_snapshot(ext4_disk, tmp_path):
    live, snap = tmp_path / "live", tmp_path / "snap"
    live.mkdir()
    snap.mkdir()
    with ext4_disk.mount(str(live)):
        (live / "before").write_bytes(b"1")
        with ext4_disk.temporary_snapshot("vz7native-test", str(snap)) as t:
            (live / "after").write_bytes(b"2")
            assert (snap / "before").read_bytes() == b"1"
            assert not (snap / "after").exists()
            assert any(s.guid == t.guid for s in ext4_disk.snapshots)
        assert [s.guid for s in ext4_disk.snapshots] == [ploop.TOP_GUID]


def test_log_file_gets_libploop_messages(tmp_path):
    # Process-wide in libploop: checked in a child so this process keeps its settings.
    log = tmp_path / "ploop.log"
    code = ("import sys; from vz7native import ploop\n"
            "ploop.set_log_file(sys.argv[1], level=4)\n"
            "d = ploop.Disk.open(ploop.create_image(sys.argv[2], 16 << 20))\n"
            "try:\n"
            "    d.delete_snapshot('{%s}')\n" % G1.strip("{}") +
            "except ploop.NoSnapshotError:\n"
            "    pass\n")
    subprocess.check_call([sys.executable, "-c", code, str(log), str(tmp_path / "root.hds")])
    text = log.read_text()
    assert "Can't find snapshot by uuid %s" % G1 in text
    with pytest.raises(ploop.PloopError, match="Can't open"):
        ploop.set_log_file(str(tmp_path / "missing" / "x.log"))  # and nothing changes
