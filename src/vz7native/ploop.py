"""libploop, in-process: disks, snapshots, kernel mounts and typed errors.

    >>> from vz7native import ploop
    >>> dd = ploop.create_image("/vz/test/root.hds", 10 << 30)
    >>> with ploop.Disk.open(dd) as disk:
    ...     guid = disk.create_snapshot()
    ...     [s.guid for s in disk.snapshots]
    ...     disk.delete_snapshot(guid)

Paths are accepted as ``str`` or ``bytes`` and returned as ``bytes``. GUIDs are
``str`` in libploop's ``{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`` form. Sizes are
bytes. Every failure raises a :class:`PloopError` subclass carrying the SYSEXIT
code, its name, libploop's own message for this call, the function and the path.

Hazards of libploop handled here, once:

* Debian's 1.15 copies 4077 bytes from path arguments whatever their length:
  every path goes to libploop in a buffer of at least 4096 bytes.
* The last-error text is per thread and survives successful calls: it is
  emptied before each call and read right after it, on the same thread.
* ``ploop_set_component_name(di, NULL)`` crashes: each component name gets a
  handle of its own, opened once and never renamed.
* libploop's settings (log level, log file) and some of its work (device setup,
  lock waits that replace a signal handler on 7.x) are process-wide, shared by
  every Bareos job in the file daemon: calls that take libploop's locks or touch
  devices are serialised by one C-level mutex shared by all sub-interpreters;
  lock-free lookups run freely. cffi releases the GIL during every call.
* cffi does not keep memory alive through a pointer stored in a struct: every
  buffer a call uses is held by a local variable until the call returns.
* The module is loaded once per Bareos job in a fresh sub-interpreter: nothing
  is kept on ``ffi``/``lib``, functions are reached as ``lib.name``.
* libploop 7.x drives device-mapper (``create_image`` with a filesystem,
  mounts), and libdevmapper prints to stderr (in the file daemon: the daemon's)
  unless a log function is registered; libploop registers none. The binding
  registers one in the libdevmapper libploop uses (a process-wide setting of
  that library): warnings and errors are kept per thread and put into the
  failing call's error as ``devmapper``, the rest is dropped.

What 7.0.x does that 1.15 does not, and no setting of libploop changes:

* It rewrites v1 deltas as v2 before it sets up a device for a read-write
  mount of the top without a component name, whether the mount then works or
  not: :meth:`Disk.mount` (read-write, no ``component``), :meth:`Disk.resize`
  and :meth:`Disk.filesystem_info` (both mount the disk when it is not).
  Read-only mounts, mounts with a component name, snapshots and the lookups
  leave the format alone.
"""
import collections
import contextlib
import logging
import os
import re
import threading

from vz7native import _check_build
from vz7native._ploop import ffi, lib
from vz7native.paths import DESCRIPTOR_NAME, PLOOP_MINOR, descriptor_path, fspath

SECTOR_SIZE = 512
PATH_BUFFER_SIZE = 4096
GUID_BUFFER_SIZE = 64
# libploop gives the live top delta this fixed GUID; a fresh image's base has it too.
TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
NULL_GUID = "{00000000-0000-0000-0000-000000000000}"

MODES = {"expanded": lib.PLOOP_EXPANDED_MODE,
         "preallocated": lib.PLOOP_EXPANDED_PREALLOCATED_MODE,
         "raw": lib.PLOOP_RAW_MODE}
_MODE_NAMES = {v: k for k, v in MODES.items()}

_GUID_RE = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")

_log = logging.getLogger(__name__)
# libploop 1.15 prefixes its messages with where they were raised.
_LOCATION_PREFIX = re.compile(r"^Error in \S+ \([^)]*\): ")


_check_build("vz7native._ploop", ffi, lib)
# libploop prints to the console by default on 1.15; never inside a daemon.
lib.ploop_set_verbose_level(lib.PLOOP_LOG_NOCONSOLE)
# Nor libdevmapper (7.x): its messages go into the error of the call instead.
lib.vz7n_capture_devmapper(lib.vz7n_library_path())


