"""Read-only mounts of a ploop disk's snapshot (or of its top).

    >>> from vz7native import mount
    >>> with mount.mount_readonly(dd, b"/var/tmp/ct101", guid=snapshot) as m:
    ...     back_up(m.target)

Backends:

``kernel``
    libploop mounts the snapshot through the ploop kernel driver, under the
    component name ``vz7native-ro`` so it can sit beside the running container
    (VZ7 hosts).
``portable``
    no ploop driver needed: a helper process serves the snapshot's delta chain
    as one flat read-only disk file through FUSE, a read-only loop device reads
    it at the partition offset, and the ext4 inside is mounted ``ro,noload``.
    A raw image goes straight to a loop device.
``auto``
    ``kernel`` where ``/proc/vz/ploop_minor`` exists, else ``portable``.

Both leave the container's image untouched. A mount is tied to the process
that made it: if that process dies, the portable helper takes the set down by
itself, and whatever a killed helper left behind (mount, loop device, FUSE
mount) is recognised as ours and removed by the next mount of the same image
or at the same target, and by :func:`cleanup` (``vz7ploop cleanup``).

**This package is imported inside the Bareos file daemon**: neither it nor
anything on its call path imports ctypes-based libraries (pyudev, the FUSE
binding), which leak memory per job in sub-interpreters
(bareos-fd-contract.md §12.1). The device work runs in the helper process
(:mod:`vz7native.mount.helper`).
"""
import os

from vz7native.paths import PLOOP_MINOR

BACKENDS = ("auto", "kernel", "portable")
KERNEL_COMPONENT = "vz7native-ro"


class MountError(Exception):
    """A read-only mount could not be made or taken down."""


class TargetBusyError(MountError):
    """The mount point already has something mounted on it."""


class RunDirError(MountError):
    """The run dir (records, FUSE mount points, lock) cannot be written: full,
    read-only, ... The message names the file and the run dir."""


def choose_backend(backend="auto"):
    """``"kernel"`` or ``"portable"`` for ``backend`` (``"auto"`` decides by the driver)."""
    if backend not in BACKENDS:
        raise ValueError("unknown mount backend %r (choose from %s)"
                         % (backend, ", ".join(BACKENDS)))
    if backend == "auto":
        return "kernel" if os.path.exists(PLOOP_MINOR) else "portable"
    return backend


class ReadOnlyMount(object):
    """A snapshot mounted read-only. A context manager that unmounts on exit.

    ``dd`` (the DiskDescriptor.xml), ``target`` (the mount point), ``guid``
    (the snapshot mounted; the top's GUID when none was asked for),
    ``backend`` (``"kernel"`` or ``"portable"``), ``device`` (the block device
    the filesystem is on) and ``mounted``. Paths are bytes.
    """

    backend = None

    def __init__(self, dd, target, guid, device):
        self.dd = dd
        self.target = target
        self.guid = guid
        self.device = device
        self.mounted = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.umount()

    def __repr__(self):
        return "<%s mount of %s at %s%s>" % (
            self.backend, os.fsdecode(self.dd), os.fsdecode(self.target),
            "" if self.mounted else " (unmounted)")

    def umount(self):
        """Take the mount down (does nothing the second time)."""
        if self.mounted:
            self._umount()
            self.mounted = False

    def _umount(self):
        raise NotImplementedError


def mount_readonly(dd_path, target, guid=None, backend="auto", persistent=False):
    """Mount snapshot ``guid`` (None: the top) of ``dd_path`` read-only at ``target``.

    ``dd_path`` is a DiskDescriptor.xml or its directory, ``target`` an
    existing directory with nothing mounted on it, ``guid`` with or without
    braces. A mount goes with this process: the portable helper takes it down
    when this process dies, and a kernel mount left behind is removed by the
    next kernel mount of the image. ``persistent`` (portable backend only)
    keeps the mount after this process exits, until ``vz7ploop umount`` (the
    CLI's ``mount``). Returns a :class:`ReadOnlyMount`.

    Raises ValueError for a bad backend name (or ``persistent`` with the
    kernel backend), the ``vz7native.image`` errors for a descriptor,
    snapshot or delta that cannot be read, as ``verify`` names them
    (:class:`~vz7native.image.SnapshotNotFound`,
    :class:`~vz7native.image.FormatError`, ...; also when the portable helper
    finds them), :class:`MountError` (:class:`TargetBusyError`,
    :class:`RunDirError`) when the portable mount fails otherwise, and the
    :class:`~vz7native.ploop.PloopError` family from the kernel backend
    (:class:`~vz7native.ploop.DeviceError` where the ploop driver is missing).
    """
    backend = choose_backend(backend)
    target = os.path.realpath(os.fsencode(target))
    if not os.path.isdir(target):
        raise MountError("mount point %s is not a directory" % os.fsdecode(target))
    if backend == "kernel":
        if persistent:
            raise ValueError("persistent mounts are the portable backend's")
        from vz7native.mount import kernel
        return kernel.mount(dd_path, target, guid)
    from vz7native.mount import portable
    return portable.mount(dd_path, target, guid, persistent)


def cleanup(dd_path=None):
    """Remove what killed processes left of our mounts (of ``dd_path``, or all).

    Live mounts are never touched. Returns one dict per set removed:
    ``{"id", "target", "dd", "problems"}`` (``problems``: what could not be
    removed, empty when everything went). Runs in a helper process.
    """
    from vz7native.mount import portable
    return portable.cleanup(dd_path)
