"""vz7native.devices against the real kernel: loop devices, mounts."""
import errno
import os
import subprocess
import threading

import pytest

from vz7native import devices, procfs

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture
def tmp(tmp_path):
    return os.fsencode(str(tmp_path))


@pytest.fixture
def backing(tmp):
    """A 4 MiB file whose every MiB starts with its own number."""
    path = os.path.join(tmp, b"backing.img")
    with open(path, "wb") as f:
        for i in range(4):
            f.write((b"MiB %d " % i).ljust(MiB, b"."))
    return path


def test_umount_of_a_busy_mount_fails_and_lazy_detaches(tmpfs_at):
    path = tmpfs_at(b"busy")
    with open(os.path.join(path, b"held"), "w"):
        with pytest.raises(devices.DeviceError, match="unmount"):
            devices.umount(path)
        assert procfs.mounts_at(path)
        devices.umount(path, lazy=True)
        assert procfs.mounts_at(path) == []


def test_attached_loop_device_is_read_only_autoclear_at_offset(backing):
    node, fd = devices.attach_loop(backing, offset=MiB, size_limit=2 * MiB)
    try:
        devnum = os.fstat(fd).st_rdev
        loop = devices.loop_device(devnum)
        assert loop.node == node
        assert loop.backing_file == os.path.realpath(backing)
        assert (loop.offset, loop.size_limit) == (MiB, 2 * MiB)
        assert loop.read_only and loop.autoclear
        assert loop.direct_io      # the backing file sits on ext4, which does O_DIRECT
        assert loop in devices.loop_devices()
        # The device shows the window [1 MiB, 3 MiB) of the file.
        assert os.lseek(fd, 0, os.SEEK_END) == 2 * MiB
        assert os.pread(fd, 6, 0) == b"MiB 1 "
        assert os.pread(fd, 6, MiB) == b"MiB 2 "
        writer = os.open(node, os.O_WRONLY)
        try:
            with pytest.raises(OSError) as raised:
                os.write(writer, bytes(512))
        finally:
            os.close(writer)
        assert raised.value.errno in (errno.EPERM, errno.EROFS)
    finally:
        os.close(fd)
    # Its last user is gone: the kernel detached it.
    assert devices.wait_loop_released(devnum, os.path.realpath(backing), 5.0)


def test_detach_loop_frees_a_device_without_autoclear(backing):
    node = subprocess.check_output([b"losetup", b"--find", b"--show", b"--read-only",
                                    backing]).strip()
    devnum = os.stat(node).st_rdev
    try:
        loop = devices.loop_device(devnum)
        assert loop.backing_file == os.path.realpath(backing) and not loop.autoclear
        devices.detach_loop(node)
        assert devices.wait_loop_released(devnum, loop.backing_file, 5.0)
        devices.detach_loop(node)       # nothing attached any more: no error
    finally:
        subprocess.call([b"losetup", b"--detach", node], stderr=subprocess.DEVNULL)


def test_mount_through_an_attached_loop_device(tmp, backing):
    image = os.path.join(tmp, b"fs.img")
    with open(image, "wb") as f:
        f.truncate(8 * MiB)
    subprocess.check_call([b"mkfs.ext4", b"-q", b"-F", b"-E", b"offset=%d" % MiB, image,
                           b"%d" % (6 * MiB // 1024)])
    target = os.path.join(tmp, b"mnt")
    os.mkdir(target)
    node, fd = devices.attach_loop(image, offset=MiB, size_limit=6 * MiB)
    devnum = os.fstat(fd).st_rdev
    try:
        devices.mount(node, target, "ext4", "ro,noload")
    finally:
        os.close(fd)
    try:
        entry, = procfs.mounts_at(target)
        assert (entry.fstype, entry.devnum) == (b"ext4", devnum)
        assert entry.options.startswith(b"ro")
        # The mount holds the device: closing our fd did not free it.
        assert devices.loop_device(devnum).backing_file == os.path.realpath(image)
    finally:
        devices.umount(target)
    assert devices.wait_loop_released(devnum, os.path.realpath(image), 5.0)


def test_mount_failure_names_the_target(tmp):
    target = os.path.join(tmp, b"nowhere")
    os.mkdir(target)
    with pytest.raises(devices.DeviceError, match="nowhere"):
        devices.mount(b"/dev/null", target, "ext4", "ro")


def test_listing_loop_devices_while_one_detaches_never_fails(backing):
    # The kernel removes a device's loop/ attributes the moment it detaches; a
    # listing that read its backing file just before must drop it, not fail.
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            _, fd = devices.attach_loop(backing)
            os.close(fd)            # autoclear: this detaches it

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(300):
            for loop in devices.loop_devices():
                assert loop.backing_file and loop.size_limit >= 0
    finally:
        stop.set()
        worker.join()