def build_info():
    """What the compiled module was built against (see ``vz7native.build_info``)."""
    def text(value):
        return ffi.string(value).decode("utf-8", "replace")

    return {
        "package_version": text(lib.VZ7N_PACKAGE_VERSION),
        "header": text(lib.VZ7N_HEADER_PATH),
        "flavor": text(lib.VZ7N_HEADER_FLAVOR),
        "header_version": text(lib.VZ7N_HEADER_VERSION),
        "library_dir": text(lib.VZ7N_LIBRARY_DIR),
        "linked_library": text(lib.VZ7N_LINKED_LIBRARY),
        "libploop_version": text(lib.VZ7N_LIBPLOOP_VERSION),
        "library": text(lib.vz7n_library_path()),
        "read_dd": bool(lib.VZ7N_HAVE_READ_DD),
        "fslabel": bool(lib.VZ7N_HAVE_FSLABEL),
        "cbt": bool(lib.VZ7N_HAVE_CBT),
        "get_part": bool(lib.VZ7N_HAVE_GET_PART),
    }


# ----------------------------------------------------------------------------
# Errors

class PloopError(Exception):
    """A libploop call failed.

    Attributes: ``code`` (the SYSEXIT number, or what the call returned),
    ``name`` (``"SYSEXIT_..."``), ``message`` (libploop's text for this call, may
    be empty), ``func`` (the libploop function or our method), ``path`` (the
    image or descriptor concerned, ``bytes`` or None) and ``devmapper`` (what
    libdevmapper reported during the call, one message a line; 7.x only).
    """

    sysexit = None

    def __init__(self, code, name, message, func, path=None, devmapper=""):
        super(PloopError, self).__init__(code, name, message, func, path, devmapper)
        self.code = code
        self.name = name
        self.message = message
        self.func = func
        self.path = path
        self.devmapper = devmapper

    def _text(self, message):
        text = message or "no message from libploop"
        if self.devmapper:
            text += " [device-mapper: %s]" % "; ".join(self.devmapper.splitlines())
        return text

    @property
    def detail(self):
        """The message without 1.15's "Error in func (file.c:NN): " prefix
        (and libdevmapper's, if any, after it)."""
        return self._text(_LOCATION_PREFIX.sub("", self.message))

    def __str__(self):
        where = self.func
        if self.path is not None:
            where += "(%s)" % os.fsdecode(self.path)
        return "%s: %s (%s)" % (where, self._text(self.message), self.name)


class CreateError(PloopError):
    """A file could not be created."""
    sysexit = "SYSEXIT_CREAT"


class DeviceError(PloopError):
    """No ploop device could be had (is the ploop kernel driver loaded?)."""
    sysexit = "SYSEXIT_DEVICE"


class DeviceIoctlError(PloopError):
    """A ploop device ioctl failed."""
    sysexit = "SYSEXIT_DEVIOC"


class OpenError(PloopError):
    """A file could not be opened."""
    sysexit = "SYSEXIT_OPEN"


class OutOfMemoryError(PloopError):
    sysexit = "SYSEXIT_MALLOC"


class ReadError(PloopError):
    sysexit = "SYSEXIT_READ"


class WriteError(PloopError):
    sysexit = "SYSEXIT_WRITE"


class SysfsError(PloopError):
    sysexit = "SYSEXIT_SYSFS"


class FormatError(PloopError):
    """An image is not in a format libploop accepts."""
    sysexit = "SYSEXIT_PLOOPFMT"


class SystemCallError(PloopError):
    sysexit = "SYSEXIT_SYS"


class ProtocolError(PloopError):
    sysexit = "SYSEXIT_PROTOCOL"


class LoopError(PloopError):
    sysexit = "SYSEXIT_LOOP"


class FstatError(PloopError):
    sysexit = "SYSEXIT_FSTAT"


class FsyncError(PloopError):
    sysexit = "SYSEXIT_FSYNC"


class BusyError(PloopError):
    """The image or device is busy."""
    sysexit = "SYSEXIT_EBUSY"


class FlockError(PloopError):
    sysexit = "SYSEXIT_FLOCK"


class FtruncateError(PloopError):
    sysexit = "SYSEXIT_FTRUNCATE"


class FallocateError(PloopError):
    sysexit = "SYSEXIT_FALLOCATE"


class MountError(PloopError):
    sysexit = "SYSEXIT_MOUNT"


class UmountError(PloopError):
    sysexit = "SYSEXIT_UMOUNT"


class LockError(PloopError):
    """libploop could not take the descriptor's or its global lock."""
    sysexit = "SYSEXIT_LOCK"


class MkfsError(PloopError):
    sysexit = "SYSEXIT_MKFS"


class ResizeFsError(PloopError):
    sysexit = "SYSEXIT_RESIZE_FS"


class MkdirError(PloopError):
    sysexit = "SYSEXIT_MKDIR"


class RenameError(PloopError):
    sysexit = "SYSEXIT_RENAME"


