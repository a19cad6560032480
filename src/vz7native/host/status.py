"""A container's status, decided from the signals VZ7's own tools read.

libvzctl (``vzctl2_get_env_status_info``, ``env_nsops.c``, ``cgroup.c``, ``lock.c``)
and the VZ7 kernel (``kernel/ve/ve.c``) give these signals; each one is read here
from the place given, ``<root>`` being the host root:

``ve.state``  ``<ve cgroup>/<CTID>/ve.state``, the ve controller's hierarchy found in
    ``/proc/self/mountinfo`` under the host root, else ``<root>/sys/fs/cgroup/ve``.
    The kernel prints ``RUNNING``, ``STOPPED``, ``STOPPING`` or ``STARTING``; libvzctl
    counts the container as running when the file exists and is not ``STOPPED``
    (``cg_env_get_ve_state``). If the ve hierarchy itself is missing the host is no
    running VZ7 kernel and nothing is decided (StatusError).
``freezer.state``  ``<freezer cgroup>/<VE_CGROUP_SLICE>/<CTID>/freezer.state``
    (slice ``machine.slice`` unless vz.conf says otherwise): ``FROZEN`` marks a
    running container as suspended in place (``ns_env_get_cpt_state``).
``vzctl lock``  ``<root><LOCKDIR>/<CTID>.lck`` (LOCKDIR from vz.conf, ``/vz/lock``):
    vzctl writes ``PID\\noperation`` there for as long as it starts, stops, mounts,
    suspends... the container; libvzctl reports the operation as the transition
    (``read_env_transition``). A file whose process is gone is stale and ignored.
``root mount``  a mount whose mount point is the container's ``VE_ROOT`` in
    ``/proc/self/mountinfo`` (``fs_is_mounted_check_by_target``).
``ploop device``  a ``<root>/sys/block/ploop*`` device whose ``pdelta/0/image`` is the
    root disk's base image and whose ``pstate/running`` is 1 (what ``ploop_is_mounted``
    looks for, used by ``vzctl2_env_is_mounted`` for ploop containers).
``dump``  ``VE_PRIVATE/dump/Dump`` (``DUMPDIR/Dump.<CTID>`` before layout 4): the
    checkpoint of a container suspended to disk (``vzctl2_get_dump_file``).

The decision, in this order:

1. a live vzctl lock, or ``ve.state`` ``STARTING``/``STOPPING``: **transitional**;
2. ``ve.state`` ``RUNNING``: **running** when the root is mounted (mount or ploop
   device), **suspended** when also ``FROZEN``, **transitional** when freezing or
   when no mount backs it (the two signals disagree: a start or stop is under way);
3. otherwise (``STOPPED`` or no file): **mounted** if the root is mounted,
   **suspended** if a dump file exists, else **stopped**.

So no status rests on one file alone: "running" needs the kernel's ve state and a
mount, "stopped" needs the ve hierarchy to be there, no ve state, no mount, no
ploop device and no dump.
"""
import collections
import os

from vz7native import procfs
from vz7native.host.errors import HostError, StatusError
from vz7native.paths import show

STOPPED = "stopped"
RUNNING = "running"
MOUNTED = "mounted"
SUSPENDED = "suspended"
TRANSITIONAL = "transitional"

DEFAULT_LOCKDIR = b"/vz/lock"
DEFAULT_DUMPDIR = b"/vz/tmp"  # libvzctl's DEF_DUMPDIR when vz.conf has no DUMPDIR
DEFAULT_SLICE = b"machine.slice"
SYS_BLOCK = b"/sys/block"

Signal = collections.namedtuple("Signal", "name source value")
Signal.__doc__ = "One observation: what (``name``), where it was read (``source``), what it said."


class Status(object):
    """A container's status: ``state`` (one of the module constants), ``reason`` (one
    line) and ``signals`` (every ``Signal`` that was read)."""

    def __init__(self, state, reason, signals):
        self.state = state
        self.reason = reason
        self.signals = tuple(signals)

    def signal(self, name):
        """The value of the signal called ``name`` (None if it was not read)."""
        for sig in self.signals:
            if sig.name == name:
                return sig.value
        return None

    def describe(self):
        """The state, why, and every signal with its source."""
        return "%s (%s); signals: %s" % (self.state, self.reason, "; ".join(
            "%s=%s [%s]" % (s.name, s.value, s.source) for s in self.signals))

    def __str__(self):
        return "%s (%s)" % (self.state, self.reason)

    def __repr__(self):
        return "<Status %s>" % self.describe()


def _read_line(path):
    try:
        with open(path, "rb") as f:
            return f.read(4096).strip().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StatusError("cannot read %s: %s" % (show(path), e.strerror))


def cgroup_dir(host, controller, mounts):
    """The real path of the cgroup v1 hierarchy of ``controller`` for this host
    (``mounts``: ``procfs.mounts()``)."""
    prefix = host.root.rstrip(b"/") + b"/"
    name = controller.encode("ascii")
    for mount in mounts:
        # A v1 hierarchy names its controllers in the filesystem's options.
        if (mount.fstype == b"cgroup" and name in mount.super_options.split(b",")
                and (mount.mount_point + b"/").startswith(prefix)):
            return mount.mount_point
    return host.real(b"/sys/fs/cgroup/" + name)


