"""The portable backend's helper process: all device work happens here.

    python -m vz7native.mount.helper serve --run-dir R --id ID --dd DD --target DIR
                                           [--guid GUID] [--persistent]
    python -m vz7native.mount.helper cleanup --run-dir R [--dd DD] [--id ID]

``serve`` mounts a snapshot read-only at DIR and keeps it mounted: it serves
the chain as one flat disk file through FUSE (:mod:`vz7native.mount.fuseview`),
attaches a read-only, auto-clearing loop device at the partition offset, and
mounts the ext4 with ``ro,noload`` (plus ``nosuid,nodev,noexec``: a backup
view of a container must not give its setuid binaries or device nodes any
power on the host). A raw image (a chain of one raw base) needs no FUSE: the
loop device reads the image file directly.

It talks to its parent over stdin/stdout, one line each way:
``READY <json>`` (loop device, offsets, ...) or ``ERROR <json>`` (``type``,
``message``) once the mount is made or has failed, and ``DONE`` or
``ERROR <json>`` after the teardown. It tears the set down, in order (umount,
loop device, FUSE), when

* the parent closes stdin, or dies (EOF) -- unless ``--persistent`` (the
  ``vz7ploop mount`` case: the set then stays until ``vz7ploop umount``),
* it gets SIGTERM, SIGINT or SIGHUP,
* its FUSE server stops (someone unmounted it: the disk is gone anyway),
* or the setup failed half way.

Before mounting, it removes the leftovers of earlier sets of the same image
or at the same target (:mod:`vz7native.mount.teardown`), under the run dir's
lock, and writes its own record before it creates anything.

``cleanup`` removes leftovers and prints ``[{"id":..., "target":...,
"problems": [...]}]`` as JSON.

pyudev and mfusepy are ctypes-based: this process exists so that the file
daemon never imports them (bareos-fd-contract.md §12.1).
"""
import argparse
import json
import logging
import os
import select
import signal
import sys
import threading
import time

from vz7native import devices, image, procfs
from vz7native.mount import state, teardown

EXT4_OPTIONS = "ro,noload,nosuid,nodev,noexec"
FUSE_START_TIMEOUT = 30.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_log = logging.getLogger("vz7native.mount.helper")


class Stopped(Exception):
    """A stop was requested while the set was being built."""


class TargetBusy(Exception):
    """The target is mounted on, or claimed by another live set."""


class StopRequest(object):
    """Signals and the parent's end of stdin, as one thing to wait for."""

    def __init__(self, control_fd):
        self.reason = None
        self._control_fd = control_fd
        self._wake_r, self._wake_w = os.pipe()
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        if self.reason is None:
            self.reason = "signal %d" % signum
        os.write(self._wake_w, b"x")

    def check(self):
        if self.reason is not None:
            raise Stopped(self.reason)

    def wait(self, still_serving):
        """Block until a stop is requested or ``still_serving()`` turns False."""
        watched = [self._wake_r] + ([self._control_fd] if self._control_fd is not None else [])
        while self.reason is None:
            ready, _, _ = select.select(watched, [], [], 1.0)
            if self._control_fd in ready and not os.read(self._control_fd, 4096):
                self.reason = "the parent closed the control pipe"
            elif not still_serving():
                self.reason = "the FUSE server stopped"
        return self.reason


class PortableSet(object):
    """One mount set: built by :meth:`build`, taken apart by :meth:`dismantle`."""

    def __init__(self, base, record):
        self.base = base
        self.record = record
        self.vdisk = None
        self.view = None
        self.fuse_thread = None
        self.fuse_error = None
        self.info = {}

    def build(self, stop):
        stop.check()
        record = self.record
        descriptor = image.read_descriptor(record.dd)
        chain = descriptor.chain(record.guid)
        self.vdisk = image.open_virtual_disk(descriptor, record.guid)
        offset, size = _filesystem_extent(self.vdisk)
        if len(chain) == 1 and chain[0].kind == "Plain":
            # A raw base alone: the file is the disk.
            backing = os.path.realpath(chain[0].file)
        else:
            record.fuse_dir = state.fuse_dir(self.base, record.id)
            backing = os.path.join(record.fuse_dir, state.DISK_NAME)
        record.backing_file, record.offset, record.size_limit = backing, offset, size
        state.save(self.base, record)
        if record.fuse_dir is not None:
            self._serve(stop)
        stop.check()
        node, fd = devices.attach_loop(backing, offset, size)
        try:
            devnum = os.fstat(fd).st_rdev
            record.loop = node
            state.save(self.base, record)
            stop.check()
            devices.mount(node, record.target, "ext4", EXT4_OPTIONS)
        finally:
            # From here the filesystem holds the device; autoclear frees it with the mount.
            os.close(fd)
        loop = devices.loop_device(devnum)
        self.info = {"loop": os.fsdecode(node), "offset": offset, "size": size,
                     "guid": self.vdisk.guid, "direct_io": bool(loop and loop.direct_io),
                     "fuse_dir": os.fsdecode(record.fuse_dir) if record.fuse_dir else None,
                     "libfuse": _fuseview().LIBFUSE if record.fuse_dir else None}

    def _serve(self, stop):
        fv = _fuseview()
        with state.writing(self.base, self.record.fuse_dir):
            os.mkdir(self.record.fuse_dir, 0o700)
        self.view = fv.DiskView(self.vdisk)
        self.fuse_thread = threading.Thread(target=self._run_fuse, name="fuse", daemon=True)
        self.fuse_thread.start()
        deadline = time.monotonic() + FUSE_START_TIMEOUT
        while not self.view.ready.wait(0.05):
            if not self.fuse_thread.is_alive():
                raise devices.DeviceError("cannot serve the disk through FUSE at %s: %s" % (
                    os.fsdecode(self.record.fuse_dir),
                    self.fuse_error or "libfuse gave up (see the helper's stderr)"))
            if time.monotonic() > deadline:
                raise devices.DeviceError("FUSE did not start within %d s" % FUSE_START_TIMEOUT)
            stop.check()

    def _run_fuse(self):
        try:
            _fuseview().serve(self.view, self.record.fuse_dir, self.record.id)
        except Exception as e:      # reported by _serve or, later, by the stop wait
            self.fuse_error = e

    def serving(self):
        return self.fuse_thread is None or self.fuse_thread.is_alive()

    def dismantle(self):
        """Umount, detach the loop device, stop FUSE; return the problems (strings)."""
        problems = teardown.dismantle(self.record)
        if self.fuse_thread is not None:
            self.fuse_thread.join(teardown.UMOUNT_GRACE)
            if self.fuse_thread.is_alive():
                problems.append("the FUSE server did not stop")
        if self.vdisk is not None:
            self.vdisk.close()
        if not problems:
            state.remove(self.base, self.record.id)
        return problems