class AbortedError(PloopError):
    """The operation was cancelled."""
    sysexit = "SYSEXIT_ABORT"


class RelocationError(PloopError):
    sysexit = "SYSEXIT_RELOC"


class ChangeGptError(PloopError):
    sysexit = "SYSEXIT_CHANGE_GPT"


class UnlinkError(PloopError):
    sysexit = "SYSEXIT_UNLINK"


class MknodError(PloopError):
    sysexit = "SYSEXIT_MKNOD"


class InUseError(PloopError):
    """The image carries the in-use flag."""
    sysexit = "SYSEXIT_PLOOPINUSE"


class ParamError(PloopError, ValueError):
    """An argument was refused."""
    sysexit = "SYSEXIT_PARAM"


class DiskDescriptorError(PloopError):
    """DiskDescriptor.xml is missing or malformed."""
    sysexit = "SYSEXIT_DISKDESCR"


class DeviceNotMountedError(PloopError):
    """The image is not mounted."""
    sysexit = "SYSEXIT_DEV_NOT_MOUNTED"


class FsckError(PloopError):
    sysexit = "SYSEXIT_FSCK"


class NoSnapshotError(PloopError, LookupError):
    """No snapshot has the given GUID."""
    sysexit = "SYSEXIT_NOSNAP"


class NoCbtError(PloopError):
    """(libploop 7.x) no changed-block-tracking bitmap."""
    sysexit = "SYSEXIT_NOCBT"


class CryptError(PloopError):
    """(libploop 7.x) an encryption operation failed."""
    sysexit = "SYSEXIT_CRYPT"


class UmountBusyError(PloopError):
    """(libploop 7.x) the filesystem is busy and cannot be unmounted."""
    sysexit = "SYSEXIT_UMOUNT_BUSY"


def _error_classes():
    """{code: (name, class)} for every SYSEXIT code this libploop declares."""
    classes = {cls.sysexit: cls for cls in PloopError.__subclasses__()}
    table = {}
    for name in dir(lib):
        if name.startswith("SYSEXIT_"):
            table[getattr(lib, name)] = (name, classes.get(name, PloopError))
    return table


_ERRORS = _error_classes()


def sysexit_name(code):
    """``"SYSEXIT_NOSNAP"`` for 43, ``"rc=<code>"`` for what is no SYSEXIT code."""
    return _ERRORS[code][0] if code in _ERRORS else "rc=%d" % code


def error_for(code, func, message="", path=None, devmapper=""):
    """Build the PloopError subclass that matches ``code``."""
    name, cls = _ERRORS.get(code, ("rc=%d" % code, PloopError))
    return cls(code, name, message, func, path, devmapper)


def _param_error(func, message, path=None):
    return error_for(lib.SYSEXIT_PARAM, func, message, path)


class _Mutex(object):
    """The process-wide libploop mutex (or none) as a context manager."""

    def __init__(self, serial):
        self.serial = serial

    def __enter__(self):
        if self.serial:
            lib.vz7n_serial_lock()

    def __exit__(self, *exc):
        if self.serial:
            lib.vz7n_serial_unlock()


_SERIALISED, _FREE = _Mutex(True), _Mutex(False)


