"""Sequential read of a 1 GiB file inside a portable mount against reading the
image file directly, in the same run.

The image: ``make_ct_disk`` (ploop1 v1, 1 MiB clusters) of a tree holding one
1 GiB file of random bytes, on the machine's disk. Every contender reads 1 GiB
sequentially in 1 MiB requests:

* ``image_file``: the image's delta file itself (its first GiB);
* ``portable_mount``: the file inside the portable mount (ext4 on a loop device
  on the helper's FUSE view of the chain), with the library the helper picks
  (libfuse 3 here);
* ``portable_mount_libfuse2``: the same with libfuse 2 forced
  (``FUSE_LIBRARY_PATH``), what hosts without libfuse 3 get;
* ``portable_mount_py36``: the helper run by Python 3.6 (``.venv/py36``,
  ``$VZ7NATIVE_PYTHON``), the Python of a VZ7 host, where ``os.preadv`` is
  missing and the reader copies once more.

Groups:

* ``cold``: the page cache is dropped before every round (what a backup of a
  container that is not in memory sees). Goal: the mount reads at least half
  as fast as the image file (at most 2x the time).
* ``warm``: the image file stays in the page cache; before each mount round
  only the mounted file's own pages are dropped, so the round costs what the
  FUSE + loop path itself costs, without disk I/O. For the record, no goal.
"""
import os
import shutil

import pytest

from conftest import goal
from vz7native import image, mount

MiB = 1 << 20
GiB = 1 << 30
DISK_SIZE = GiB + 256 * MiB
BIG_FILE = b"big.bin"

goal("cold", "portable_mount", "image_file", "at_most", 2.0,
     "sequential read in a portable mount vs the image file (goal: at least 50%)")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def warm_up(path):
    read_sequentially(path)     # returns nothing: pytest-benchmark would take it as arguments


def read_sequentially(path, length=GiB):
    buf = bytearray(MiB)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    done = 0
    try:
        while done < length:
            got = os.readv(fd, [view])
            if not got:
                break
            done += got
    finally:
        os.close(fd)
    assert done == length
    return done


def drop_file_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """(DiskDescriptor.xml, delta file) of an image holding one 1 GiB random file."""
    base = os.fsencode(str(tmp_path_factory.mktemp("mount-bench")))
    tree = os.path.join(base, b"tree")
    os.mkdir(tree)
    with open(os.path.join(tree, BIG_FILE), "wb") as f:
        for _ in range(GiB // MiB):
            f.write(os.urandom(MiB))
    dd = image.make_ct_disk(tree, DISK_SIZE, os.path.join(base, b"image"))
    shutil.rmtree(tree)
    return dd, image.read_descriptor(dd).chain()[0].file


PY36 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    ".venv", "py36", "bin", "python")
VARIANTS = {"default": {}, "libfuse2": {"FUSE_LIBRARY_PATH": "libfuse.so.2"},
            "py36": {"VZ7NATIVE_PYTHON": PY36}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def mounted(request, disk, tmp_path_factory):
    """The image's top mounted portable; the path of the big file inside."""
    if request.param == "py36" and not os.path.exists(PY36):
        pytest.skip("no %s (make .venv/py36/.ready)" % PY36)
    target = os.fsencode(str(tmp_path_factory.mktemp("mnt-" + request.param)))
    saved = {name: os.environ.get(name) for name in VARIANTS[request.param]}
    os.environ.update(VARIANTS[request.param])
    try:
        m = mount.mount_readonly(disk[0], target, backend="portable")
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    with m:
        assert m.info["direct_io"]
        assert ("fuse3" in m.info["libfuse"]) == (request.param != "libfuse2")
        name = "portable_mount" + ("" if request.param == "default" else "_" + request.param)
        yield name, os.path.join(target, BIG_FILE)


def test_cold_image_file(measure, disk):
    measure("cold", "image_file", read_sequentially, disk[1], setup=drop_caches)


def test_cold_portable_mount(measure, mounted):
    name, path = mounted
    measure("cold", name, read_sequentially, path, setup=drop_caches)


def test_warm_image_file(measure, disk):
    measure("warm", "image_file", read_sequentially, disk[1], setup=lambda: warm_up(disk[1]))


def test_warm_portable_mount(measure, disk, mounted):
    name, path = mounted

    def setup():
        warm_up(disk[1])
        drop_file_pages(path)

    measure("warm", name, read_sequentially, path, setup=setup)
