"""The virtual disk of a snapshot chain as one flat read-only file, through FUSE.

The filesystem holds one file, ``disk``, whose bytes are the virtual disk
(:func:`vz7native.image.open_virtual_disk`). The helper attaches a loop device
to it and mounts the ext4 inside; this module is only the FUSE side.

Only the helper process imports this module: mfusepy is ctypes-based.

Choices, measured with the benchmark (benchmarks/test_mount_bench.py):

* libfuse 3 is preferred over libfuse 2 when both are installed. With libfuse 3
  the kernel sends reads of up to 1 MiB (``max_pages``) and, for the loop
  driver's direct I/O, several at once (async direct I/O); libfuse 2 caps
  requests at 128 KiB. ``$FUSE_LIBRARY_PATH`` still wins when set.
* Multi-threaded: requests run in parallel, and the GIL is released while a
  thread waits for the image file in ``os.pread``.
* Reads land directly in libfuse's reply buffer (``VirtualDisk.readinto``
  through a memoryview of it) instead of mfusepy's bytes-then-memmove, one
  copy less per request.
* A 0.2 ms GIL switch interval (Python's default is 5 ms) for the helper
  process: a thread back from the image file waits for the GIL up to that
  long while others run, and the requests queue up behind it. Measured on
  cold 1 GiB reads: 1.6 s -> 0.7 s with Python 3.6, 1.2 s -> 0.7 s with 3.11
  (0.1 ms and 0.5 ms were both slower than 0.2 ms).
* Mount options: ``ro`` and ``default_permissions`` (the kernel checks the
  0400 root-owned file, we do no permission logic); no ``allow_other``: the
  loop driver reads from kernel threads running as root, which passes the
  owner-only check, and nobody else has a reason to read the raw disk.
"""
import ctypes
import ctypes.util
import errno
import logging
import os
import stat
import sys
import threading

from vz7native.mount.state import DISK_NAME, FUSE_SUBTYPE

_DISK_NAME = DISK_NAME.decode("ascii")
_DISK_PATH = "/" + _DISK_NAME

_log = logging.getLogger(__name__)


def _choose_libfuse():
    if not os.environ.get("FUSE_LIBRARY_PATH"):
        found = ctypes.util.find_library("fuse3") or ctypes.util.find_library("fuse")
        if found:
            os.environ["FUSE_LIBRARY_PATH"] = found
    return os.environ.get("FUSE_LIBRARY_PATH")


LIBFUSE = _choose_libfuse()
import mfusepy  # noqa: E402  (after choosing the library it loads)


class DiskView(mfusepy.Operations):
    """``/disk``: the bytes of ``vdisk``, read-only. ``ready`` is set once the
    kernel has sent FUSE's INIT, i.e. the file can be opened."""

    use_ns = True

    def __init__(self, vdisk):
        self.vdisk = vdisk
        self.ready = threading.Event()

    def init(self, path):
        self.ready.set()

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o500, "st_nlink": 2}
        if path == _DISK_PATH:
            return {"st_mode": stat.S_IFREG | 0o400, "st_nlink": 1, "st_size": self.vdisk.size,
                    "st_blocks": (self.vdisk.size + 511) // 512}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        if path != "/":
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return [".", "..", _DISK_NAME]

    def open(self, path, flags):
        if path != _DISK_PATH:
            raise mfusepy.FuseOSError(errno.ENOENT)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise mfusepy.FuseOSError(errno.EROFS)
        return 0

    def read(self, path, size, offset, fh):
        """The plain mfusepy read (what ``DirectFUSE`` replaces by :meth:`readinto`)."""
        buf = bytearray(size)
        return bytes(buf[:self.readinto(offset, memoryview(buf))])

    def readinto(self, offset, view):
        try:
            return self.vdisk.readinto(offset, view)
        except Exception as e:
            # The kernel gets EIO; the reason goes to the helper's log.
            _log.error("reading %d bytes at %d of the virtual disk failed: %s",
                       len(view), offset, e)
            raise mfusepy.FuseOSError(e.errno if isinstance(e, OSError) and e.errno
                                      else errno.EIO)


class DirectFUSE(mfusepy.FUSE):
    """mfusepy's FUSE with reads going straight into libfuse's buffer.

    Overrides mfusepy's low-level ``read(path, buf, size, offset, fip)``
    callback (same signature in mfusepy 1.x and 3.x): ``buf`` is a
    ``POINTER(c_byte)`` to ``size`` writable bytes.
    """

    def read(self, path, buf, size, offset, fip):
        address = ctypes.cast(buf, ctypes.c_void_p).value
        view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
        return self.operations.readinto(offset, view)


def fuse_options(mount_id):
    """Mount options for :class:`DirectFUSE` (keywords, mfusepy style)."""
    options = {"foreground": True, "ro": True, "default_permissions": True,
               "fsname": "vz7native:" + mount_id, "subtype": FUSE_SUBTYPE}
    if mfusepy.fuse_version_major == 3:
        # libfuse 3.14 warns about an unset thread limit unless this is given.
        options["max_idle_threads"] = 8
    return options


SWITCH_INTERVAL = 0.0002


def serve(view, fuse_dir, mount_id):
    """Serve ``view`` (a DiskView) at ``fuse_dir`` until that mount goes away.

    Blocks: run it in a thread and wait for ``view.ready``. Sets this
    process's GIL switch interval (see the module docstring).
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    DirectFUSE(view, os.fsdecode(fuse_dir), **fuse_options(mount_id))