def _fuseview():
    """The FUSE module, imported on first use (raw images never load libfuse)."""
    from vz7native.mount import fuseview as module
    return module


def _filesystem_extent(vdisk):
    """(offset, size) of the filesystem: the GPT's partition, or the whole disk."""
    try:
        part = image.find_partition(vdisk)
    except image.NoPartitionTable:
        return 0, vdisk.size
    return part.offset, part.size


def _claim(base, record):
    """Remove leftovers of the same image or target, refuse a busy target, save the record."""
    with state.locked(base):
        teardown.remove_leftovers(base, dd=record.dd)
        teardown.remove_leftovers(base, target=record.target)
        if procfs.mounts_at(record.target):
            raise TargetBusy("%s is already a mount point" % os.fsdecode(record.target))
        # A live set may not have mounted yet: its record claims the target already.
        for other in state.load_all(base):
            if other.target == record.target:
                raise TargetBusy("%s is being mounted by another process (mount %s)"
                                 % (os.fsdecode(record.target), other.id))
        state.save(base, record)


def _say(out, word, payload=None):
    if out is None:
        return
    try:
        out.write(word + ("" if payload is None else " " + json.dumps(payload)) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass        # the parent is gone; the teardown goes on regardless


def _error(e):
    return {"type": type(e).__name__, "message": str(e)}


def serve(args):
    base = os.fsencode(args.run_dir)
    out = sys.stdout
    control = None if args.persistent else sys.stdin.fileno()
    stop = StopRequest(control)
    record = state.MountRecord(
        id=args.id, backend="portable", dd=state.canonical_dd(args.dd),
        guid=args.guid, target=os.path.realpath(os.fsencode(args.target)),
        helper=procfs.process_id(os.getpid()),
        owner=None if args.persistent else procfs.process_id(os.getppid()))
    try:
        _claim(base, record)
    except Exception as e:
        _say(out, "ERROR", _error(e))
        return 1
    mount_set = PortableSet(base, record)
    try:
        mount_set.build(stop)
    except Exception as e:
        problems = mount_set.dismantle()
        _say(out, "ERROR", dict(_error(e), problems=problems))
        return 1
    _say(out, "READY", mount_set.info)
    if args.persistent:
        _detach_stdio()
        out = None
    reason = stop.wait(mount_set.serving)
    _log.debug("stopping: %s", reason)
    problems = mount_set.dismantle()
    if problems:
        _say(out, "ERROR", {"type": "TeardownError", "message": "; ".join(problems),
                            "problems": problems})
        return 1
    _say(out, "DONE")
    return 0


def _detach_stdio():
    """A persistent helper outlives the command that started it: let go of its terminal."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def run_cleanup(args):
    base = os.fsencode(args.run_dir)
    with state.locked(base):
        done = teardown.remove_leftovers(base, dd=args.dd, mount_id=args.id)
    json.dump([{"id": r.id, "target": os.fsdecode(r.target) if r.target else None,
                "dd": os.fsdecode(r.dd) if r.dd else None, "problems": p}
               for r, p in done], sys.stdout)
    sys.stdout.write("\n")
    return 1 if any(p for _, p in done) else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m vz7native.mount.helper")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    p = sub.add_parser("serve")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--dd", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--guid")
    p.add_argument("--persistent", action="store_true")
    p.set_defaults(func=serve)
    p = sub.add_parser("cleanup")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--dd")
    p.add_argument("--id")
    p.set_defaults(func=run_cleanup)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="vz7native helper: %(message)s")
    args = build_parser().parse_args(argv)
    # Every path it gets is absolute; a helper must not keep its caller's
    # working directory (and that filesystem) busy.
    os.chdir("/")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
