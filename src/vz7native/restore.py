"""Restores: a whole container rebuilt on this host, or files put back into a
running container.

    >>> from vz7native.host import Host
    >>> from vz7native.restore import ContainerRestore, FilesRestore
    >>> with ContainerRestore(Host(b"/"), record, disk_size=250 << 30) as ct:
    ...     placed = ct.writer("root").place(b"etc/hosts", 0o100644)
    ...     ...                                     # data, then set_attributes
    ...     problems = ct.finish()                  # image, registration

``record`` is what :meth:`vz7native.backup.BackupSession.record` wrote at
backup time (name, UUID, paths, disk size and format, space in use).

:class:`ContainerRestore` (restore=ct), in this order:

1. the new container's identity: the record's, or a new name and/or UUID (its
   private area and root paths follow the UUID);
2. the per-container lock of that UUID; the leftovers of an interrupted restore
   of it are removed (and reported in :attr:`~ContainerRestore.cleaned`);
3. refusals, before anything is created: a container with that name or UUID
   exists, its private area or root directory exists and is not empty;
4. a staging directory beside the private area (``.vz7native-restore-<UUID>``)
   with a state file, the private area being restored, and a fresh disk of the
   size asked for, mounted read-write: with the ploop driver an image made by
   libploop, without it (and as the fallback) a new ploop image holding a GPT +
   ext4 disk, mounted through a loop device on its delta file
   (:func:`vz7native.image.new_ct_image`: the data is written once, in place).
   If the backup's data does not fit the new filesystem, the staging directory
   is removed and the restore refused (saying how much is needed);
5. the caller writes the private area and the filesystem through the two
   :class:`~vz7native.treewrite.TreeWriter` objects;
6. :meth:`~ContainerRestore.finish`: directory times and inode flags, unmount,
   the image sealed (:meth:`vz7native.image.InPlaceImage.seal`) and checked,
   ``ve.conf`` rewritten for a new name, UUID or size, the private area renamed
   into place (one ``rename``), the root directory made, the
   container registered (``prlctl register``, left stopped), the staging
   directory removed.

Whatever fails, :meth:`~ContainerRestore.close` takes everything down again: the
mount, the staging directory, a private area already moved whose registration
failed. A killed restore leaves only its staging directory (and perhaps its
mount): the next restore of that UUID removes them first.

:class:`FilesRestore` (restore=files) finds, for each rewritten path, the running
container whose root it lands in and writes there through a
:class:`~vz7native.treewrite.TreeWriter` (nothing is ever followed, nothing is
written outside that root).

Nothing here imports Bareos or ctypes-based modules.
"""
import contextlib
import json
import os
import shutil
import subprocess
import time

from vz7native import image, procfs
from vz7native.host import RUNNING, HostError, register_container
from vz7native.host.conf import normalize_uuid
from vz7native.host.containers import conf_path
from vz7native.image.ctdisk import FILL_OPTIONS, MIN_DISK_SIZE
from vz7native.paths import PLOOP_MINOR, show
from vz7native.session import Session
from vz7native.treewrite import TreeWriter

__all__ = ["ContainerRestore", "FilesRestore", "RestoreError", "RestoreRefused", "OutsideContainers",
           "STAGING_PREFIX", "describe_size"]

STAGING_PREFIX = b".vz7native-restore-"
STATE_NAME = b"state.json"
STATE_VERSION = 1
MOUNT_NAME = b"mnt"
PRIVATE_NAME = b"private"
_GIB = 1 << 30


class RestoreError(HostError):
    """A restore cannot go on (the message says why)."""


class RestoreRefused(RestoreError):
    """A restore refused before anything was created."""


class OutsideContainers(RestoreRefused):
    """A restore=files path that lands in no running container's root."""


