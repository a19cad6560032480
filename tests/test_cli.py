"""The installed `vz7ploop` command: output, JSON, exit codes, one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from vz7native import ploop
from vz7native.cli import parse_size

VZ7PLOOP = os.path.join(os.path.dirname(sys.executable), "vz7ploop")
G1 = "{11111111-2222-4333-8444-555555555555}"
MiB = 1 << 20


def run(*args):
    proc = subprocess.run([VZ7PLOOP] + [os.fsdecode(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    return proc.returncode, proc.stdout, proc.stderr


def ok(*args):
    rc, out, err = run(*args)
    assert rc == 0, err
    return out


@pytest.fixture
def dd(tmp_path):
    out = ok("init", "-s", "64M", "-t", "none", tmp_path / "root.hds")
    assert out.strip() == str(tmp_path / "DiskDescriptor.xml")
    return out.strip()


def snapshot_list(dd):
    return json.loads(ok("snapshot-list", "--json", dd))


def test_console_script_is_installed():
    assert os.access(VZ7PLOOP, os.X_OK)


@pytest.mark.parametrize("text,size", [
    ("2048", 2048 * 512), ("64M", 64 * MiB), ("1g", 1 << 30), ("3T", 3 << 40),
    ("512K", 512 * 1024),
])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_init_in_each_format(tmp_path):
    for fmt, file_size in (("expanded", MiB), ("preallocated", 65 * MiB), ("raw", 64 * MiB)):
        directory = tmp_path / fmt
        directory.mkdir()
        ok("init", "-s", "64M", "-f", fmt, "-t", "none", directory / "root.hds")
        assert os.path.getsize(str(directory / "root.hds")) == file_size
        info = json.loads(ok("info", "--json", directory))
        assert (info["mode"], info["size"]) == (fmt, 64 * MiB)


def test_snapshot_cycle(dd):
    top = snapshot_list(dd)
    assert top == [{"guid": ploop.TOP_GUID, "parent_guid": ploop.NULL_GUID, "temporary": False,
                    "file": os.path.join(os.path.dirname(dd), "root.hds"), "current": True}]

    assert ok("snapshot", "-u", G1, dd).strip() == G1
    generated = ok("snapshot", dd).strip()
    listed = snapshot_list(dd)
    assert [s["guid"] for s in listed] == [G1, generated, ploop.TOP_GUID]
    assert [s["parent_guid"] for s in listed] == [ploop.NULL_GUID, G1, generated]
    assert [s["current"] for s in listed] == [False, False, True]
    assert all(os.path.exists(s["file"]) for s in listed)

    text = ok("snapshot-list", dd).splitlines()
    assert text[0].split() == ["PARENT_UUID", "C", "UUID", "FNAME"]
    assert text[-1].split()[:3] == [generated, "*", ploop.TOP_GUID]

    ok("snapshot-delete", "-u", generated, dd)
    assert [s["guid"] for s in snapshot_list(dd)] == [G1, ploop.TOP_GUID]

    ok("snapshot", dd)
    ok("snapshot-merge", "-A", dd)
    assert [s["guid"] for s in snapshot_list(dd)] == [ploop.TOP_GUID]
    assert sorted(os.listdir(os.path.dirname(dd))) == [
        "DiskDescriptor.xml", "DiskDescriptor.xml.lck", "root.hds"]


def test_snapshot_merge_and_switch_by_guid(dd):
    ok("snapshot", "-u", G1, dd)
    second = ok("snapshot", dd).strip()
    ok("snapshot-switch", "-u", G1, dd)
    assert {s["guid"]: s["parent_guid"] for s in snapshot_list(dd)} == {
        G1: ploop.NULL_GUID, second: G1, ploop.TOP_GUID: G1}
    # A snapshot with two children cannot take a merge; dropping the branch can.
    rc, out, err = run("snapshot-merge", "-u", ploop.TOP_GUID, dd)
    assert rc == 38 and "2 children" in err
    ok("snapshot-delete", "-u", second, dd)
    assert {s["guid"]: s["parent_guid"] for s in snapshot_list(dd)} == {
        G1: ploop.NULL_GUID, ploop.TOP_GUID: G1}
    ok("snapshot-merge", dd)
    assert [s["guid"] for s in snapshot_list(dd)] == [ploop.TOP_GUID]


def test_info(dd):
    info = json.loads(ok("info", "--json", dd))
    assert info["descriptor"] == dd
    assert (info["size"], info["cluster_size"], info["format_version"]) == (64 * MiB, MiB, 1)
    assert info["top_delta"] == info["base_delta"]
    assert info["device"] is None and info["mount_point"] is None
    text = ok("info", os.path.dirname(dd))
    assert "64.0 MiB (67108864 bytes)" in text and "not mounted" in text


def test_unknown_guid_exits_with_sysexit_nosnap(dd):
    rc, out, err = run("snapshot-delete", "-u", G1, dd)
    assert rc == 43
    assert err.count("\n") == 1
    assert err.startswith("vz7ploop: cannot delete snapshot %s of %s: " % (G1, dd))
    assert err.rstrip().endswith("(SYSEXIT_NOSNAP)")
    assert "Can't find snapshot" in err and "Error in" not in err


@pytest.mark.skipif(os.path.exists("/proc/vz/ploop_minor"), reason="the driver is present")
def test_mount_without_driver_exits_with_sysexit_device(dd, tmp_path):
    (tmp_path / "mnt").mkdir()
    rc, out, err = run("mount", "-r", "--backend", "kernel", "-m", tmp_path / "mnt", dd)
    assert rc == 2
    assert err.rstrip().endswith("(SYSEXIT_DEVICE)") and err.count("\n") == 1


def test_missing_descriptor(tmp_path):
    rc, out, err = run("snapshot-list", "--json", tmp_path / "DiskDescriptor.xml")
    assert rc == 39 and "(SYSEXIT_DISKDESCR)" in err and out == ""


@pytest.mark.parametrize("command", ["snapshot-list", "snapshot", "info"])
def test_unparsable_descriptor_exits_with_sysexit_diskdescr(tmp_path, command):
    # libploop's parser answers -1 (7.x passes it on); the documented exit is 39.
    dd = tmp_path / "DiskDescriptor.xml"
    dd.write_bytes(b"this is not xml at all")
    rc, out, err = run(command, dd)
    assert rc == 39, err
    # libxml2 prints its parser's complaint first, on stderr, in both versions.
    assert out == "" and err.splitlines()[-1].startswith("vz7ploop: cannot ")
    assert str(dd) in err.splitlines()[-1]


def _state_of(directory):
    """{name: (bytes, mtime_ns)} of every file in ``directory``."""
    state = {}
    for name in os.listdir(str(directory)):
        path = os.path.join(str(directory), name)
        with open(path, "rb") as f:
            state[name] = (f.read(), os.stat(path).st_mtime_ns)
    return state


@pytest.mark.parametrize("version", [1, 2])
def test_info_reads_without_libploop_touching_the_image(tmp_path, version):
    """`info` changes nothing (7.x's own `ploop info` rewrites v1 deltas as v2)
    and takes no lock; format v2 needs no kernel support to be described."""
    from vz7native import image

    raw = tmp_path / "disk.raw"
    with open(str(raw), "wb") as f:
        f.truncate(64 * MiB)
    directory = tmp_path / "ct"
    image.import_raw(str(raw), str(directory), version=version)
    if version == 1:    # libploop 1.15 takes v2 snapshots only with the driver's support
        ok("snapshot", "-u", G1, directory)
    before = _state_of(directory)
    info = json.loads(ok("info", "--json", directory))
    assert _state_of(directory) == before
    assert info["format_version"] == version
    assert (info["size"], info["cluster_size"], info["mode"]) == (64 * MiB, MiB, "expanded")
    assert info["device"] is None and info["mount_point"] is None
    guids = [s["guid"] for s in info["snapshots"]]
    assert guids == ([G1, ploop.TOP_GUID] if version == 1 else [ploop.TOP_GUID])
    assert info["snapshots"][-1]["current"] and info["top_guid"] == ploop.TOP_GUID
    assert info["base_delta"] == os.path.join(str(directory), "root.hds")
    assert set(info["images"].values()) == {s["file"] for s in info["snapshots"]}


def test_usage_errors_exit_with_sysexit_param(dd, tmp_path):
    for args in (("init", "-s", "lots", tmp_path / "x.hds"),
                 ("snapshot-merge", "-u", G1, "-A", dd),
                 ("snapshot-delete", dd),
                 ("umount",),
                 ("frobnicate",)):
        rc, out, err = run(*args)
        assert rc == 38, args
        assert out == ""


def test_bad_guid_is_one_line(dd):
    rc, out, err = run("snapshot", "-u", "nope", dd)
    assert rc == 38
    assert err == "vz7ploop: cannot create a snapshot of %s: not a GUID: 'nope' (SYSEXIT_PARAM)\n" % dd
