"""Taking a read-only mount set apart, and finding the ones left behind.

A portable set is, bottom up: the FUSE mount at ``<run dir>/fuse/<id>`` (type
``fuse.vz7native``, served by the helper), a loop device reading
``<run dir>/fuse/<id>/disk`` (for a raw image: the image file itself, at the
partition offset), and the ext4 mounted from that loop device at the target.
:func:`dismantle` removes it top down: filesystems on our loop devices, the
loop devices, the FUSE mount, its directory.

What counts as ours, so nothing else is ever touched:

* a loop device whose backing file is in one of our FUSE directories (only
  our helper creates files there); for a raw image, the loop device mounted
  at the record's target that reads the recorded image file at the recorded
  offset (a loop device that was never mounted freed itself when the helper
  died: autoclear);
* a filesystem whose device is such a loop device;
* a ``fuse.vz7native`` mount in our run dir.

:func:`remove_leftovers` applies this to every record that is no longer live
(see :mod:`vz7native.mount.state`) and to FUSE directories that have no record
at all (a helper killed before it wrote one, or a record lost).

Uses pyudev (through :mod:`vz7native.devices`): runs in the helper process or
the CLI, never in the file daemon.
"""
import contextlib
import os
import signal
import time

from vz7native import devices, procfs
from vz7native.mount import state

# How long a busy filesystem gets before it is detached lazily, and how long a
# lazily detached one may keep its loop device before the FUSE mount under it
# is cut anyway (its remaining readers then get EIO).
UMOUNT_GRACE = 5.0
RELEASE_GRACE = 10.0
# How long a helper gets to finish its own teardown (after its owner died, or
# after SIGTERM) before the next step.
HELPER_GRACE = 30.0


def _our_loops(record):
    if not record.backing_file:
        return []
    loops = [loop for loop in devices.loop_devices() if loop.backing_file == record.backing_file]
    if record.fuse_dir is not None:
        return loops
    # A raw image may be on other loop devices too, even at the same offset
    # (and a device number we once had may have been given to someone else):
    # ours is the one mounted at our target.
    at_target = {m.devnum for m in procfs.mounts_at(record.target)} if record.target else set()
    return [loop for loop in loops if loop.offset == record.offset and loop.devnum in at_target]


def _umount(entry, problems, grace):
    """Unmount ``entry`` (a MountEntry), waiting out a busy filesystem, then lazily."""
    def present():
        return any(m.mount_id == entry.mount_id for m in procfs.mounts())

    deadline = time.monotonic() + grace
    while True:
        top = procfs.mounts_at(entry.mount_point)
        if not top or top[-1].mount_id != entry.mount_id:
            if present():
                problems.append("something else is mounted over %s: left in place"
                                % os.fsdecode(entry.mount_point))
            return
        try:
            devices.umount(entry.mount_point)
            return
        except devices.DeviceError as e:
            if not present():
                return
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            try:
                devices.umount(entry.mount_point, lazy=True)
                problems.append("%s was busy (%s): detached lazily"
                                % (os.fsdecode(entry.mount_point), e))
            except devices.DeviceError as lazy_error:
                problems.append(str(lazy_error))
            return


def dismantle(record, umount_grace=UMOUNT_GRACE, release_grace=RELEASE_GRACE):
    """Remove what is left of ``record``'s set, top down; return the problems (strings).

    Idempotent: parts already gone are skipped. An empty list means nothing
    of the set remains.
    """
    problems = []
    loops = _our_loops(record)
    numbers = {loop.devnum for loop in loops}
    for entry in reversed(procfs.mounts()):
        if entry.devnum in numbers:
            _umount(entry, problems, umount_grace)
    for loop in loops:
        # Autoclear detaches a loop device with its last filesystem; a lazily
        # detached filesystem may still hold it for a while.
        if not devices.wait_loop_released(loop.devnum, loop.backing_file, release_grace):
            try:
                devices.detach_loop(loop.node)
            except devices.DeviceError as e:
                problems.append(str(e))
    if record.fuse_dir is not None:
        for entry in reversed(procfs.mounts_at(record.fuse_dir)):
            if entry.fstype == state.FUSE_TYPE:
                _umount(entry, problems, umount_grace)
        try:
            os.rmdir(record.fuse_dir)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append("cannot remove %s: %s" % (os.fsdecode(record.fuse_dir),
                                                      os.strerror(e.errno)))
    return problems