def describe_size(size):
    """Bytes for people: ``250 GiB``, ``1.5 GiB``, ``512 MiB``."""
    for unit, name in ((1 << 40, "TiB"), (_GIB, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            value = size / float(unit)
            return ("%d %s" if value == int(value) else "%.1f %s") % (value, name)
    return "%d bytes" % size


def _round_up(value, unit):
    return -(-value // unit) * unit


def _run(argv, what):
    proc = subprocess.run([os.fsencode(a) for a in argv], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RestoreError("cannot %s: %s" % (what, proc.stdout.decode("utf-8", "replace")
                                              .strip() or "exit code %d" % proc.returncode))


def _mounts_under(path):
    """Mount points at or below ``path`` (real path), deepest first."""
    real = os.path.realpath(path)
    return sorted({m.mount_point for m in procfs.mounts()
                   if m.mount_point == real or m.mount_point.startswith(real + b"/")},
                  key=len, reverse=True)


def _remove_tree(path):
    """``rm -rf path``, never into a mount (anything mounted below is unmounted first)."""
    for point in _mounts_under(path):
        _run(["umount", point], "unmount %s" % show(point))
    if os.path.lexists(path):
        _clear_flags(path)
        shutil.rmtree(path)


def _clear_flags(path):
    """Immutable and append-only entries cannot be removed: clear them first."""
    from vz7native.inodeflags import read_flags, write_flags
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(top, name)
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if read_flags(fd) > 0:
                    write_flags(fd, 0)
            except OSError:
                pass
            finally:
                os.close(fd)


def _replace_ident(path, old, new):
    """``path`` (bytes) with the component ``old`` replaced by ``new``."""
    parts = path.split(b"/")
    return b"/".join(new if part == old else part for part in parts)


class ContainerRestore(Session):
    """One container rebuilt from a backup; see the module docstring.

    ``host`` a :class:`vz7native.host.Host`; ``record`` the backup's record (a
    dict); ``name``/``uuid`` a new name and UUID (None: the record's);
    ``disk_size`` bytes (None: the size at backup time); ``register_timeout``
    seconds for ``prlctl register``; ``backend`` ``"auto"``, ``"kernel"`` (the
    ploop driver) or ``"portable"`` (the image's delta file on a loop device,
    then sealed); ``lock_timeout`` seconds for the per-container lock; ``note``
    what the lock says about its holder; ``log(text)`` for the steps;
    ``register(private, timeout, ctid)`` registers (default
    :func:`vz7native.host.register_container`).
    """

    AREAS = ("private", "root")

    def __init__(self, host, record, name=None, uuid=None, disk_size=None, register_timeout=120,
                 backend="auto", lock_timeout=10, note="", log=None, register=None):
        self.host = host
        self.record = record
        self.new_name = name
        self.new_uuid = uuid
        self.asked_size = disk_size
        self.register_timeout = register_timeout
        if backend not in ("auto", "kernel", "portable"):
            raise ValueError("backend must be auto, kernel or portable, not %r" % (backend,))
        self.backend = backend
        self.lock_timeout = lock_timeout
        self.note = note
        self._log = log or (lambda text: None)
        self._register = register or register_container
        self.name = self.uuid = None
        self.ve_private = self.ve_root = None
        self.disk_size = None
        self.cleaned = []
        self.timings = {}
        self.staging = None
        self.mounted = None
        self._disk = None
        self._image = None
        self.writers = {}
        self.finished = False
        self._moved = False
        self._made_root = False
        super(ContainerRestore, self).__init__()

    @property
    def label(self):
        return "%r (%s)" % (self.name, self.uuid) if self.name else str(self.uuid)

    # -- opening ---------------------------------------------------------------------

    def _open(self):
        self._identity()
        host = self.host
        self._stack.enter_context(host.ident_lock(self.uuid, self.lock_timeout, self.note,
                                                  self.label))
        self.staging = os.path.join(host.real(os.path.dirname(self.ve_private)),
                                    STAGING_PREFIX + self.uuid.encode("ascii"))
        self.cleaned = self._remove_leftovers()
        self._refuse()
        self._stage()
        self._make_disk()
        self._check_fit()
        private = os.path.join(self.staging, PRIVATE_NAME)
        self.writers = {"private": TreeWriter(private, one_file_system=False),
                        "root": TreeWriter(os.path.join(self.staging, MOUNT_NAME))}

    def _identity(self):
        record = self.record
        old_uuid = record.get("uuid") or record.get("ctid")
        if not old_uuid:
            raise RestoreRefused("the backup's container record names no UUID")
        uuid = old_uuid
        if self.new_uuid is not None:
            uuid = normalize_uuid(self.new_uuid)
            if uuid is None:
                raise RestoreRefused("new_uuid=%s is not a UUID" % self.new_uuid)
        self.uuid = uuid
        self.name = self.new_name if self.new_name is not None else record.get("name")
        if self.name is not None and (not self.name or "/" in self.name
                                      or self.name in (".", "..")):
            raise RestoreRefused("new_name=%s is not a container name" % self.name)
        old, new = old_uuid.encode("ascii"), uuid.encode("ascii")
        ve_private = os.fsencode(record.get("ve_private") or "/vz/private/" + old_uuid)
        ve_root = os.fsencode(record.get("ve_root") or "/vz/root/" + old_uuid)
        if uuid != old_uuid:
            ve_private = _replace_ident(ve_private, old, new)
            ve_root = _replace_ident(ve_root, old, new)
            if new not in ve_private.split(b"/"):
                ve_private = os.path.join(os.path.dirname(ve_private), new)
            if new not in ve_root.split(b"/"):
                ve_root = os.path.join(os.path.dirname(ve_root), new)
        self.ve_private, self.ve_root = ve_private, ve_root
        cluster = record.get("cluster_size") or image.DEFAULT_CLUSTER_SIZE
        size = self.asked_size if self.asked_size is not None else record.get("disk_size")
        if not size:
            raise RestoreRefused("the backup's record has no disk size: give diskspace=")
        self.disk_size = _round_up(max(size, MIN_DISK_SIZE), cluster)

    def _refuse(self):
        host = self.host
        cts, _ = host.containers()
        for ct in cts:
            if self.name is not None and ct.name == self.name:
                raise RestoreRefused(
                    "a container named %r exists on this host (uuid %s): restore with "
                    "new_name= (and new_uuid=) to restore beside it" % (self.name, ct.uuid))
            if ct.uuid == self.uuid or ct.ctid == self.uuid:
                raise RestoreRefused(
                    "a container with uuid %s exists on this host (%s): restore with "
                    "new_uuid= (and new_name=) to restore beside it" % (self.uuid, ct.label))
        for what, path in (("private area", self.ve_private), ("root directory", self.ve_root)):
            real = host.real(path)
            if os.path.lexists(real) and (not os.path.isdir(real) or os.listdir(real)):
                raise RestoreRefused("the %s %s of container %s exists and is not empty"
                                     % (what, show(path), self.label))

    def _remove_leftovers(self):
        """Remove what an interrupted restore of this UUID left; sentences saying what."""
        staging = self.staging
        if not os.path.lexists(staging):
            return []
        state = {}
        try:
            with open(os.path.join(staging, STATE_NAME), "rb") as f:
                state = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            pass
        what = ["its staging directory %s" % show(self.host.view(staging))]
        dd = state.get("dd")
        if state.get("backend") == "kernel" and dd and os.path.exists(dd):
            from vz7native import ploop
            with ploop.Disk.open(dd) as disk:
                if disk.is_mounted():
                    disk.umount()
                    what.append("the mount of its disk")
        for point in _mounts_under(staging):
            _run(["umount", point], "unmount %s" % show(point))
            what.append("the mount at %s" % show(self.host.view(point)))
        if state.get("moved"):
            private = self.host.real(os.fsencode(state["moved"]))
            registered = os.path.lexists(self.host.real(conf_path(self.uuid)))
            if not registered and os.path.lexists(private):
                _remove_tree(private)
                what.append("the unregistered private area %s" % show(state["moved"]))
        _remove_tree(staging)
        started = state.get("started")
        return ["removed what an interrupted restore of container %s left (pid %s, started %s): %s"
                % (self.label, state.get("pid", "?"), time.strftime(
                    "%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?",
                   ", ".join(what))]

    def _save_state(self, **changes):
        self._state.update(changes)
        path = os.path.join(self.staging, STATE_NAME)
        with open(path + b".new", "wb") as f:
            f.write(json.dumps(self._state, sort_keys=True).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + b".new", path)

    def _stage(self):
        staging = self.staging
        os.mkdir(staging, 0o700)
        self._stack.callback(self._abort)
        self._state = {"version": STATE_VERSION, "pid": os.getpid(), "started": time.time(),
                       "uuid": self.uuid, "name": self.name, "note": self.note}
        self._save_state()
        os.mkdir(os.path.join(staging, PRIVATE_NAME), 0o700)
        os.mkdir(os.path.join(staging, MOUNT_NAME), 0o700)

    def _disk_dir(self):
        disk_image = os.fsencode(self.record.get("disk_image") or "root.hdd/root.hds")
        return (os.path.join(self.staging, PRIVATE_NAME, os.path.dirname(disk_image)),
                os.path.basename(disk_image))

    def _chosen_backend(self):
        if self.backend == "auto":
            return "kernel" if os.path.exists(PLOOP_MINOR) else "portable"
        return self.backend

    def _make_disk(self):
        started = time.monotonic()
        record = self.record
        cluster = record.get("cluster_size") or image.DEFAULT_CLUSTER_SIZE
        target = os.path.join(self.staging, MOUNT_NAME)
        backend = self._chosen_backend()
        self._log("making a %s disk (%s) for container %s" % (
            describe_size(self.disk_size), backend, self.label))
        disk_dir, image_name = self._disk_dir()
        os.makedirs(disk_dir, 0o700, exist_ok=True)
        if backend == "kernel":
            from vz7native import ploop
            dd = ploop.create_image(os.path.join(disk_dir, image_name), self.disk_size,
                                    fstype="ext4", version=record.get("format_version"),
                                    cluster_size=cluster)
            self._save_state(backend="kernel", dd=show(dd))
            disk = ploop.Disk.open(dd)
            try:
                self.mounted = disk.mount(target)
            except BaseException:
                disk.close()
                raise
            self._disk = disk
        else:
            self._save_state(backend="portable")
            self._image, partition = image.new_ct_image(
                self.disk_size, disk_dir, version=record.get("format_version") or 1,
                cluster_size=cluster, image_name=image_name)
            _run(["mount", "-t", "ext4", "-o", "loop,offset=%d,sizelimit=%d,%s" % (
                self._image.data_offset + partition.offset, partition.size, FILL_OPTIONS),
                self._image.path, target], "mount the new disk of container %s" % self.label)
            self.mounted = target
        self.timings["disk"] = time.monotonic() - started

    def _check_fit(self):
        used = self.record.get("used_bytes")
        inodes = self.record.get("used_inodes")
        fs = os.statvfs(os.path.join(self.staging, MOUNT_NAME))
        free = fs.f_bfree * fs.f_frsize
        if used is not None and used > free:
            overhead = self.disk_size - free
            needed = _round_up(used + overhead, _GIB)
            raise RestoreRefused(
                "the data of container %s does not fit a disk of %s: it used %s at backup "
                "time, a new disk of %s has %s free; give diskspace=%dG or more"
                % (self.label, describe_size(self.disk_size), describe_size(used),
                   describe_size(self.disk_size), describe_size(free), needed // _GIB))
        if inodes is not None and inodes > fs.f_ffree:
            raise RestoreRefused(
                "the %d files of container %s do not fit a disk of %s (%d inodes): give a "
                "larger diskspace=" % (inodes, self.label, describe_size(self.disk_size),
                                       fs.f_ffree))

    def writer(self, area):
        """The TreeWriter of ``area``: ``"private"`` or ``"root"`` (the filesystem)."""
        return self.writers[area]

    # -- finishing ------------------------------------------------------------------------

    def finish(self):
        """Build the container from what was written; returns ``[(area, path,
        message)]`` of attributes that could not be set (the restore is done)."""
        problems = []
        root = self.writers["root"]
        problems += [("root", p, m) for p, m in root.finish()]
        root.close()
        started = time.monotonic()
        self._umount()
        self.timings["umount"] = time.monotonic() - started
        disk_dir, image_name = self._disk_dir()
        if self._image is not None:
            started = time.monotonic()
            self._log("sealing the ploop image in %s" % show(disk_dir))
            self._image.seal()
            self.timings["seal"] = time.monotonic() - started
        report = image.verify(disk_dir)
        if not report.ok:
            raise RestoreError("the new disk of container %s fails its check: %s"
                               % (self.label, "; ".join(report.problems)))
        self._rewrite_config()
        private_writer = self.writers["private"]
        problems += [("private", p, m) for p, m in private_writer.finish()]
        private_writer.close()
        self._move_into_place()
        started = time.monotonic()
        self._log("registering container %s" % self.label)
        self._register(self.ve_private, self.register_timeout, ctid=self.uuid)
        self.timings["register"] = time.monotonic() - started
        self.finished = True
        self._stack.close()
        _remove_tree(self.staging)
        return problems

    def _umount(self):
        mounted, self.mounted = self.mounted, None
        if mounted is None:
            return
        if isinstance(mounted, bytes):
            # umount writes the filesystem back into the image file; seal()
            # makes that durable (a global sync would flush the whole host).
            _run(["umount", mounted], "unmount %s" % show(mounted))
        else:
            try:
                mounted.umount()
            finally:
                self._disk.close()

    def _rewrite_config(self):
        """``ve.conf`` for the new name, UUID and disk size (content rewritten in
        place: owner, mode and xattrs stay)."""
        path = os.path.join(self.staging, PRIVATE_NAME, b"ve.conf")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RestoreError("the restore brought no ve.conf for container %s (restore its "
                               "private area too)" % self.label)
        try:
            text = b""
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                text += chunk
            new = self._config_text(text)
            if new != text:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                view = memoryview(new)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _config_text(self, text):
        record = self.record
        old = (record.get("uuid") or record.get("ctid") or "").encode("ascii")
        new = self.uuid.encode("ascii")
        size_changed = self.disk_size != record.get("disk_size")
        out = []
        for line in text.split(b"\n"):
            key = line.split(b"=", 1)[0].strip()
            if key == b"NAME" and self.name is not None and self.name != record.get("name"):
                line = b'NAME="%s"' % self.name.encode("utf-8")
            elif key == b"DISKSPACE" and size_changed:
                line = b'DISKSPACE="%d:%d"' % (self.disk_size // 1024, self.disk_size // 1024)
            elif key in (b"VEID", b"UUID", b"VE_PRIVATE", b"VE_ROOT") and old and old != new:
                line = line.replace(old, new)
            out.append(line)
        return b"\n".join(out)

    def _move_into_place(self):
        host = self.host
        private = host.real(self.ve_private)
        root = host.real(self.ve_root)
        os.makedirs(os.path.dirname(private), 0o755, exist_ok=True)
        if os.path.lexists(private):
            if os.listdir(private):
                raise RestoreError("the private area %s appeared during the restore"
                                   % show(self.ve_private))
            os.rmdir(private)
        self._save_state(moved=show(self.ve_private))
        os.rename(os.path.join(self.staging, PRIVATE_NAME), private)
        self._moved = True
        if not os.path.isdir(root):
            os.makedirs(root, 0o755)
            self._made_root = True

    # -- closing ----------------------------------------------------------------------------

    def _abort(self):
        """Take down what an unfinished restore made (registered by _stage)."""
        if self.finished:
            return
        for writer in self.writers.values():
            writer.close()
        try:
            self._umount()
        finally:
            if self._moved:
                _remove_tree(self.host.real(self.ve_private))
                if self._made_root:
                    with contextlib.suppress(OSError):
                        os.rmdir(self.host.real(self.ve_root))
            _remove_tree(self.staging)


class FilesRestore(object):
    """Files put back into running containers; see the module docstring.

    ``host``; ``replace`` one of :data:`vz7native.treewrite.REPLACE_POLICIES`;
    ``name``/``uuid``: when given, the container the files must land in.
    """

    def __init__(self, host, replace="always", name=None, uuid=None):
        self.host = host
        self.replace = replace
        self.name = name
        self.uuid = normalize_uuid(uuid) if uuid else None
        if uuid and self.uuid is None:
            raise RestoreRefused("uuid=%s is not a UUID" % uuid)
        self._running = None
        self.writers = {}           # uuid -> (container, TreeWriter)

    def _running_containers(self):
        if self._running is None:
            cts, _ = self.host.containers()
            self._running = [ct for ct in cts if self.host.status(ct).state == RUNNING]
        return self._running

    def target(self, path):
        """(container, TreeWriter, relative path) for the host path ``path``
        (bytes) a restored entry was rewritten to; RestoreRefused when it lands in
        no running container's root, or in another one than name/uuid asked."""
        path = os.path.normpath(path)
        for ct in self._running_containers():
            root = ct.ve_root.rstrip(b"/")
            if path == root or path.startswith(root + b"/"):
                break
        else:
            running = ", ".join("%s at %s" % (ct.label, show(ct.ve_root))
                                for ct in self._running_containers()) or "none"
            raise OutsideContainers("%s lands in no running container's root (running: %s)"
                                 % (show(path), running))
        if (self.name is not None and ct.name != self.name) or (
                self.uuid is not None and ct.uuid != self.uuid):
            asked = " and ".join(p for p in (
                "name %r" % self.name if self.name is not None else None,
                "uuid %s" % self.uuid if self.uuid is not None else None) if p)
            raise RestoreRefused("the options give %s, but %s lands in the root of container %s"
                                 % (asked, show(path), ct.label))
        entry = self.writers.get(ct.uuid or ct.ctid)
        if entry is None:
            entry = (ct, TreeWriter(ct.root, replace=self.replace))
            self.writers[ct.uuid or ct.ctid] = entry
        return ct, entry[1], path[len(root) + 1:]

    def finish(self):
        """Directory times and inode flags: ``[(container, path, message)]`` not set."""
        problems = []
        for ct, writer in self.writers.values():
            problems += [(ct, p, m) for p, m in writer.finish()]
        return problems

    def close(self):
        for _, writer in self.writers.values():
            writer.close()
        self.writers = {}

