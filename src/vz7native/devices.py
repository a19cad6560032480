"""Block devices of this host, and mounting filesystems on them.

pyudev finds devices and reads their attributes (a loop device's backing file,
offset and flags); loop devices are attached and detached with the loop ioctls
through :mod:`fcntl`; ``mount``/``umount`` (util-linux) mount and unmount. What
is mounted where is :func:`vz7native.procfs.mounts`.

pyudev is ctypes-based and costs about 250 KB per Bareos job that imports it
(bareos-fd-contract.md §12.1): **only the mount helper process and the CLI
import this module**, never code that runs inside the file daemon.

Paths and device nodes are ``bytes``.
"""
import collections
import errno
import fcntl
import os
import struct
import subprocess
import time

import pyudev

LOOP_CONTROL = b"/dev/loop-control"

# <linux/loop.h>
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64); number,
# encrypt_type, encrypt_key_size, flags (u32); file_name[64], crypt_name[64],
# encrypt_key[32]; init[2] (u64). struct loop_config: fd, block_size (u32),
# loop_info64, reserved[8] (u64).
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")
_LOOP_CONFIG = struct.Struct("=II%ds8Q" % _LOOP_INFO64.size)

# Another process may take the free loop device between LOOP_CTL_GET_FREE and
# our LOOP_CONFIGURE; then we ask again.
_ATTACH_ATTEMPTS = 20


class DeviceError(Exception):
    """A device or mount operation failed. ``errno`` is set when the kernel said why."""

    def __init__(self, message, errno=None):
        super(DeviceError, self).__init__(message)
        self.errno = errno


LoopDevice = collections.namedtuple(
    "LoopDevice", "node devnum backing_file offset size_limit read_only autoclear direct_io")
LoopDevice.__doc__ = """An attached loop device, as the kernel describes it.

``node`` (``b"/dev/loop3"``), ``devnum``, ``backing_file`` (the path the kernel
shows, ``bytes``), ``offset`` and ``size_limit`` (bytes; 0 = to the end),
``read_only``, ``autoclear`` (detached when its last user closes it),
``direct_io``.
"""

# -- mounts --------------------------------------------------------------------

def mount(device, target, fstype, options):
    """``mount -t fstype -o options device target`` (util-linux)."""
    _run([b"mount", b"-t", os.fsencode(fstype), b"-o", os.fsencode(options),
          os.fsencode(device), os.fsencode(target)], "mount %s" % os.fsdecode(target))


def umount(target, lazy=False):
    """Unmount the topmost mount at ``target`` (``lazy``: detach it now, free it later)."""
    _run([b"umount"] + ([b"--lazy"] if lazy else []) + [os.fsencode(target)],
         "unmount %s" % os.fsdecode(target))


def _run(argv, what):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        raise DeviceError("cannot %s: %s" % (what, text or "exit code %d" % proc.returncode))


# -- block devices (pyudev) ----------------------------------------------------

def _is_loop(sys_name):
    return sys_name.startswith("loop") and sys_name[4:5].isdigit()


def _loop_device(dev):
    attrs = dev.attributes
    backing = attrs.get("loop/backing_file")
    if not backing:
        return None         # a loop device with nothing attached

    def flag(name):
        value = attrs.get(name)
        return value is not None and value.strip() == b"1"

    try:
        offset, size_limit = attrs.asint("loop/offset"), attrs.asint("loop/sizelimit")
    except KeyError:
        return None         # detached while we read it: the kernel removed loop/
    return LoopDevice(os.fsencode(dev.device_node), dev.device_number, backing.rstrip(b"\n"),
                      offset, size_limit, flag("ro"), flag("loop/autoclear"), flag("loop/dio"))


def loop_devices():
    """Every attached loop device (a list of LoopDevice)."""
    context = pyudev.Context()
    found = []
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        if _is_loop(dev.sys_name):
            loop = _loop_device(dev)
            if loop is not None:
                found.append(loop)
    return found


def loop_device(devnum):
    """The attached loop device with number ``devnum``, or None."""
    context = pyudev.Context()
    try:
        dev = pyudev.Devices.from_device_number(context, "block", devnum)
    except pyudev.DeviceNotFoundError:
        return None
    return _loop_device(dev) if _is_loop(dev.sys_name) else None