def _stop(helper, patience):
    """Let a running helper finish for ``patience`` seconds, then SIGTERM, then SIGKILL."""
    for sig, wait in ((None, patience), (signal.SIGTERM, HELPER_GRACE), (signal.SIGKILL, 5.0)):
        if sig is not None and procfs.is_running(helper):
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper.pid, sig)
        deadline = time.monotonic() + wait
        while procfs.is_running(helper):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        else:
            return


def _release(base, record):
    if record.helper is not None and procfs.is_running(record.helper):
        # Its owner died: it is taking the set down by itself.
        _stop(record.helper, HELPER_GRACE)
    if record.backend == "kernel":
        from vz7native.mount import kernel
        problems = kernel.release_leftover(record)
    else:
        problems = dismantle(record)
    if not problems:
        state.remove(base, record.id)
    return problems


def _matches(record, dd, target, mount_id):
    if mount_id is not None:
        return record.id == mount_id
    if dd is None and target is None:
        return True
    return (dd is not None and record.dd == dd) or (target is not None and record.target == target)


def remove_leftovers(base, dd=None, target=None, mount_id=None):
    """Remove the sets that are no longer live; return ``[(record, problems)]``.

    Restricted to the sets of DiskDescriptor ``dd`` or mounted at ``target``, or
    to the one set ``mount_id``, when given; otherwise every leftover, including
    FUSE directories without a record. Call it holding :func:`state.locked`.
    """
    dd = state.canonical_dd(dd) if dd is not None else None
    target = os.path.realpath(os.fsencode(target)) if target is not None else None
    done = []
    records = state.load_all(base)
    for record in records:
        if _matches(record, dd, target, mount_id) and not record.is_live():
            done.append((record, _release(base, record)))
    if dd is None and target is None and mount_id is None:
        done.extend(_remove_orphans(base, {r.id for r in records}))
        _remove_stale_temporaries(base, {r.id for r in state.load_all(base) if r.is_live()})
    return done


def _remove_orphans(base, known_ids):
    """FUSE directories (and their loop devices and mounts) that no record names."""
    done = []
    root = state.fuse_root(base)
    mounted = {m.mount_point for m in procfs.mounts() if m.fstype == state.FUSE_TYPE}
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        names = []
    names = set(names) | {os.path.basename(p) for p in mounted
                          if os.path.dirname(p) == root}
    for name in sorted(names):
        mount_id = os.fsdecode(name)
        if mount_id in known_ids:
            continue
        directory = os.path.join(root, name)
        record = state.MountRecord(id=mount_id, backend="portable", fuse_dir=directory,
                                   backing_file=os.path.join(directory, state.DISK_NAME))
        done.append((record, dismantle(record)))
    return done


def _remove_stale_temporaries(base, live_ids):
    # A record is written to "<id>.json.tmp" and renamed at once, only by its
    # own set: one left beside a set that is not live was left by a killed writer.
    directory = state.records_dir(base)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(b".json.tmp") and os.fsdecode(name[:-9]) not in live_ids:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def stop_live(base, target=None, dd=None):
    """Stop the live portable sets at ``target`` (or of ``dd``) and remove what they leave.

    For ``vz7ploop umount``: the helper gets SIGTERM and tears its set down
    itself. Returns ``[(record, problems)]``; an empty list means no set matched.
    """
    dd = state.canonical_dd(dd) if dd is not None else None
    target = os.path.realpath(os.fsencode(target)) if target is not None else None
    done = []
    with state.locked(base):
        for record in state.load_all(base):
            if not _matches(record, dd, target, None) or record.backend != "portable":
                continue
            if record.helper is not None and procfs.is_running(record.helper):
                _stop(record.helper, 0.0)
            done.append((record, _release(base, record)))
    return done

