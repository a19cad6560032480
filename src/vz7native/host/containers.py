"""Containers as VZ7 keeps them on disk: ``/etc/vz/conf`` and the private areas.

What libvzctl reads, read the same way (``vzctl2_env_open``, ``get_env_ids_exists``):

* every ``/etc/vz/conf/<CTID>.conf`` whose name is a valid CTID (a UUID, or a
  decimal legacy VEID) is a container; on VZ7 it is a symlink to
  ``VE_PRIVATE/ve.conf``, followed inside the host root;
* ``/etc/vz/vz.conf`` gives the defaults (``VE_ROOT``, ``VE_PRIVATE``, ``LOCKDIR``...)
  except the per-container ``VEID``, ``UUID`` and ``NETFILTER``; ``ve.conf`` wins;
* ``$VEID`` in ``VE_ROOT``/``VE_PRIVATE`` is the CTID;
* the UUID is ``UUID=`` when present, else the CTID itself when it is a UUID (VZ7
  names containers by their UUID); a legacy numeric CT without ``UUID=`` has none;
* the layout is the target of the ``VE_PRIVATE/.ve.layout`` symlink (5: ploop;
  4 or missing: simfs);
* the disks are the ``DISK=`` entries; without a root entry (``mnt=/``) the root disk
  is ``VE_PRIVATE/root.hdd`` unless ``ROOT_DISK=no``; its size defaults to the
  DISKSPACE hard limit, as in libvzctl's ``set_disk_param``.

Only a single enabled ploop root disk is supported: anything else is refused with
what was found, when the disk is asked for.
"""
import os

from vz7native.host import conf
from vz7native.host.errors import ConfigError, HostError, UnsupportedLayout
from vz7native.image import ImageError, read_descriptor
from vz7native.paths import DESCRIPTOR_NAME, show

CONF_DIR = b"/etc/vz/conf"
GLOBAL_CONF = b"/etc/vz/vz.conf"
LAYOUT_LINK = b".ve.layout"
ROOT_HDD = b"root.hdd"
PLOOP_LAYOUT = 5


def conf_path(ctid):
    """The host path of a container's configuration link."""
    return b"%s/%s.conf" % (CONF_DIR, ctid.encode("ascii"))


def list_ctids(host):
    """The CTIDs that have a configuration file, in a stable order."""
    try:
        names = os.listdir(host.real(CONF_DIR))
    except FileNotFoundError:
        return []
    ctids = []
    for name in names:
        if not name.endswith(b".conf"):
            continue
        ctid = name[:-len(b".conf")].decode("ascii", "replace")
        if conf.parse_ctid(ctid) == ctid and ctid != "0":
            ctids.append(ctid)
    return sorted(ctids)


