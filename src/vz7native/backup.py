"""A consistent read-only view of one container for a backup, and what it holds.

    >>> from vz7native.host import Host
    >>> from vz7native.backup import BackupSession
    >>> with BackupSession(Host(b"/"), name="web01", uuid="2d109ae4-...") as session:
    ...     for item in session.items():
    ...         print(item.catalog_path, item.entry.type)

What opening a session does, in this order, each step registered on the
session's ``ExitStack`` the moment it exists (so ``close()`` undoes exactly what
was done, on every path):

1. find the container (name and UUID must name the same one) and its status:
   running or stopped, anything else is refused;
2. take the ``lockfile`` (if any) and the per-container lock, and refuse while
   pcompact works on the container;
3. clean what a crashed session of ours left for this container (a snapshot
   recorded in the state file, a mount at the target), saying what was cleaned;
4. running container: look for blocker files in its live root, then take a
   snapshot recorded in a state file before it is made (so a crash can never
   leave an unknown snapshot behind); stopped: no snapshot;
5. mount the snapshot (running) or the top (stopped) read-only at
   ``<mount_base>/<uuid>``; stopped containers are checked for blockers in the
   mount.

``items()`` then streams what a backup saves: the private area (configuration,
scripts; not the images, descriptor, lock or statfs files), then the container
filesystem from the mount, each directory after its contents. ``close()``
unmounts, merges the snapshot back, removes the state file and releases the
locks. A crashed session's leftovers are found by the next session of the same
container (step 3) and by :func:`cleanup_container`.

The state file's ``phase`` says how far a session got: ``snapshot`` (written
before the snapshot is taken) or ``merge`` (written before the merge starts,
with the delta being merged, ``merging``). A merge killed midway is finished
by the next cleanup: libploop's offline merge leaves the snapshot's delta
marked in use, which every later merge refuses, so the mark is cleared first
(:func:`vz7native.image.clear_in_use`; never while a ploop device runs the
disk); a merge killed after the descriptor was written leaves the merged
delta's file, which is removed. A merge that fails keeps the state file, so
the next session tries again.

A *detached* session (``detached=True``, for ``vz7ploop ct-mount-snapshot``:
a view for rsync, restic or borg that outlives the process that made it)
always reads a snapshot, even of a stopped container (so the view stays
consistent when the container is started meanwhile), mounts it with the
portable backend's persistent mount at a directory of the caller's choice and
records the mount in the state file. :meth:`BackupSession.detach` then
releases the locks and leaves the view in place; :func:`close_view`, from any
process, takes it down under the same locks. While the view's mount lives, the
next session of the container refuses to start (:class:`ViewInUse`); once its
mount is gone (killed helper, reboot), the view is a leftover that step 3,
:func:`cleanup_container` and :func:`cleanup_leftovers` remove.

Nothing here imports Bareos or ctypes-based modules: the Bareos plugin runs it
inside the file daemon.
"""
import contextlib
import errno
import json
import os
import time

from vz7native import mount, ploop, procfs
from vz7native.host import (RUNNING, STOPPED, BlockerError, HostError, LockTimeout,
                            find_blockers)
from vz7native.image import ImageError, clear_in_use, read_descriptor
from vz7native.mount import state as mount_state
from vz7native.paths import show
from vz7native.session import Session
from vz7native.walk import walk

__all__ = ["BackupSession", "BackupError", "ViewInUse", "NoView", "Item", "Timings",
           "cleanup_container", "cleanup_leftovers", "close_view", "STATE_DIR",
           "DEFAULT_MOUNT_BASE"]

DEFAULT_MOUNT_BASE = b"/mnt/bareos"
STATE_DIR = b"/var/lib/vz7native/backup"
STATE_VERSION = 1
# What the private area holds that is no configuration: the disk itself, its lock,
# the statfs cache vzctl keeps for stopped containers.
_PRIVATE_EXCLUDES = ("*.lck", ".statfs")


class BackupError(HostError):
    """A backup of a container cannot start or finish (the message says why)."""


class ViewInUse(BackupError):
    """The container has a detached snapshot view whose mount is still there."""


class NoView(BackupError):
    """The container has no detached snapshot view to take down."""