def vzctl_lock(host, ct):
    """(host path, pid or None, operation) of vzctl's lock file for ``ct``, or None
    if there is none (``LOCKDIR/<CTID>.lck``: ``PID\\noperation``)."""
    lockdir = ct.config.get("LOCKDIR") or DEFAULT_LOCKDIR
    view = os.path.join(lockdir, ct.ctid.encode("ascii") + b".lck")
    text = _read_line(host.real(view))
    if text is None:
        return None
    first, _, operation = text.partition("\n")
    return view, int(first) if first.strip().isdigit() else None, operation.strip()


def _transition(host, ct, signals):
    lock = vzctl_lock(host, ct)
    if lock is None:
        lockdir = ct.config.get("LOCKDIR") or DEFAULT_LOCKDIR
        signals.append(Signal("vzctl lock", show(lockdir), "no %s.lck" % ct.ctid))
        return None
    view, pid, operation = lock
    alive = pid is not None and procfs.pid_alive(pid)
    signals.append(Signal("vzctl lock", show(view), "%s by pid %s%s" % (
        operation or "(no operation)", pid, "" if alive else ", stale")))
    return (pid, operation) if alive else None


def _root_mount(ct, signals, mounts):
    target = os.path.realpath(ct.root)
    found = None
    for mount in mounts:
        if mount.mount_point == target:
            found = mount  # the last one is on top
    signals.append(Signal("root mount", "/proc/self/mountinfo", "%s %s on %s" % (
        show(found.fstype), show(found.source), show(target))
        if found else "none on %s" % show(target)))
    return found


def _ploop_device(host, ct, signals):
    source = show(host.view(host.real(SYS_BLOCK)))
    try:
        image = os.path.realpath(ct.base_image)
    except HostError as e:
        signals.append(Signal("ploop device", source, "not looked for: %s" % e))
        return None
    try:
        devices = sorted(d for d in os.listdir(host.real(SYS_BLOCK)) if d.startswith(b"ploop"))
    except FileNotFoundError:
        devices = []
    holders = []
    for dev in devices:
        base = os.path.join(host.real(SYS_BLOCK), dev)
        attached = _read_line(os.path.join(base, b"pdelta/0/image"))
        if attached is not None and os.path.realpath(os.fsencode(attached)) == image:
            running = _read_line(os.path.join(base, b"pstate/running")) == "1"
            holders.append((dev, running))
    signals.append(Signal("ploop device", source, ", ".join(
        "%s holds %s, %s" % (show(dev), show(image), "running" if running else "not running")
        for dev, running in holders) or "none holds %s" % show(image)))
    return next((dev for dev, running in holders if running), None)


def _dump(host, ct, signals):
    if ct.layout_version >= 4:
        path = os.path.join(ct.private, b"dump/Dump")
    else:
        dumpdir = ct.config.get("DUMPDIR") or DEFAULT_DUMPDIR
        path = host.real(os.path.join(dumpdir, b"Dump." + ct.ctid.encode("ascii")))
    exists = os.path.lexists(path)
    signals.append(Signal("dump", show(host.view(path)), "present" if exists else "absent"))
    return exists


def container_status(host, ct):
    """The ``Status`` of container ``ct`` on ``host``."""
    signals = []
    mounts = procfs.mounts()  # one view of the mount table for every signal
    ve_dir = cgroup_dir(host, "ve", mounts)
    if not os.path.isdir(ve_dir):
        raise StatusError(
            "cannot tell the status of container %s: there is no ve cgroup hierarchy at %s, "
            "so this is not a running Virtuozzo 7 kernel" % (ct.label, show(host.view(ve_dir))))
    ve_path = os.path.join(ve_dir, ct.ctid.encode("ascii"), b"ve.state")
    ve_state = _read_line(ve_path)
    signals.append(Signal("ve.state", show(host.view(ve_path)), ve_state or "absent"))
    transition = _transition(host, ct, signals)
    mount = _root_mount(ct, signals, mounts)
    device = _ploop_device(host, ct, signals) if ct.layout == "ploop" else None
    mounted = mount is not None or device is not None

    if transition is not None:
        return Status(TRANSITIONAL, "vzctl is %s it (pid %d)" % (
            transition[1] or "working on", transition[0]), signals)
    if ve_state in ("STARTING", "STOPPING"):
        return Status(TRANSITIONAL, "the kernel says %s" % ve_state, signals)
    if ve_state not in (None, "STOPPED"):
        if ve_state != "RUNNING":
            raise StatusError("container %s: unknown ve.state %r in %s"
                              % (ct.label, ve_state, show(host.view(ve_path))))
        if not mounted:
            return Status(TRANSITIONAL, "the kernel says RUNNING but neither VE_ROOT nor "
                          "its root disk is mounted", signals)
        slice_name = ct.config.get("VE_CGROUP_SLICE") or DEFAULT_SLICE
        freezer_path = os.path.join(cgroup_dir(host, "freezer", mounts), slice_name,
                                    ct.ctid.encode("ascii"), b"freezer.state")
        freezer = _read_line(freezer_path)
        signals.append(Signal("freezer.state", show(host.view(freezer_path)), freezer or "absent"))
        if freezer == "FROZEN":
            return Status(SUSPENDED, "running but frozen", signals)
        if freezer == "FREEZING":
            return Status(TRANSITIONAL, "being frozen", signals)
        return Status(RUNNING, "the kernel says RUNNING and its root is mounted", signals)
    if mounted:
        return Status(MOUNTED, "not running, its root is mounted", signals)
    if _dump(host, ct, signals):
        return Status(SUSPENDED, "not running, a checkpoint dump is waiting", signals)
    return Status(STOPPED, "not running, not mounted, no dump", signals)
