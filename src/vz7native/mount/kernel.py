"""The kernel backend: libploop mounts the snapshot through the ploop driver.

The mount uses the component name ``vz7native-ro``, so libploop gives it a
device of its own beside the running container's (a handle per component:
see ploop-notes.md §3.2). A record (:mod:`vz7native.mount.state`) names this
process as the owner: if it dies with the mount in place, the next kernel
mount of the same image finds the record's owner gone and unmounts the
component first (libploop would otherwise refuse: "already used by device").

Runs in the file daemon: libploop through cffi, no ctypes.
"""
import os

from vz7native import ploop, procfs
from vz7native.mount import KERNEL_COMPONENT, ReadOnlyMount, state


class KernelReadOnlyMount(ReadOnlyMount):
    """A snapshot on a ploop device (see :func:`mount`); ``device`` is the partition."""

    backend = "kernel"

    def __init__(self, disk, kernel_mount, record, base):
        super(KernelReadOnlyMount, self).__init__(
            disk.path, kernel_mount.target, record.guid, kernel_mount.partition)
        self._disk = disk
        self._mount = kernel_mount
        self._record = record
        self._base = base

    def _umount(self):
        self._mount.umount()
        self._disk.close()
        state.remove(self._base, self._record.id)


def mount(dd_path, target, guid=None):
    """Mount through libploop; see :func:`vz7native.mount.mount_readonly`."""
    base = state.run_dir()
    disk = ploop.Disk.open(dd_path)
    try:
        record = state.MountRecord(
            id=state.new_id(), backend="kernel", dd=state.canonical_dd(disk.path),
            guid=guid or disk.top_guid, target=target,
            owner=procfs.process_id(os.getpid()))
        with state.locked(base):
            for old in state.load_all(base):
                if old.backend == "kernel" and old.dd == record.dd and not old.is_live():
                    if not release_leftover(old):
                        state.remove(base, old.id)
            state.save(base, record)
        try:
            kernel_mount = disk.mount(target, readonly=True, guid=guid,
                                      component=KERNEL_COMPONENT)
        except BaseException:
            state.remove(base, record.id)
            raise
    except BaseException:
        disk.close()
        raise
    return KernelReadOnlyMount(disk, kernel_mount, record, base)


def release_leftover(record):
    """Unmount the component mount a dead owner left; return the problems (strings)."""
    try:
        with ploop.Disk.open(record.dd) as disk:
            if disk.is_mounted(KERNEL_COMPONENT):
                disk.umount(KERNEL_COMPONENT)
    except (ploop.DeviceNotMountedError, ploop.DiskDescriptorError):
        pass        # nothing mounted, or the image itself is gone
    except ploop.PloopError as e:
        return [str(e)]
    return []