class Item(object):
    """One thing a backup saves: ``catalog_path`` (bytes, the host path a restore
    sees: under ``/vz/private/<uuid>`` or ``<mount_base>/<uuid>``), ``entry`` (the
    :class:`vz7native.walk.Entry` read from the private area or the mount) and
    ``area`` (``"private"`` or ``"root"``)."""

    __slots__ = ("catalog_path", "entry", "area")

    def __init__(self, catalog_path, entry, area):
        self.catalog_path = catalog_path
        self.entry = entry
        self.area = area

    def __repr__(self):
        return "Item(%r, %r)" % (self.catalog_path, self.entry.type)


class Timings(object):
    """Seconds each fixed step of a session took (None: not done)."""

    __slots__ = ("snapshot", "mount", "umount", "merge")

    def __init__(self):
        self.snapshot = self.mount = self.umount = self.merge = None

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


@contextlib.contextmanager
def _timed(timings, name):
    start = time.monotonic()
    try:
        yield
    finally:
        setattr(timings, name, time.monotonic() - start)


def _state_path(host, ct):
    return host.real(os.path.join(STATE_DIR, (ct.uuid or ct.ctid).encode("ascii") + b".json"))


def _read_state(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise BackupError("cannot read the backup state file %s: %s" % (show(path), e))


def _write_state(path, state):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = path + b".new"
    with open(temporary, "wb") as f:
        f.write(json.dumps(state, sort_keys=True).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.rename(temporary, path)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _started(view):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view.get("started", 0)))


def _live_view_mount(view):
    """The mount record of a detached view while its mount lives, else None.

    Found by its target, not its recorded id: a view killed between mounting
    and recording the id is still known."""
    if not view.get("detached") or not view.get("target"):
        return None
    target = os.fsencode(view["target"])
    for record in mount_state.load_all(mount_state.run_dir()):
        if record.target == target and record.is_live():
            return record
    return None


def cleanup_container(host, ct, mount_target=None):
    """Undo what a crashed backup of ``ct`` left: unmount our mounts of its disk
    (and at ``mount_target``), merge back the snapshot its state file records,
    remove the state file. A detached view whose mount is gone is such a
    leftover too; one whose mount lives raises :class:`ViewInUse`. Call it
    holding the container lock. Returns the list of what was cleaned, as
    sentences (empty: nothing was left)."""
    path = _state_path(host, ct)
    state = _read_state(path)
    if state is not None and _live_view_mount(state) is not None:
        raise ViewInUse("container %s has a snapshot view mounted at %s since %s (by "
                        "vz7ploop ct-mount-snapshot, pid %s): take it down first with "
                        "`vz7ploop ct-umount-snapshot %s`" % (
                            ct.label, state.get("target"), _started(state), state.get("pid"),
                            ct.uuid or ct.ctid))
    cleaned = []
    dd = ct.disk_descriptor
    for leftover in mount.cleanup(dd):
        cleaned.append("removed the read-only mount at %s left by a killed job%s" % (
            show(host.view(os.fsencode(leftover["target"]))),
            "" if not leftover["problems"] else " (problems: %s)" % "; ".join(
                leftover["problems"])))
    if mount_target is not None and _mounted_at(mount_target):
        raise BackupError("%s is still mounted (not by a job of ours that could be cleaned): "
                          "unmount it first" % show(host.view(mount_target)))
    if state is not None:
        guid = state.get("snapshot")
        if guid:
            merged, removed = _merge_back(dd, guid, path, state)
            if merged:
                cleaned.append("merged back the snapshot %s of %s (pid %s, started %s)%s" % (
                    guid, "the snapshot view at %s" % state.get("target")
                    if state.get("detached") else "a job that did not finish",
                    state.get("pid"), _started(state),
                    "; its merge had been interrupted" if state.get("phase") == "merge"
                    else ""))
            if removed:
                cleaned.append("removed %s, which the interrupted merge of the snapshot %s "
                               "had merged already" % (show(host.view(removed)), guid))
        _remove(path)
    return cleaned


def _merge_back(dd, guid, path, state):
    """Merge the snapshot ``guid`` back into the disk ``dd``, recording the
    merge in the state file ``path`` (which says ``state``) first; a merge
    recorded there and killed is finished (see the module docstring).
    Returns (whether a snapshot was merged, the delta file removed or None)."""
    merged = False
    with ploop.Disk.open(dd) as disk:
        snapshots = disk.snapshots
        if any(s.guid == guid for s in snapshots):
            if state.get("phase") == "merge" and disk.device() is None:
                clear_in_use(dd, guid)
            # libploop merges the snapshot's only child into it and removes its file.
            children = [s.guid for s in snapshots if s.parent_guid == guid]
            child = disk.images.get(children[0]) if len(children) == 1 else None
            state = dict(state, phase="merge",
                         merging=None if child is None else os.fsdecode(child))
            _write_state(path, state)
            disk.delete_snapshot(guid)
            merged = True
    return merged, _remove_merged_delta(dd, state.get("merging"))