class Container(object):
    """One container of a host. Paths are bytes.

    ``ctid``, ``uuid`` (``xxxxxxxx-...``, no braces; None for a legacy container
    without one), ``name`` (None if unnamed), ``conf`` (host path of the config
    link), ``config`` (every assignment, vz.conf defaults included),
    ``ve_private``/``ve_root`` (host paths as configured), ``private``/``root`` (the
    same as real paths, usable to open files), ``layout`` (``"ploop"`` or
    ``"simfs"``) and ``layout_version``, ``disks`` (the enabled ``DiskEntry``
    objects, root disk first), ``diskspace`` ((soft, hard) bytes or None).
    """

    def __init__(self, host, ctid, config):
        self.host = host
        self.ctid = ctid
        self.conf = conf_path(ctid)
        self.config = config
        where = "%s: " % show(self.conf)
        self.name = self._text("NAME")
        uuid = config.get("UUID")
        if uuid:
            self.uuid = conf.normalize_uuid(uuid)
            if self.uuid is None:
                raise ConfigError(where + "UUID=%s is not a UUID" % show(uuid))
        else:
            self.uuid = conf.normalize_uuid(ctid)
        self.ve_private = self._path("VE_PRIVATE", where)
        self.ve_root = self._path("VE_ROOT", where)
        self.private = host.resolve(self.ve_private)
        self.root = host.resolve(self.ve_root)
        if not os.path.isdir(self.private):
            raise HostError("container %s: its private area %s does not exist"
                            % (self.label, show(self.ve_private)))
        self.layout_version = self._layout_version()
        self.layout = "ploop" if self.layout_version >= PLOOP_LAYOUT else "simfs"
        space = config.get("DISKSPACE")
        self.diskspace = conf.parse_diskspace(space, where + "DISKSPACE: ") if space else None
        self.disks = self._disks(where)
        self._descriptor = None

    def _text(self, key):
        value = self.config.get(key)
        return value.decode("utf-8", "surrogateescape") if value else None

    def _path(self, key, where):
        value = self.config.get(key)
        if not value:
            raise ConfigError(where + "%s is not set (neither there nor in %s)"
                              % (key, show(GLOBAL_CONF)))
        value = conf.substitute_veid(value, self.ctid)
        if not value.startswith(b"/"):
            raise ConfigError(where + "%s=%s is not an absolute path" % (key, show(value)))
        return os.path.normpath(value)

    def _layout_version(self):
        try:
            target = os.readlink(os.path.join(self.private, LAYOUT_LINK))
        except OSError:
            return 0
        return int(target) if target.isdigit() else 0

    def _disks(self, where):
        entries = conf.parse_disks(self.config.get("DISK", b""), where + "DISK: ")
        root_disk = self.config.get("ROOT_DISK", b"yes")
        if not any(d.mnt == b"/" for d in entries) and conf.parse_yes_no(
                root_disk, where + "ROOT_DISK: "):
            hard = self.diskspace[1] if self.diskspace else None
            entries.insert(0, conf.DiskEntry(
                uuid=None, enabled=True, size_kib=hard // 1024 if hard else None,
                mnt=b"/", image=ROOT_HDD, device=None))
        entries.sort(key=lambda d: d.mnt != b"/")
        return [d for d in entries if d.enabled]

    @property
    def label(self):
        """How messages name the container: ``'name' (uuid)``, or its CTID."""
        ident = self.uuid or self.ctid
        return "%r (%s)" % (self.name, ident) if self.name else ident

    def __repr__(self):
        return "<Container %s>" % self.label

    def _root_disk_dir(self):
        if self.layout_version < PLOOP_LAYOUT:
            raise UnsupportedLayout(
                "container %s uses the simfs layout (%s/%s gives layout %d); only ploop "
                "containers (layout 5) are supported"
                % (self.label, show(self.ve_private), show(LAYOUT_LINK), self.layout_version))
        found = ", ".join(_describe_disk(d) for d in self.disks) or "no enabled disk"
        if len(self.disks) != 1 or self.disks[0].mnt != b"/" or self.disks[0].image is None:
            raise UnsupportedLayout(
                "container %s has %s; only a single ploop root disk is supported"
                % (self.label, found))
        return os.path.join(self.ve_private, self.disks[0].image)

    @property
    def disk_descriptor(self):
        """The root disk's DiskDescriptor.xml (real path); UnsupportedLayout if the
        container is not a single ploop root disk."""
        path = self.host.resolve(os.path.join(self._root_disk_dir(), DESCRIPTOR_NAME))
        if not os.path.isfile(path):
            raise HostError("container %s: its root disk has no %s (looked for %s)"
                            % (self.label, show(DESCRIPTOR_NAME), show(self.host.view(path))))
        return path

    def _read_descriptor(self):
        # Images named by absolute path in the descriptor are taken as real paths, as
        # libploop does; VZ7 and the sandbox name them relative to the descriptor.
        if self._descriptor is None:
            try:
                descriptor = read_descriptor(self.disk_descriptor)
                self._descriptor = descriptor.size, descriptor.chain()[-1].file
            except ImageError as e:
                raise HostError("container %s: %s" % (self.label, e))
        return self._descriptor

    @property
    def disk_size(self):
        """The root disk's virtual size in bytes (``Disk_size`` of the descriptor)."""
        return self._read_descriptor()[0]

    @property
    def base_image(self):
        """The real path of the root disk's base delta (the bottom of the top's chain:
        what a ploop device shows as ``pdelta/0``)."""
        return self._read_descriptor()[1]


def _describe_disk(disk):
    where = disk.image if disk.image is not None else b"device " + disk.device
    return "a disk %s mounted at %s" % (show(where), show(disk.mnt or b"(nowhere)"))
