"""Reading a virtual disk through vz7native.image against reading the delta file directly.

Every case reads 256 MiB sequentially from the page cache into one reused
buffer, in requests of the size a FUSE server sees (128 KiB) or larger (1 MiB):

* ``direct``: ``pread`` of the delta file's data area, the baseline;
* ``one_delta``: ``VirtualDisk.readinto`` of a one-delta image (long runs of
  back-to-back clusters, so 1 MiB requests are one ``pread`` each);
* ``two_deltas``: a snapshot chain where the top holds every other cluster, so
  no two neighbouring clusters come from the same file (the worst case).

Goal: the reader takes at most 1.5x the time of the direct reads (so it can
never be what keeps the FUSE+loop path below half the speed of the file; the
mount benchmarks measure that path as a whole).
"""
import os

import pytest

from conftest import goal
from vz7native import image

MiB = 1 << 20
DISK = 256 * MiB
_preadv = getattr(os, "preadv", None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from vz7native import ploop  # libploop takes the snapshot

    base = tmp_path_factory.mktemp("bench")
    raw = str(base / "disk.raw")
    with open(raw, "wb") as f:
        for _ in range(DISK // MiB):
            f.write(os.urandom(MiB))
    one = image.import_raw(raw, str(base / "one"))
    two = image.import_raw(raw, str(base / "two"))
    with ploop.Disk.open(two) as disk:
        disk.create_snapshot()
    with open(raw, "r+b") as f:
        for cluster in range(1, DISK // MiB, 2):
            f.seek(cluster * MiB)
            f.write(b"changed")
    image.write_clusters(two, raw)
    return {"one": one, "two": two, "delta": image.read_descriptor(one).chain()[0].file}


def read_direct(path, request):
    buf = bytearray(request)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in range(MiB, MiB + DISK, request):
            if _preadv is not None:
                _preadv(fd, [view], offset)
            else:
                view[:] = os.pread(fd, request, offset)
    finally:
        os.close(fd)


def read_virtual(dd, request):
    buf = bytearray(request)
    with image.open_virtual_disk(dd) as disk:
        for offset in range(0, DISK, request):
            disk.readinto(offset, buf)


REQUESTS = {"128K": 128 << 10, "1M": MiB}
CASES = ("direct", "one_delta", "two_deltas")
for _label in REQUESTS:
    for _case in CASES[1:]:
        goal("sequential read, %s requests" % _label, _case, "direct", "at_most", 1.5,
             "VirtualDisk.readinto vs pread of the delta file")


@pytest.mark.parametrize("request_label", sorted(REQUESTS))
@pytest.mark.parametrize("case", CASES)
def test_sequential_read(measure, images, case, request_label):
    if case == "direct":
        func, arg = read_direct, images["delta"]
    else:
        func, arg = read_virtual, images["one" if case == "one_delta" else "two"]
    measure("sequential read, %s requests" % request_label, case, func, arg,
            REQUESTS[request_label])
