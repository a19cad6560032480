"""Records of our read-only mounts, so that a set left behind by a killed process
is recognised as ours and removed later.

Every mount gets an id and a record ``<run dir>/mounts/<id>.json`` written
before anything is created and removed after everything is gone. The run dir
is ``/run/vz7native`` (``$VZ7NATIVE_RUN_DIR`` overrides it, e.g. for tests),
normally a tmpfs, so records go with the mounts at a reboot; where it is not,
a record that survives names processes that no longer run and is removed as a
leftover whose parts are already gone.

A record names the processes it depends on by pid *and* start time (a
:class:`vz7native.procfs.ProcessId`), so a recycled pid is never taken for the
original process. A set is *live* while its helper runs and, for a set tied to
its owner (the plugin's process), while the owner runs too; otherwise it is a
leftover.

Pure Python, safe to import in the file daemon. Paths are bytes; in the JSON
they are stored as latin-1 text, a byte-for-byte mapping that does not depend
on the locale of the process that reads them back.
"""
import contextlib
import fcntl
import json
import os

from vz7native.mount import RunDirError
from vz7native.paths import descriptor_path, show
from vz7native.procfs import ProcessId, is_running

RUN_DIR_ENV = "VZ7NATIVE_RUN_DIR"
DEFAULT_RUN_DIR = b"/run/vz7native"
# What our FUSE mounts look like: type "fuse.vz7native" in mountinfo, at
# <run dir>/fuse/<id>, holding one file, the flat disk.
FUSE_SUBTYPE = "vz7native"
FUSE_TYPE = b"fuse." + FUSE_SUBTYPE.encode("ascii")
DISK_NAME = b"disk"

_PATH_FIELDS = ("dd", "target", "fuse_dir", "backing_file", "loop")
_FIELDS = ("id", "backend", "dd", "guid", "target", "helper", "owner", "fuse_dir",
           "backing_file", "offset", "size_limit", "loop")


def new_id():
    """A fresh mount id (16 hex digits)."""
    return os.urandom(8).hex()


def run_dir():
    """The directory holding our records, FUSE mount points and lock (absolute, bytes)."""
    return os.path.abspath(os.fsencode(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR))


def canonical_dd(path):
    """The resolved path of a DiskDescriptor.xml given as itself or as its directory."""
    return os.path.realpath(descriptor_path(path))


def records_dir(base):
    return os.path.join(base, b"mounts")


def fuse_root(base):
    return os.path.join(base, b"fuse")


def fuse_dir(base, mount_id):
    """Where set ``mount_id`` serves its disk (the file is ``DISK_NAME`` inside)."""
    return os.path.join(fuse_root(base), os.fsencode(mount_id))


class MountRecord(object):
    """What a mount consists of; see the module docstring.

    ``backend`` ``"portable"`` or ``"kernel"``; ``dd`` the DiskDescriptor.xml;
    ``guid`` the snapshot (None: the top); ``target`` the mount point;
    ``helper`` the helper process (portable) and ``owner`` the process the set
    lives and dies with (None for a set that stays until unmounted);
    ``fuse_dir`` where the helper serves the flat disk; ``backing_file``,
    ``offset`` and ``size_limit`` what the loop device shows; ``loop`` the
    loop device once attached (for people reading the record: a device number
    can be given to someone else once freed, so teardown never trusts it).
    """

    def __init__(self, **fields):
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError("unknown record fields: %s" % ", ".join(sorted(unknown)))
        for name in _FIELDS:
            setattr(self, name, fields.get(name))

    def __repr__(self):
        return "<MountRecord %s %s at %s>" % (self.id, self.backend, self.target)

    def is_live(self):
        """True while the set is in use: its helper (if any) and its owner (if any) run."""
        if self.helper is not None and not is_running(self.helper):
            return False
        return self.owner is None or is_running(self.owner)

    def to_json(self):
        data = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if name in _PATH_FIELDS and value is not None:
                value = value.decode("latin-1")
            data[name] = value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        fields = {}
        for name in _FIELDS:
            value = data.get(name)
            if value is not None:
                if name in _PATH_FIELDS:
                    value = value.encode("latin-1")
                elif name in ("helper", "owner"):
                    value = ProcessId(*value)
            fields[name] = value
        return cls(**fields)


def record_path(base, mount_id):
    return os.path.join(records_dir(base), os.fsencode(mount_id) + b".json")


@contextlib.contextmanager
def writing(base, path):
    """Name the file and the run dir when writing there fails (ENOSPC, EROFS, ...)."""
    try:
        yield
    except OSError as e:
        raise RunDirError("cannot write %s in the run dir %s: %s" % (
            show(path), show(base), e.strerror or e)) from e


def save(base, record):
    """Write ``record`` atomically (a reader sees the old or the new one)."""
    path = record_path(base, record.id)
    tmp = path + b".tmp"
    with writing(base, tmp):
        try:
            with open(tmp, "w") as f:
                f.write(record.to_json())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def remove(base, mount_id):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(base, mount_id))


def load_all(base):
    """Every record under ``base`` (a record that cannot be read is skipped)."""
    found = []
    try:
        names = os.listdir(records_dir(base))
    except FileNotFoundError:
        return found
    for name in sorted(names):
        if not name.endswith(b".json"):
            continue
        try:
            with open(os.path.join(records_dir(base), name), "r") as f:
                found.append(MountRecord.from_json(f.read()))
        except (OSError, ValueError, TypeError):
            continue
    return found


def prepare(base):
    """Create the run dir layout (root-only)."""
    for path in (base, records_dir(base), fuse_root(base)):
        with writing(base, path):
            os.makedirs(path, mode=0o700, exist_ok=True)


@contextlib.contextmanager
def locked(base):
    """Hold the run dir's lock: record changes and leftover removal are serialised."""
    prepare(base)
    lock = os.path.join(base, b"lock")
    with writing(base, lock):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