def _call(func, *args, **kw):
    """Call ``lib.<func>``; raise the matching PloopError unless it returns 0.

    Keywords: ``path`` for the error, ``ok`` (return codes that are not errors),
    ``serial`` (False for lock-free lookups).
    """
    path = kw.pop("path", None)
    ok = kw.pop("ok", (0,))
    fn = getattr(lib, func)
    with _SERIALISED if kw.pop("serial", True) else _FREE:
        lib.vz7n_clear_messages()
        rc = fn(*args)
        if rc not in ok:
            message = ffi.string(lib.ploop_get_last_error())
            devmapper = ffi.string(lib.vz7n_devmapper_text())
    if rc in ok:
        return rc
    text = message.decode("utf-8", "replace")
    _log.debug("%s failed with %s: %s", func, sysexit_name(rc), text)
    raise error_for(rc, func, text, path, devmapper.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------
# Small conversions

def _path_buffer(path):
    """A NUL-terminated copy of ``path`` in at least PATH_BUFFER_SIZE bytes."""
    data = fspath(path)
    buf = ffi.new("char[]", max(PATH_BUFFER_SIZE, len(data) + 1))
    ffi.memmove(buf, data, len(data))
    return buf


def normalize_guid(guid, func="normalize_guid"):
    """``{...}`` form of a GUID given with or without braces; ParamError if malformed."""
    return "{%s}" % bare_guid(guid, func)


def bare_guid(guid, func="bare_guid"):
    """The GUID without braces (``xxxxxxxx-...``), as 7.x wants a CBT UUID."""
    match = _GUID_RE.match(guid) if isinstance(guid, str) else None
    if match is None:
        raise _param_error(func, "not a GUID: %r" % (guid,))
    return match.group(1)


def _guid_buffer(guid):
    buf = ffi.new("char[]", GUID_BUFFER_SIZE)
    data = guid.encode("ascii")
    ffi.memmove(buf, data, len(data))
    return buf


def new_guid():
    """A fresh random GUID from libploop (no ``uuid`` import: it loads ctypes on 3.6)."""
    buf = ffi.new("char[]", GUID_BUFFER_SIZE)
    _call("ploop_uuid_generate", buf, GUID_BUFFER_SIZE, serial=False)
    return ffi.string(buf).decode("ascii")


def _string(value):
    return ffi.string(value) if value != ffi.NULL else None


def _sectors(size, func):
    if not isinstance(size, int) or size <= 0:
        raise _param_error(func, "size must be a positive number of bytes, not %r" % (size,))
    return (size + SECTOR_SIZE - 1) // SECTOR_SIZE


# ----------------------------------------------------------------------------
# Logging

def set_log_file(path, level=None):
    """Append libploop's own log to ``path`` (process-wide: all jobs share it).

    ``level`` is libploop's log level (0 quiet .. 4+ verbose; libploop's default 3).
    """
    buf = _path_buffer(path)
    _call("ploop_set_log_file", buf, path=fspath(path))
    if level is not None:
        lib.ploop_set_log_level(int(level))


# ----------------------------------------------------------------------------
# Images

def create_image(path, size, fmt="expanded", fstype=None, version=None,
                 cluster_size=None, fslabel=None):
    """Create a ploop image at ``path`` and its DiskDescriptor.xml beside it.

    ``size`` in bytes (rounded up to 512); ``fmt`` is ``"expanded"``,
    ``"preallocated"`` or ``"raw"``; ``fstype`` None makes a bare disk, ``"ext4"``
    a GPT-partitioned disk with a filesystem (needs the kernel driver);
    ``version`` 1 or 2 (None: libploop's choice); ``cluster_size`` in bytes
    (None: 1 MiB); ``fslabel`` needs libploop 7.x.
    Returns the descriptor's path. On failure nothing is left behind.

    A filesystem without the kernel driver is refused before libploop runs:
    when 7.x cannot set up the new image's device, its clean-up unmounts
    whatever is mounted from the first block device in ``/sys/block`` (it
    looks the device up by an empty name). Where the driver is loaded but the
    device setup fails all the same, that clean-up still runs.
    """
    func = "create_image"
    if fmt not in MODES:
        raise _param_error(func, "unknown image format %r (expanded, preallocated, raw)" % (fmt,))
    if version not in (None, 1, 2):
        raise _param_error(func, "unknown ploop format version %r (1 or 2)" % (version,))
    image = os.path.abspath(fspath(path))
    directory = os.path.dirname(image)
    dd = os.path.join(directory, DESCRIPTOR_NAME)
    if os.path.lexists(dd) or os.path.lexists(image):
        raise error_for(lib.SYSEXIT_CREAT, func, "%s already exists" % os.fsdecode(
            dd if os.path.lexists(dd) else image), image)
    if not os.path.isdir(directory):
        raise error_for(lib.SYSEXIT_CREAT, func, "directory %s does not exist"
                        % os.fsdecode(directory), image)
    param = ffi.new("struct ploop_create_param *")
    param.size = _sectors(size, func)
    param.mode = MODES[fmt]
    image_buf = _path_buffer(image)
    param.image = image_buf
    if fstype is not None:
        fs_buf = ffi.new("char[]", fstype.encode("ascii"))
        param.fstype = fs_buf
    if cluster_size is not None:
        if cluster_size <= 0 or cluster_size % SECTOR_SIZE:
            raise _param_error(func, "cluster size must be a multiple of 512, not %r"
                               % (cluster_size,))
        param.blocksize = cluster_size // SECTOR_SIZE
    param.fmt_version = version or 0
    if fslabel is not None:
        label = ffi.new("char[]", fslabel.encode("utf-8"))
        if lib.vz7n_set_fslabel(param, label) != 0:
            raise _param_error(func, "filesystem labels need libploop 7.x")
    if fstype is not None and not os.path.exists(PLOOP_MINOR):
        raise error_for(lib.SYSEXIT_DEVICE, func, "a filesystem needs the ploop kernel "
                        "driver (%s is missing)" % PLOOP_MINOR, image)
    lock_file = dd + b".lck"
    had_lock_file = os.path.lexists(lock_file)
    try:
        _call("ploop_create_image", param, path=image)
    except PloopError:
        # libploop removes its image and descriptor on failure, not its lock file.
        if not had_lock_file and not os.path.lexists(dd):
            with contextlib.suppress(OSError):
                os.unlink(lock_file)
        raise
    return dd


Snapshot = collections.namedtuple("Snapshot", "guid parent_guid temporary file current")
Snapshot.__doc__ = """One node of the snapshot tree.

``guid`` names the delta that holds the state frozen at snapshot time,
``parent_guid`` its parent (NULL_GUID for the base), ``temporary`` a
``ploop tsnapshot`` leftover flag, ``file`` the delta file (bytes) and
``current`` whether it is the live top.
"""

FsInfo = collections.namedtuple("FsInfo", "block_size blocks blocks_free inodes inodes_free")


class _State(object):
    """What one read of DiskDescriptor.xml says."""

    def __init__(self, di):
        self.size = di.size * SECTOR_SIZE
        self.cluster_size = di.blocksize * SECTOR_SIZE
        self.mode = _MODE_NAMES.get(di.mode, str(di.mode))
        self.top_guid = _string(di.top_guid).decode("ascii")
        self.images = collections.OrderedDict(
            (ffi.string(di.images[i].guid).decode("ascii"), ffi.string(di.images[i].file))
            for i in range(di.nimages))
        snapshots = []
        for i in range(di.nsnapshots):
            s = di.snapshots[i]
            guid = ffi.string(s.guid).decode("ascii")
            snapshots.append(Snapshot(guid, ffi.string(s.parent_guid).decode("ascii"),
                                      bool(s.temporary), self.images.get(guid),
                                      guid == self.top_guid))
        self.snapshots = snapshots
        # From the top delta's header, read only when asked for.
        self.format_version = None


class Disk(object):
    """An open ploop disk (its DiskDescriptor.xml). Use :meth:`open`.

    A context manager; :meth:`close` frees libploop's handles (a garbage
    collector safety net frees them too). The descriptor is re-read lazily after
    every change, so properties always describe the disk as it is now. One Disk
    may be shared by threads: its calls are serialised per Disk.
    """

    def __init__(self, path, handle):
        self.path = path
        self._handle = handle
        self._components = {}
        self._state = None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path):
        """Open a DiskDescriptor.xml (or the directory that holds it)."""
        dd = descriptor_path(path)
        if not os.path.isfile(dd):
            raise error_for(lib.SYSEXIT_DISKDESCR, "open", "%s does not exist"
                            % os.fsdecode(dd), dd)
        disk = cls(dd, _open_handle(dd))
        try:
            disk._read()
        except BaseException:
            disk.close()
            raise
        return disk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<vz7native.ploop.Disk %s%s>" % (
            os.fsdecode(self.path), "" if self._handle is not None else " (closed)")

    def close(self):
        """Free the native handles (the disk stays as it is on disk)."""
        with self._lock:
            for handle in self._components.values():
                ffi.release(handle)
            self._components.clear()
            if self._handle is not None:
                ffi.release(self._handle)
                self._handle = None

    # -- state ---------------------------------------------------------------

    def _di(self):
        if self._handle is None:
            raise ValueError("operation on a closed Disk: %s" % os.fsdecode(self.path))
        return self._handle

    def _read(self):
        di = self._di()
        _call("vz7n_read_dd", di, _path_buffer(self.path), path=self.path)
        self._state = _State(di)
        return self._state

    def _current(self):
        with self._lock:
            return self._state or self._read()

    def _changed(self):
        self._state = None

    def refresh(self):
        """Re-read the descriptor now (it is re-read after our own changes anyway)."""
        with self._lock:
            self._read()

    @property
    def size(self):
        """Virtual disk size in bytes."""
        return self._current().size

    @property
    def cluster_size(self):
        """Cluster (block) size in bytes."""
        return self._current().cluster_size

    @property
    def format_version(self):
        """ploop1 format version of the top delta (1 or 2; 0 for raw images)."""
        with self._lock:
            state = self._current()
            if state.format_version is None:
                spec = ffi.new("struct ploop_spec *")
                _call("ploop_get_spec", self._di(), spec, path=self.path)
                state.format_version = spec.fmt_version
            return state.format_version

    @property
    def mode(self):
        """``"expanded"``, ``"preallocated"`` or ``"raw"``."""
        return self._current().mode

    @property
    def images(self):
        """Ordered ``{guid: delta file}`` as the descriptor lists them."""
        return collections.OrderedDict(self._current().images)

    @property
    def snapshots(self):
        """The snapshot tree as a list of :class:`Snapshot`."""
        return list(self._current().snapshots)

    @property
    def top_guid(self):
        return self._current().top_guid

    @property
    def top_delta(self):
        """File of the live top delta."""
        state = self._current()
        return state.images[state.top_guid]

    @property
    def base_delta(self):
        """File of the base delta of the live chain."""
        return self.chain()[-1]

    def chain(self, guid=None):
        """Delta files from ``guid`` (default: the top) down to the base."""
        state = self._current()
        parents = {s.guid: s.parent_guid for s in state.snapshots}
        guid = state.top_guid if guid is None else normalize_guid(guid, "chain")
        if guid not in parents:
            raise error_for(lib.SYSEXIT_NOSNAP, "chain", "no snapshot %s" % guid, self.path)
        files = []
        while guid != NULL_GUID and guid in parents:
            files.append(state.images[guid])
            guid = parents[guid]
        return files

    # -- snapshots -----------------------------------------------------------

    def create_snapshot(self, guid=None, cbt_uuid=None):
        """Take a snapshot and return its GUID (generated when not given).

        The GUID names the frozen state; the live top keeps :data:`TOP_GUID`.
        Online when the disk is mounted, offline otherwise. ``cbt_uuid`` (with or
        without braces; libploop 7.x only) names the changed-block-tracking
        bitmap started with the snapshot.
        """
        guid = normalize_guid(guid, "create_snapshot") if guid else new_guid()
        param = ffi.new("struct ploop_snapshot_param *")
        guid_buf = _guid_buffer(guid)
        param.guid = guid_buf
        if cbt_uuid is not None:
            # 7.x parses it with uuid_parse(): no braces.
            cbt_buf = _guid_buffer(bare_guid(cbt_uuid, "create_snapshot"))
            if lib.vz7n_set_snapshot_cbt(param, cbt_buf) != 0:
                raise _param_error("create_snapshot", "changed block tracking needs libploop 7.x")
        with self._lock:
            self._changed()
            _call("ploop_create_snapshot", self._di(), param, path=self.path)
        return guid

    def delete_snapshot(self, guid):
        """Delete a snapshot: its child is merged into it (online when mounted)."""
        guid_buf = _guid_buffer(normalize_guid(guid, "delete_snapshot"))
        with self._lock:
            self._changed()
            _call("ploop_delete_snapshot", self._di(), guid_buf, path=self.path)

    def merge_snapshot(self, guid=None, merge_all=False):
        """Merge ``guid`` (default: the top) into its parent, or everything into the base."""
        if guid is not None and merge_all:
            raise _param_error("merge_snapshot", "give a GUID or merge_all, not both")
        param = ffi.new("struct ploop_merge_param *")
        param.merge_all = 1 if merge_all else 0
        if guid is not None:
            guid_buf = _guid_buffer(normalize_guid(guid, "merge_snapshot"))
            param.guid = guid_buf
        with self._lock:
            self._changed()
            _call("ploop_merge_snapshot", self._di(), param, path=self.path)

    def switch_snapshot(self, guid):
        """Make ``guid`` the base of a new, empty top; the old top is deleted."""
        param = ffi.new("struct ploop_snapshot_switch_param *")
        guid_buf = _guid_buffer(normalize_guid(guid, "switch_snapshot"))
        param.guid = guid_buf
        with self._lock:
            self._changed()
            _call("ploop_switch_snapshot_ex", self._di(), param, path=self.path)

    @contextlib.contextmanager
    def temporary_snapshot(self, component, mount_point, guid=None):
        """Snapshot a mounted disk and mount the snapshot read-only at ``mount_point``.

        Yields a :class:`TemporarySnapshot`. This process holds the snapshot
        through an fd: if it dies, libploop merges the snapshot back by itself at
        the next snapshot, mount or start. On exit the snapshot is unmounted, the
        fd closed and the snapshot merged back.
        """
        func = "temporary_snapshot"
        guid = normalize_guid(guid, func) if guid else new_guid()
        handle = self._component(component)
        param = ffi.new("struct ploop_tsnapshot_param *")
        guid_buf = _guid_buffer(guid)
        param.guid = guid_buf
        comp_buf = ffi.new("char[]", component.encode("ascii"))
        param.component_name = comp_buf
        target_buf = _path_buffer(mount_point)
        param.target = target_buf
        holder = ffi.new("int *", -1)
        with self._lock:
            self._changed()
            _call("ploop_create_temporary_snapshot", self._di(), param, holder,
                  path=self.path)
        snapshot = TemporarySnapshot(self, handle, guid, ffi.string(param.device),
                                     fspath(mount_point), holder[0])
        try:
            yield snapshot
        finally:
            snapshot.release()

    # -- kernel mounts -------------------------------------------------------

    def _component(self, name):
        """The handle for component ``name`` (opened once, never renamed)."""
        if not name:
            raise _param_error("component", "a component name must be a non-empty string")
        with self._lock:
            handle = self._components.get(name)
            if handle is None:
                handle = _open_handle(self.path)
                comp = ffi.new("char[]", name.encode("ascii"))
                try:
                    _call("ploop_set_component_name", handle, comp, path=self.path)
                except BaseException:
                    ffi.release(handle)
                    raise
                self._components[name] = handle
            return handle

    def _handle_for(self, component):
        return self._di() if component is None else self._component(component)

    def mount(self, target, readonly=False, guid=None, component=None,
              fstype=None, mount_data=None):
        """Mount the top (or snapshot ``guid``) at ``target`` through the kernel driver.

        Returns a :class:`KernelMount`, a context manager that unmounts on exit.
        Use a ``component`` name to mount a snapshot beside the running container.
        libploop 7.x converts v1 deltas to v2 on disk for a read-write mount of
        the top without ``component``, before it knows whether the mount works.
        """
        handle = self._handle_for(component)
        param = ffi.new("struct ploop_mount_param *")
        param.ro = 1 if readonly else 0
        target_buf = _path_buffer(target)
        param.target = target_buf
        if guid is not None:
            guid_buf = _guid_buffer(normalize_guid(guid, "mount"))
            param.guid = guid_buf
        if fstype is not None:
            fs_buf = ffi.new("char[]", fstype.encode("ascii"))
            param.fstype = fs_buf
        if mount_data is not None:
            data_buf = ffi.new("char[]", mount_data.encode("ascii"))
            param.mount_data = data_buf
        func = "ploop_mount_snapshot" if guid is not None else "ploop_mount_image"
        with self._lock:
            _call(func, handle, param, path=self.path)
        device = ffi.string(param.device)
        return KernelMount(self, handle, device, _partition(handle, device, target),
                           fspath(target), bool(readonly), guid)

    def umount(self, component=None):
        """Unmount whatever of this disk (or component) is mounted."""
        with self._lock:
            _call("ploop_umount_image", self._handle_for(component), path=self.path)

    def is_mounted(self, component=None):
        with self._lock:
            rc = _call("ploop_is_mounted", self._handle_for(component), path=self.path,
                       ok=(0, 1), serial=False)
        return rc == 1

    def device(self, component=None):
        """The ploop device (``b"/dev/ploopN"``) this disk runs on, or None."""
        buf = ffi.new("char[]", PATH_BUFFER_SIZE)
        with self._lock:
            rc = _call("ploop_get_dev", self._handle_for(component), buf, PATH_BUFFER_SIZE,
                       path=self.path, ok=(0, 1), serial=False)
        return ffi.string(buf) if rc == 0 else None

    def mount_point(self, component=None):
        """Where the disk's filesystem is mounted, or None."""
        device = self.device(component)
        return mount_point_of_device(device) if device else None

    def is_mounted_readonly(self, component=None):
        """True/False for a mounted disk's filesystem, None when not mounted."""
        target = self.mount_point(component)
        if target is None:
            return None
        return bool(os.statvfs(target).f_flag & os.ST_RDONLY)

    def resize(self, size, offline=False):
        """Grow or shrink the disk (and its filesystem) to ``size`` bytes.

        libploop 7.x mounts a stopped disk read-write for it, which converts v1
        deltas to v2 on disk, also when the resize then fails.
        """
        param = ffi.new("struct ploop_resize_param *")
        param.size = _sectors(size, "resize")
        param.offline_resize = 1 if offline else 0
        with self._lock:
            self._changed()
            _call("ploop_resize_image", self._di(), param, path=self.path)

    def filesystem_info(self):
        """statfs-like :class:`FsInfo` of the disk's filesystem (mounts it if needed).

        libploop 7.x answers from its cached ``.statfs`` file when there is one;
        otherwise it mounts the disk read-write, which converts v1 deltas to v2
        on disk, also when the mount then fails. :mod:`vz7native.image` reads a
        disk without changing it.
        """
        info = ffi.new("struct ploop_info *")
        # Without a device 1.15 fails and leaves an empty "<delta>.mnt" directory.
        leftovers = [f + b".mnt" for f in self.images.values()
                     if not os.path.lexists(f + b".mnt")]
        try:
            with self._lock:
                _call("ploop_get_info_by_descr", _path_buffer(self.path), info,
                      path=self.path)
        except PloopError:
            for leftover in leftovers:
                with contextlib.suppress(OSError):
                    os.rmdir(leftover)
            raise
        return FsInfo(info.fs_bsize, info.fs_blocks, info.fs_bfree, info.fs_inodes,
                      info.fs_ifree)


def _open_handle(dd):
    pp = ffi.new("struct ploop_disk_images_data **")
    _call("ploop_open_dd", pp, _path_buffer(dd), path=dd)
    return ffi.gc(pp[0], lib.ploop_close_dd)


def _partition(handle, device, target):
    buf = ffi.new("char[]", PATH_BUFFER_SIZE)
    rc = lib.vz7n_get_partition(handle, device, _path_buffer(target), buf, PATH_BUFFER_SIZE)
    return ffi.string(buf) if rc == 0 else device


class KernelMount(object):
    """A filesystem on a ploop device, mounted by :meth:`Disk.mount`.

    ``device`` (``/dev/ploopN``), ``partition`` (``/dev/ploopNp1`` or the device),
    ``target``, ``readonly``, ``guid`` (None for the top). Unmounts on exit.
    """

    def __init__(self, disk, handle, device, partition, target, readonly, guid):
        self.disk = disk
        self._handle = handle
        self.device = device
        self.partition = partition
        self.target = target
        self.readonly = readonly
        self.guid = guid
        self.mounted = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.umount()

    def umount(self):
        """Unmount and free the device (does nothing the second time)."""
        if self.mounted:
            _call("ploop_umount", _path_buffer(self.device), self._handle,
                  path=self.disk.path)
            self.mounted = False


