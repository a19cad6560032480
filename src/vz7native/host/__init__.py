"""A VZ7 host as its own files and kernel show it: containers, status, locks,
blockers, registration. No ``prlctl`` or ``vzctl`` is run except to register a
restored container.

    >>> from vz7native.host import Host, find_blockers, register_container
    >>> host = Host(root=b"/")
    >>> ct = host.find(name="web01", uuid="2d109ae4-5231-475f-bc44-5cabf5d8503b")
    >>> host.status(ct).state
    'running'
    >>> with host.lockfile(b"/var/lock/bareos-vz7.lock", 600), host.container_lock(ct, 60):
    ...     host.check_pcompact(ct)
    ...     find_blockers(ct.root, "tmp/backup_blocker")
    []
    >>> register_container(ct.ve_private, 120)     # after restoring a whole container

Everything takes a host root (default ``/``): files VZ7 keeps (``/etc/vz``, the
private areas, lock and log files) and the kernel files a sandbox has to stage
(``/sys/fs/cgroup``, ``/sys/block``) are read under it; processes, flocks and mounts
come from the real ``/proc`` (:mod:`vz7native.procfs`). ``vz7native.host.sandbox``
builds such a root. Modules: ``conf`` (ve.conf), ``containers``, ``status`` (with the
list of signals), ``locks``, ``pcompact``, ``blockers``, ``register``, ``rootfs``
(paths inside a root), and for tests and the demo ``sandbox`` and ``tree``.

Nothing here imports ctypes-based modules (pyudev, FUSE, ``uuid`` on 3.6): the
Bareos plugin imports it inside the file daemon.
"""
import collections
import os

from vz7native.host import conf, containers, rootfs
from vz7native.host.blockers import find_blockers
from vz7native.host.containers import Container
from vz7native.host.errors import (
    BlockerError, ConfigError, ContainerMismatch, ContainerNotFound, HostError, LockTimeout,
    PcompactRunning, RegisterError, StatusError, UnsupportedLayout)
from vz7native.host.locks import FileLock
from vz7native.host.pcompact import check_pcompact
from vz7native.host.register import register_container
from vz7native.host.status import (
    MOUNTED, RUNNING, STOPPED, SUSPENDED, TRANSITIONAL, Signal, Status, container_status)
from vz7native.paths import show

__all__ = [
    "Host", "Container", "Status", "Signal", "FileLock", "find_blockers", "register_container",
    "STOPPED", "RUNNING", "MOUNTED", "SUSPENDED", "TRANSITIONAL",
    "HostError", "ConfigError", "ContainerNotFound", "ContainerMismatch", "UnsupportedLayout",
    "StatusError", "LockTimeout", "PcompactRunning", "RegisterError", "BlockerError",
]

CONTAINER_LOCK_DIR = b"/var/lock/vz7native"


