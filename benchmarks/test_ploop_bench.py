"""Snapshot create + list + delete: the ploop CLI (as the seed plugin drives it),
bare cffi calls into libploop, and our Disk API, in the same run.

Goals: the Disk API at least 2.5x faster than the CLI, and within 10% of bare
cffi (the Pythonic layer costs next to nothing).
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import goal
from vz7native import ploop
from vz7native._ploop import ffi, lib

GROUP = "snapshot cycle"
GUID = "{0badc0de-1234-4567-89ab-cdef01234567}"
# Debian's ploop CLI reads 4 KiB past argv strings: it needs environment after them.
CLI_ENV = dict(os.environ, PAD="x" * 8192)

goal(GROUP, "disk_api", "ploop_cli", "faster", 2.5, "Disk API vs the ploop CLI")
goal(GROUP, "disk_api", "bare_cffi", "at_most", 1.10, "Disk API vs bare cffi calls")


@pytest.fixture
def dd():
    # On tmpfs: libploop fsyncs its descriptor and deltas, and the VM disk's flush
    # latency would drown what is measured here, the cost of each layer.
    directory = tempfile.mkdtemp(prefix="vz7native-bench-", dir="/dev/shm")
    try:
        yield ploop.create_image(os.path.join(directory, "root.hds"), 1 << 30)
    finally:
        shutil.rmtree(directory)


def test_ploop_cli(measure, dd):
    path = os.fsdecode(dd)

    def cycle():
        subprocess.run(["ploop", "snapshot", "-u", GUID, path], env=CLI_ENV, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(["ploop", "snapshot-list", "-H", "-o", "uuid", path],
                             env=CLI_ENV, check=True, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.split()
        subprocess.run(["ploop", "snapshot-delete", "-u", GUID, path], env=CLI_ENV,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return out

    assert GUID.encode() in measure(GROUP, "ploop_cli", cycle)


def test_bare_cffi(measure, dd):
    path = ffi.new("char[]", 4096)
    ffi.memmove(path, dd, len(dd))
    handle = ffi.new("struct ploop_disk_images_data **")
    assert lib.ploop_open_dd(handle, path) == 0
    di = handle[0]
    guid = ffi.new("char[]", GUID.encode())
    param = ffi.new("struct ploop_snapshot_param *")
    param.guid = guid
    top = ffi.new("char[]", 4096)

    def cycle():
        assert lib.ploop_create_snapshot(di, param) == 0
        assert lib.ploop_get_top_delta_fname(di, top, 4096) == 0  # re-reads the descriptor
        guids = [ffi.string(di.snapshots[i].guid) for i in range(di.nsnapshots)]
        assert lib.ploop_delete_snapshot(di, guid) == 0
        return guids

    try:
        assert GUID.encode() in measure(GROUP, "bare_cffi", cycle)
    finally:
        lib.ploop_close_dd(di)


def test_disk_api(measure, dd):
    with ploop.Disk.open(dd) as disk:
        def cycle():
            disk.create_snapshot(GUID)
            guids = [s.guid for s in disk.snapshots]
            disk.delete_snapshot(GUID)
            return guids

        assert GUID in measure(GROUP, "disk_api", cycle)