class TemporarySnapshot(KernelMount):
    """A temporary snapshot mounted read-only, held by ``holder_fd``."""

    def __init__(self, disk, handle, guid, device, target, holder_fd):
        super(TemporarySnapshot, self).__init__(disk, handle, device, device, target,
                                                True, guid)
        self.holder_fd = holder_fd

    def release(self):
        """Unmount, drop the holder fd and merge the snapshot back, in that order."""
        try:
            self.umount()
        finally:
            if self.holder_fd >= 0:
                os.close(self.holder_fd)
                self.holder_fd = -1
            self.disk.delete_snapshot(self.guid)


def device_of_base_delta(base_delta):
    """The ploop device (no component name) whose chain starts at ``base_delta``, or None.

    Scans sysfs under libploop's global lock: no descriptor is read or locked
    and nothing of the image is written.
    """
    buf = ffi.new("char[]", PATH_BUFFER_SIZE)
    rc = _call("ploop_find_dev", ffi.NULL, _path_buffer(base_delta), buf, PATH_BUFFER_SIZE,
               path=fspath(base_delta), ok=(0, 1))
    return ffi.string(buf) if rc == 0 else None


def device_of_mount_point(path):
    """The ploop device mounted at ``path``, or None."""
    buf = ffi.new("char[]", PATH_BUFFER_SIZE)
    rc = lib.ploop_get_dev_by_mnt(_path_buffer(path), buf, PATH_BUFFER_SIZE)
    return ffi.string(buf) if rc == 0 else None


def mount_point_of_device(device):
    """Where ploop ``device`` is mounted, or None."""
    buf = ffi.new("char[]", PATH_BUFFER_SIZE)
    rc = lib.ploop_get_mnt_by_dev(_path_buffer(device), buf, PATH_BUFFER_SIZE)
    return ffi.string(buf) if rc == 0 else None


def umount_mount_point(path):
    """Unmount the ploop filesystem mounted at ``path``."""
    device = device_of_mount_point(path)
    if device is None:
        raise _param_error("umount", "no ploop device is mounted at %s" % os.fsdecode(
            fspath(path)), fspath(path))
    _call("ploop_umount", _path_buffer(device), ffi.NULL, path=device)