class Host(object):
    """The VZ7 host whose ``/`` is ``root`` (bytes or str)."""

    def __init__(self, root=b"/"):
        self.root = os.path.abspath(os.fsencode(root))

    def __repr__(self):
        return "<Host %s>" % show(self.root)

    def real(self, path):
        """The real path of the host path ``path`` (symlinks not resolved)."""
        path = os.fsencode(path)
        if not path.startswith(b"/"):
            raise ValueError("not an absolute host path: %r" % (path,))
        return path if self.root == b"/" else self.root + os.path.normpath(path)

    def view(self, path):
        """The host path of the real path ``path`` (for messages)."""
        if self.root == b"/" or not path.startswith(self.root + b"/"):
            return path
        return path[len(self.root):]

    def resolve(self, path):
        """The real path of host path ``path``, symlinks resolved inside the root (as
        far as it exists: callers check what they need)."""
        try:
            return self.real(rootfs.realpath(self.root, path))
        except OSError:
            return self.real(path)

    def global_config(self):
        """The assignments of ``/etc/vz/vz.conf`` (empty if there is none)."""
        path = self.real(containers.GLOBAL_CONF)
        if not os.path.exists(path):
            return {}
        return conf.read_conf(path, containers.GLOBAL_CONF)

    def load(self, ctid, global_config=None):
        """The container whose configuration is ``/etc/vz/conf/<ctid>.conf``."""
        defaults = self.global_config() if global_config is None else global_config
        config = collections.OrderedDict(
            (k, v) for k, v in defaults.items() if k not in conf.LOCAL_PARAMS)
        link = containers.conf_path(ctid)
        try:
            data = rootfs.read_file(self.root, link)
        except OSError as e:
            raise ConfigError("cannot read %s: %s" % (show(link), e.strerror or e))
        config.update(conf.parse_conf(data, link))
        return Container(self, ctid, config)

    def containers(self):
        """(containers, problems): every container that could be read, and
        ``(config path, error)`` for those that could not."""
        defaults = self.global_config()
        found, problems = [], []
        for ctid in containers.list_ctids(self):
            try:
                found.append(self.load(ctid, defaults))
            except HostError as e:
                problems.append((containers.conf_path(ctid), e))
        return found, problems

    def find(self, name=None, uuid=None):
        """The container called ``name`` and/or with UUID ``uuid`` (braces optional).

        ContainerNotFound if none matches, ContainerMismatch (naming both) if the
        name and the UUID belong to different containers."""
        if name is None and uuid is None:
            raise ValueError("find() needs a name or a uuid")
        wanted_uuid = None
        if uuid is not None:
            wanted_uuid = conf.normalize_uuid(uuid)
            if wanted_uuid is None:
                raise ContainerNotFound("uuid %r is not a UUID" % (uuid,))
        cts, problems = self.containers()
        by_name = [ct for ct in cts if name is not None and ct.name == name]
        by_uuid = [ct for ct in cts if wanted_uuid is not None and ct.uuid == wanted_uuid]
        asked = " and ".join(part for part in (
            "name %r" % name if name is not None else None,
            "uuid %s" % wanted_uuid if wanted_uuid is not None else None) if part)
        if len(by_name) > 1:
            raise ContainerMismatch("name %r is used by %d containers: %s" % (
                name, len(by_name), ", ".join(ct.uuid or ct.ctid for ct in by_name)))
        if name is not None and wanted_uuid is not None and (by_name or by_uuid):
            if by_name and by_uuid and by_name[0] is by_uuid[0]:
                return by_name[0]
            raise ContainerMismatch("name %r and uuid %s do not belong to the same container: %s" % (
                name, wanted_uuid, "; ".join(part for part in (
                    "name %r is container %s" % (name, by_name[0].uuid or by_name[0].ctid)
                    if by_name else "no container is called %r" % name,
                    "uuid %s is container %r" % (wanted_uuid, by_uuid[0].name)
                    if by_uuid else "no container has uuid %s" % wanted_uuid))))
        match = by_name or by_uuid
        if match:
            return match[0]
        unread = "".join("; could not read %s: %s" % (show(path), e) for path, e in problems)
        raise ContainerNotFound("no container with %s on this host (%d containers in %s)%s" % (
            asked, len(cts), show(containers.CONF_DIR), unread))

    def status(self, ct):
        """The ``Status`` of ``ct`` with the signals that decided it."""
        return container_status(self, ct)

    def lockfile(self, path, timeout, note=""):
        """A ``FileLock`` on the host path ``path`` (the plugin's ``lockfile`` option):
        other tools (pcompact's cron job, see the README) take the same file."""
        what = "lockfile %s" % show(os.fsencode(path))
        if not os.fsencode(path).startswith(b"/"):
            raise HostError("%s: the lock file must be an absolute path" % what)
        return FileLock(self.real(path), timeout, what, note)

    def container_lock_path(self, ct):
        """The host path of the per-container lock of ``ct``."""
        return self.ident_lock_path(ct.uuid or ct.ctid)

    @staticmethod
    def ident_lock_path(ident):
        """The host path of the per-container lock of the container with UUID (or
        CTID) ``ident``, whether or not it exists yet (a restore takes it)."""
        return os.path.join(CONTAINER_LOCK_DIR, b"ct-" + ident.encode("ascii") + b".lock")

    def container_lock(self, ct, timeout, note=""):
        """A ``FileLock`` that keeps two jobs from working on ``ct`` at once.

        It is our own lock (``/var/lock/vz7native/ct-<UUID>.lock``), not vzctl's:
        vzctl takes its container lock without waiting and removes the file when done,
        so holding it for a whole backup would make every ``vzctl start/stop`` of the
        container fail meanwhile. vzctl's lock is read instead (``status``)."""
        return self.ident_lock(ct.uuid or ct.ctid, timeout, note, ct.label)

    def ident_lock(self, ident, timeout, note="", label=None):
        """The lock of :meth:`container_lock` by UUID (or CTID) ``ident``."""
        path = self.ident_lock_path(ident)
        os.makedirs(self.real(os.path.dirname(path)), mode=0o755, exist_ok=True)
        return FileLock(self.real(path), timeout, "the lock of container %s (%s)" % (
            label or ident, show(path)), note)

    def check_pcompact(self, ct):
        """Raise PcompactRunning if pcompact or ``vzctl compact`` works on ``ct``."""
        check_pcompact(self, ct)