# -- loop ioctls -----------------------------------------------------------------

def attach_loop(path, offset=0, size_limit=0, direct_io=True, read_only=True):
    """Attach ``path`` to a free loop device, read-only unless ``read_only`` is
    false; return ``(node, fd)``.

    The device is set up with LO_FLAGS_AUTOCLEAR: the kernel detaches it when
    its last user goes away. The returned ``fd`` is that user until something
    else (a filesystem mount) holds the device: close it then. So a device can
    never outlive both its mount and the process that attached it, even when
    that process is killed.

    ``direct_io`` asks the loop driver to read the backing file with O_DIRECT
    (no second copy of the data in the page cache; large asynchronous reads,
    which matters for a FUSE backing file). Kernels or files that cannot do it
    fall back to buffered reads.

    LOOP_CONFIGURE (Linux 5.8+) sets everything in one call; older kernels get
    LOOP_SET_FD + LOOP_SET_STATUS64 + LOOP_SET_DIRECT_IO.
    """
    path = os.fsencode(path)
    flags = (LO_FLAGS_READ_ONLY if read_only else 0) | LO_FLAGS_AUTOCLEAR | (
        LO_FLAGS_DIRECT_IO if direct_io else 0)
    info = _LOOP_INFO64.pack(0, 0, 0, offset, size_limit, 0, 0, 0, flags,
                             path[:LO_NAME_SIZE - 1], b"", b"", 0, 0)
    # The device is writable only if both it and the backing file are open for writing.
    access = os.O_RDONLY if read_only else os.O_RDWR
    backing = os.open(path, access | os.O_CLOEXEC)
    try:
        for _ in range(_ATTACH_ATTEMPTS):
            node = b"/dev/loop%d" % _free_loop_number()
            fd = os.open(node, access | os.O_CLOEXEC)
            try:
                _configure(fd, backing, info, direct_io)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.EBUSY:
                    continue
                raise DeviceError("cannot attach %s to %s: %s" % (
                    os.fsdecode(path), os.fsdecode(node), os.strerror(e.errno)), e.errno)
            return node, fd
    finally:
        os.close(backing)
    raise DeviceError("cannot attach %s: every free loop device was taken by someone else "
                      "(%d attempts)" % (os.fsdecode(path), _ATTACH_ATTEMPTS), errno.EBUSY)


def _free_loop_number():
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise DeviceError("cannot open %s: %s (is the loop driver loaded?)" % (
            os.fsdecode(LOOP_CONTROL), os.strerror(e.errno)), e.errno)
    try:
        return fcntl.ioctl(control, LOOP_CTL_GET_FREE)
    except OSError as e:
        raise DeviceError("no free loop device: %s" % os.strerror(e.errno), e.errno)
    finally:
        os.close(control)


def _configure(fd, backing, info, direct_io):
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, _LOOP_CONFIG.pack(backing, 0, info, *[0] * 8))
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    # Before Linux 5.8: three steps; LOOP_SET_FD makes the device read-only
    # when the backing file is open read-only.
    fcntl.ioctl(fd, LOOP_SET_FD, backing)
    try:
        fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
    except OSError:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        raise
    if direct_io:
        try:
            fcntl.ioctl(fd, LOOP_SET_DIRECT_IO, 1)
        except OSError:
            pass        # buffered reads work too, only slower


def detach_loop(node):
    """Detach loop device ``node`` (when still in use: as soon as its last user closes it)."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    except OSError as e:
        if e.errno != errno.ENXIO:          # ENXIO: nothing attached
            raise DeviceError("cannot detach %s: %s" % (os.fsdecode(node), os.strerror(e.errno)),
                              e.errno)
    finally:
        os.close(fd)


def wait_loop_released(devnum, backing_file, timeout):
    """Wait until loop ``devnum`` no longer serves ``backing_file``; True if it happened."""
    deadline = time.monotonic() + timeout
    while True:
        loop = loop_device(devnum)
        if loop is None or loop.backing_file != backing_file:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