def _remove_merged_delta(dd, merging):
    """Remove the file ``merging`` if the descriptor no longer names it: a merge
    killed between writing the descriptor and removing the merged delta."""
    if not merging:
        return None
    merging = os.fsencode(merging)
    if not os.path.lexists(merging):
        return None
    named = {os.path.realpath(entry.file) for entry in read_descriptor(dd).images.values()}
    if os.path.realpath(merging) in named:
        return None
    os.unlink(merging)
    return merging


def cleanup_leftovers(host, log=None):
    """:func:`cleanup_container` for every container with a state file whose
    session is gone: a session that holds its container's lock, and a detached
    view whose mount lives, are left alone. Returns ``[(container label or
    state file, sentences)]`` for what was cleaned or could not be."""
    log = log or (lambda text: None)
    done = []
    directory = host.real(STATE_DIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return done
    for name in names:
        if not name.endswith(b".json"):
            continue
        try:
            ct = host.load(os.fsdecode(name[:-5]))
            with host.container_lock(ct, 0, "vz7ploop cleanup"):
                cleaned = cleanup_container(host, ct)
        except ViewInUse as e:
            log(str(e))
            continue
        except LockTimeout as e:
            log("left alone, in use: %s" % e)
            continue
        except (HostError, ploop.PloopError, mount.MountError) as e:
            done.append((show(os.path.join(STATE_DIR, name)), ["cannot clean up: %s" % e]))
            continue
        if cleaned:
            done.append((ct.label, cleaned))
    return done


def close_view(host, name=None, uuid=None, lockfile=None, lock_timeout=3600,
               ct_lock_timeout=10, note="", log=None):
    """Take down the detached view of a container (see the module docstring),
    from any process: under the same locks as a session, unmount it, merge its
    snapshot back, remove its state file. Raises :class:`NoView` when the
    container has none. Returns what was done, as sentences.

    Stops the view's mount helper and dismantles its mount here (pyudev): for
    the command line, not for the file daemon."""
    from vz7native.mount import teardown

    log = log or (lambda text: None)
    ct = host.find(name=name, uuid=uuid)
    with contextlib.ExitStack() as stack:
        if lockfile:
            stack.enter_context(host.lockfile(lockfile, lock_timeout, note))
        stack.enter_context(host.container_lock(ct, ct_lock_timeout, note))
        view = _read_state(_state_path(host, ct))
        if view is None or not view.get("detached"):
            raise NoView("container %s has no snapshot view (vz7ploop ct-mount-snapshot)"
                         % ct.label)
        done = []
        target = view.get("target")
        if target:
            log("unmounting %s" % target)
            stopped = teardown.stop_live(mount_state.run_dir(), target=os.fsencode(target))
            problems = [p for _, found in stopped for p in found]
            if problems:
                raise BackupError("cannot unmount the snapshot view of container %s at %s: %s"
                                  % (ct.label, target, "; ".join(problems)))
            if stopped:
                done.append("unmounted %s" % target)
        done.extend(cleanup_container(host, ct))
        return done


def _mounted_at(target):
    return bool(procfs.mounts_at(target))


class BackupSession(Session):
    """The backup of one container; see the module docstring.

    ``host`` (a :class:`vz7native.host.Host`), ``name`` and ``uuid`` (both
    optional, at least one; given both, they must name the same container),
    ``lockfile`` (host path or None), ``lock_timeout`` (seconds for the
    lockfile), ``ct_lock_timeout`` (seconds for the container lock),
    ``blocker`` (glob inside the container or None), ``excluded_paths`` (paths
    inside the container, ``/`` first or not, glob characters allowed: they and
    everything below them are not saved), ``excludes`` (patterns as
    :func:`vz7native.walk.walk` takes them, relative to the container's root),
    ``mount_base`` (host path), ``backend`` (``auto``, ``kernel``,
    ``portable``), ``note`` (what the locks say about their holder), ``log``
    (``log(text)`` for the steps, e.g. a debug message), ``mount_point`` (a
    path on this machine, an existing directory, to mount at instead of
    ``<mount_base>/<uuid>``), ``detached`` (the view outlives this process:
    see the module docstring; needs ``mount_point`` and the portable backend).
    """

    def __init__(self, host, name=None, uuid=None, lockfile=None, lock_timeout=3600,
                 ct_lock_timeout=10, blocker=None, excluded_paths=(), excludes=(), mount_base=DEFAULT_MOUNT_BASE,
                 backend="auto", note="", log=None, mount_point=None, detached=False):
        if detached:
            if mount_point is None:
                raise ValueError("a detached view needs a mount point")
            if mount.choose_backend("portable" if backend == "auto" else backend) != "portable":
                raise ValueError("a detached view is mounted by the portable backend (a mount "
                                 "that outlives its process), not by %r" % backend)
            backend = "portable"
        self.host = host
        self.name = name
        self.uuid = uuid
        self.lockfile = lockfile
        self.lock_timeout = lock_timeout
        self.ct_lock_timeout = ct_lock_timeout
        self.blocker = blocker
        self.excluded_paths = [os.fsencode(p) for p in excluded_paths]
        self.excludes = list(excludes)
        self.mount_base = os.fsencode(mount_base)
        self.backend = backend
        self.note = note
        self.mount_point = None if mount_point is None else os.fsencode(mount_point)
        self.detached = detached
        self._log = log or (lambda text: None)
        self.ct = None
        self.state = None
        self.snapshot = None
        self.snapshot_time = None
        self.mounted = None
        self.cleaned = []
        self.timings = Timings()
        self.target = None
        super(BackupSession, self).__init__()
        # What makes the view (state file, snapshot, mount): what detach() leaves.
        self._view = contextlib.ExitStack()

    @property
    def catalog_root(self):
        """The host path under which the container's filesystem is catalogued."""
        return os.path.join(self.mount_base, (self.ct.uuid or self.ct.ctid).encode("ascii"))

    def _open(self):
        host = self.host
        ct = self.ct = host.find(name=self.name, uuid=self.uuid)
        dd = ct.disk_descriptor
        self.state = host.status(ct).state
        if self.state not in (RUNNING, STOPPED):
            raise BackupError("container %s is %s: only running and stopped containers are "
                              "backed up (%s)" % (ct.label, self.state, host.status(ct).describe()))
        stack = self._stack
        if self.lockfile:
            self._log("taking %s" % show(os.fsencode(self.lockfile)))
            stack.enter_context(host.lockfile(self.lockfile, self.lock_timeout, self.note))
        self._log("taking the lock of container %s" % ct.label)
        stack.enter_context(host.container_lock(ct, self.ct_lock_timeout, self.note))
        host.check_pcompact(ct)
        self.target = (host.real(self.catalog_root) if self.mount_point is None
                       else os.path.realpath(self.mount_point))
        self.cleaned = cleanup_container(host, ct, self.target)
        for sentence in self.cleaned:
            self._log(sentence)
        if self.state == RUNNING and self.blocker:
            self._check_blockers(ct.root)
        self._view = stack.enter_context(contextlib.ExitStack())
        self.snapshot_time = time.time()
        if self.state == RUNNING or self.detached:
            self._take_snapshot(dd)
        self._mount(dd)
        if self.state == STOPPED and self.blocker:
            self._check_blockers(self.target)

    def _check_blockers(self, root):
        found = find_blockers(root, self.blocker)
        if found:
            raise BlockerError("container %s has blocker files (%s): %s" % (
                self.ct.label, show(os.fsencode(self.blocker)),
                ", ".join(show(p) for p in found[:10]) + (" ..." if len(found) > 10 else "")))

    def _state(self, **more):
        state = {"version": STATE_VERSION, "snapshot": self.snapshot, "pid": os.getpid(),
                 "started": self.snapshot_time, "note": self.note, "phase": "snapshot"}
        if self.detached:
            state.update(detached=True, target=os.fsdecode(self.target))
        state.update(more)
        return state

    def _take_snapshot(self, dd):
        guid = ploop.new_guid()
        path = _state_path(self.host, self.ct)
        _write_state(path, self._state(snapshot=guid))
        self._view.callback(self._merge, dd, guid, path)
        self._log("taking snapshot %s of %s" % (guid, show(dd)))
        with _timed(self.timings, "snapshot"), ploop.Disk.open(dd) as disk:
            disk.create_snapshot(guid)
        self.snapshot = guid

    def _merge(self, dd, guid, path):
        """Merge the snapshot back and remove the state file (kept if the merge
        fails: the next session tries again)."""
        self._log("merging snapshot %s back" % guid)
        with _timed(self.timings, "merge"):
            _merge_back(dd, guid, path, self._state(snapshot=guid))
        _remove(path)

    def _mount(self, dd):
        target = self.target
        if self.mount_point is None:
            # The mount point is ours (also when a crashed job left it): removed when empty.
            os.makedirs(target, mode=0o700, exist_ok=True)
            self._view.callback(_rmdir_quietly, target)
        self._log("mounting %s read-only at %s" % (
            "snapshot %s" % self.snapshot if self.snapshot else "the top", show(target)))
        with _timed(self.timings, "mount"):
            handle = mount.mount_readonly(dd, target, guid=self.snapshot, backend=self.backend,
                                          persistent=self.detached)
        self._view.callback(self._umount, handle)
        self.mounted = handle
        if self.detached:
            _write_state(_state_path(self.host, self.ct), self._state(mount_id=handle.id))

    def _umount(self, handle):
        self._log("unmounting %s" % show(handle.target))
        with _timed(self.timings, "umount"):
            handle.umount()
        self.mounted = None

    def detach(self):
        """Release the locks and leave the view of an open detached session in
        place, for :func:`close_view` to take down later. Returns what the state
        file records of it (a dict: ``target``, ``snapshot``, ``mount_id``, ...)
        with the container's ``name``, ``uuid``, ``state`` and the ``device``."""
        if not self.detached or self.mounted is None:
            raise BackupError("only an open detached session can be detached")
        view = _read_state(_state_path(self.host, self.ct))
        view.update(name=self.ct.name, uuid=self.ct.uuid, state=self.state,
                    device=os.fsdecode(self.mounted.device))
        self._view.pop_all()
        self.mounted = None
        self.close()
        return view

    # -- what is saved ---------------------------------------------------------

    def private_excludes(self):
        """What of the private area is no configuration: the images of the root
        disk, its descriptor and lock, statfs and lock files."""
        ct = self.ct
        dd = ct.disk_descriptor
        excludes = [dd, dd + b".lck"] + list(_PRIVATE_EXCLUDES)
        try:
            descriptor = read_descriptor(dd)
        except ImageError as e:
            raise BackupError("container %s: %s" % (ct.label, e))
        return excludes + [image.file for image in descriptor.images.values()]

    def items(self, on_error):
        """Stream the :class:`Item` objects to save: the private area, then the
        container's filesystem, each directory after its contents.

        ``on_error(catalog_path, exc)`` gets every entry that could not be read
        (the walk goes on without it)."""
        ct = self.ct
        yield from self._area(ct.private, ct.ve_private, "private",
                              self.private_excludes(), False, on_error)
        top = os.path.realpath(self.target)
        excludes = self.excludes + [top + b"/" + p.lstrip(b"/") for p in self.excluded_paths]
        yield from self._area(top, self.catalog_root, "root", excludes, True, on_error)

    def _area(self, top, catalog_top, area, excludes, skip_balloon, on_error):
        top = os.path.realpath(top)
        cut = len(top)

        def report(path, exc):
            on_error(catalog_top + path[cut:], exc)

        for entry in walk(top, excludes=excludes, one_file_system=True,
                          skip_balloon=skip_balloon, on_error=report):
            yield Item(catalog_top + entry.path[cut:], entry, area)

    def record(self):
        """What a restore needs to rebuild this container with no option: a dict."""
        ct = self.ct
        dd = ct.disk_descriptor
        descriptor = read_descriptor(dd)
        with ploop.Disk.open(dd) as disk:
            version = disk.format_version
        # What the filesystem holds, so a restore into another size can say
        # before it starts whether the data fits.
        fs = os.statvfs(self.target)
        return {
            "record": STATE_VERSION, "name": ct.name, "uuid": ct.uuid, "ctid": ct.ctid,
            "ve_private": show(ct.ve_private), "ve_root": show(ct.ve_root),
            "layout": ct.layout_version, "disk_size": descriptor.size,
            "cluster_size": descriptor.cluster_size, "mode": descriptor.mode,
            "format_version": version, "state": self.state, "snapshot": self.snapshot,
            "snapshot_time": self.snapshot_time,
            "catalog_root": show(self.catalog_root), "private": show(ct.ve_private),
            "disk_image": show(os.path.relpath(ct.base_image, ct.private)),
            "used_bytes": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            "used_inodes": fs.f_files - fs.f_ffree,
        }


def _rmdir_quietly(path):
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise
