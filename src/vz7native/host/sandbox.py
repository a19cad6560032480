"""A sandbox VZ7 host: a directory that looks like a Virtuozzo 7 host on disk.

For the tests and the demo. ``Sandbox.build(root, count, seed)`` writes

* ``/etc/vz/vz.conf`` and, per container, ``/vz/private/<UUID>/`` with ``ve.conf``,
  ``.ve.layout`` (5), ``.owner``, ``scripts/``, ``dump/`` and ``root.hdd/`` holding a
  real ploop image (``vz7native.image.make_ct_disk``) of a template tree with every
  file kind (``vz7native.host.tree.write_tree``), the ``/etc/vz/conf/<UUID>.conf``
  link and the ``/etc/vz/names/<name>`` link, and an empty ``/vz/root/<UUID>``;
* the template tree itself under ``/.sandbox/trees/<UUID>`` (what the image holds:
  tests compare restores with it);
* the kernel files ``vz7native.host.status`` reads, for the state each container is
  put in (``stage``).

A *running* container looks to ``status`` as on a real host: ``ve.state`` says
``RUNNING``, the freezer ``THAWED``, a ``/sys/block/ploopN`` device holds its base
image and is running, and its ``VE_ROOT`` is a real mount showing its files: a bind
mount of its template tree (read-write like a real running container; writes there
do not reach the image, which needs the ploop driver to be written live).

``register(private)`` registers a container restored into the sandbox as
``prlctl register`` does on a real host (the ``/etc/vz/conf`` and
``/etc/vz/names`` links), ``unregister(ctid, name)`` removes those links: no
tool of the host is run. ``write_prlctl(bin_dir)`` writes a ``prlctl`` that
does the same for another process (the Bareos plugin's restore=ct): with
``bin_dir`` first in its ``PATH`` it registers in this sandbox and nowhere else.

Everything is deterministic from ``seed``: UUIDs, names, tree contents, modes,
owners, times. ``close()`` (or leaving the ``with`` block) unmounts what was staged;
``cleanup(root)`` does the same for a sandbox left behind by a crashed run (it only
touches mounts under ``root``). Needs root (device nodes, owners, mounts).
"""
import os
import random
import shlex
import shutil
import subprocess
import sys

from vz7native import procfs
from vz7native.host import Host, status
from vz7native.host.conf import read_conf
from vz7native.host.tree import write_tree
from vz7native.image import make_ct_disk

MARKER = b".vz7native-sandbox"
TREES = b"/.sandbox/trees"
NAMES = ("web", "db", "mail", "cache", "build", "vpn", "dns", "files")
DEFAULT_DISK_SIZE = 128 << 20
FIRST_PLOOP_MINOR = 12345

VZ_CONF = b"""## Global parameters (a sandbox VZ7 host)
VIRTUOZZO=yes
LOCKDIR=/vz/lock
DUMPDIR=/vz/dump
VE0CPUUNITS=1000

## Logging parameters
LOGGING=yes
LOGFILE=/var/log/vzctl.log
LOG_LEVEL=0

## Template parameters
TEMPLATE=/vz/template

## Defaults for containers
VE_ROOT=/vz/root/$VEID
VE_PRIVATE=/vz/private/$VEID
CONFIGFILE="basic"
DEF_OSTEMPLATE=".centos-7"
VEFSTYPE="ext4"
"""

VE_CONF = """# Configuration of container {name} (a sandbox VZ7 host).

VERSION="2"

ONBOOT="no"

PHYSPAGES="65536:65536"
SWAPPAGES="0:131072"

DISKSPACE="{kib}:{kib}"
DISKINODES="131072:131072"
QUOTATIME="0"

CPUUNITS="1000"
NETFILTER="stateless"

VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
VE_TYPE="regular"
OSTEMPLATE=".centos-7-x86_64"
ORIGIN_SAMPLE="vswap.256MB"
HOSTNAME="{name}.sandbox.example"
NAME="{name}"
VEID="{ctid}"
"""


PRLCTL_SCRIPT = """#!/bin/sh
# prlctl of a sandbox VZ7 host (vz7native.host.sandbox): registers there as
# prlctl register does on a real host; the host's own prlctl is not run.
exec %(python)s -c 'import sys; from vz7native.host.sandbox import prlctl_main; sys.exit(prlctl_main(sys.argv[1:]))' %(root)s "$@"
"""


def fake_uuid(rnd):
    """A version-4 UUID string from ``rnd`` (``uuid`` is not imported: it loads ctypes on 3.6)."""
    value = rnd.getrandbits(128)
    value = (value & ~(0xF << 76)) | (4 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    text = "%032x" % value
    return "-".join((text[:8], text[8:12], text[12:16], text[16:20], text[20:]))


def _write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _symlink(target, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


# ---------------------------------------------------------------------------
# Mounts

def _mount_points_under(root):
    prefix = os.path.realpath(root).rstrip(b"/") + b"/"
    return [m.mount_point for m in procfs.mounts() if m.mount_point.startswith(prefix)]


def cleanup(root):
    """Unmount every mount under ``root`` (deepest first): what a sandbox staged,
    including after a crash."""
    for point in sorted(set(_mount_points_under(os.fsencode(root))), key=len, reverse=True):
        subprocess.check_call(["umount", "--lazy", os.fsdecode(point)])


# ---------------------------------------------------------------------------
# The host

class Sandbox(object):
    """A sandbox host at ``root``: ``host`` (a ``Host``), ``containers`` (in build
    order), ``tree(ct)``, ``stage(ct, state)``, ``close()``."""

    def __init__(self, root):
        self.root = os.path.abspath(os.fsencode(root))
        self.host = Host(self.root)
        self.containers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        cleanup(self.root)

    @classmethod
    def create(cls, root):
        """An empty sandbox host (the VZ7 skeleton, no container)."""
        root = os.path.abspath(os.fsencode(root))
        if os.path.exists(os.path.join(root, MARKER)):
            cleanup(root)
            left = _mount_points_under(root)
            if left:  # never let rmtree cross into a mount
                raise OSError("cannot reuse sandbox %s: still mounted: %s" % (
                    os.fsdecode(root), ", ".join(os.fsdecode(p) for p in left)))
            shutil.rmtree(root)
        elif os.path.exists(root) and os.listdir(root):
            raise FileExistsError("%s exists and is not a sandbox host" % os.fsdecode(root))
        for d in (b"etc/vz/conf", b"etc/vz/names", b"vz/private", b"vz/root", b"vz/lock",
                  b"vz/dump", b"vz/template", b"sys/fs/cgroup/ve",
                  b"sys/fs/cgroup/freezer/machine.slice", b"sys/block", b"var/lock",
                  b"var/run", b"var/log", b".sandbox/trees"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.makedirs(os.path.join(root, b"tmp"), exist_ok=True)
        os.chmod(os.path.join(root, b"tmp"), 0o1777)
        _write(os.path.join(root, MARKER), b"a sandbox VZ7 host made by vz7native.host.sandbox\n")
        _write(os.path.join(root, b"etc/vz/vz.conf"), VZ_CONF)
        return cls(root)

    @classmethod
    def build(cls, root, count=3, seed=0, running=(0,), disk_size=DEFAULT_DISK_SIZE,
              tree_builder=write_tree):
        """A sandbox host with ``count`` containers, each with a ploop image of its
        template tree (``tree_builder(path, seed)``); those whose index is in
        ``running`` are staged running, the others stopped."""
        sandbox = cls.create(root)
        rnd = random.Random(seed)
        try:
            for index in range(count):
                name = "%s%02d" % (NAMES[index % len(NAMES)], index + 1)
                ct = sandbox.add_container(fake_uuid(rnd), name, seed=seed * 1000 + index,
                                           disk_size=disk_size, tree_builder=tree_builder)
                sandbox.stage(ct, status.RUNNING if index in running else status.STOPPED)
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def add_container(self, ctid, name, seed=0, disk_size=DEFAULT_DISK_SIZE,
                      tree_builder=write_tree, extra_config=b""):
        """Add a container: its tree (if ``tree_builder``), its image, its
        configuration (``extra_config``: more ``ve.conf`` lines). Returns it."""
        self.write_container(ctid, name, disk_size, extra_config)
        tree = self.tree_path(ctid)
        os.makedirs(tree)
        if tree_builder is not None:
            tree_builder(tree, seed)
        make_ct_disk(tree, disk_size, self.host.real(b"/vz/private/%s/root.hdd" % ctid.encode()))
        ct = self.host.load(ctid)
        self.containers.append(ct)
        return ct

    def write_container(self, ctid, name, disk_size=DEFAULT_DISK_SIZE, extra_config=b""):
        """The configuration side of a container: private area, ``ve.conf``, links."""
        real = self.host.real
        private = b"/vz/private/" + ctid.encode()
        text = VE_CONF.format(name=name, ctid=ctid, kib=disk_size // 1024).encode()
        _write(real(private + b"/ve.conf"), text + extra_config)
        _symlink(b"5", real(private + b"/.ve.layout"))
        _write(real(private + b"/.owner"), b"sandbox.example\n")
        for d in (b"/scripts", b"/dump", b"/root.hdd"):
            os.makedirs(real(private + d), exist_ok=True)
        os.makedirs(real(b"/vz/root/" + ctid.encode()), exist_ok=True)
        self._link(private, ctid, name)

    def registration_links(self, ctid, name):
        """Real paths of the registration links of a container: its
        ``/etc/vz/conf`` link and, if it has a name, its ``/etc/vz/names`` link."""
        links = [self.host.real(b"/etc/vz/conf/%s.conf" % ctid.encode())]
        if name:
            links.append(self.host.real(b"/etc/vz/names/" + os.fsencode(name)))
        return links

    def _link(self, private, ctid, name):
        links = self.registration_links(ctid, name)
        _symlink(private + b"/ve.conf", links[0])
        if name:
            _symlink(b"/etc/vz/conf/%s.conf" % ctid.encode(), links[1])

    def register(self, private, timeout=None, ctid=None):
        """Register the container whose private area is ``private`` (a host path)
        in this sandbox, as ``prlctl register`` does on a real host: the
        ``/etc/vz/conf`` and ``/etc/vz/names`` links (the name from its
        ``ve.conf``). The signature of :func:`vz7native.host.register_container`;
        ``timeout`` is not needed here."""
        private = os.fsencode(private).rstrip(b"/")
        ctid = ctid or os.fsdecode(os.path.basename(private))
        config = read_conf(self.host.real(private + b"/ve.conf"))
        self._link(private, ctid, config.get("NAME"))

    def write_prlctl(self, bin_dir):
        """Write ``<bin_dir>/prlctl`` (returned): ``prlctl register <private>
        [--preserve-uuid]`` registers in this sandbox (:func:`prlctl_main`), with
        this Python and nothing of the host's; every other use fails."""
        path = os.path.join(os.fsencode(bin_dir), b"prlctl")
        script = PRLCTL_SCRIPT % {"python": shlex.quote(sys.executable),
                                  "root": shlex.quote(os.fsdecode(self.root))}
        _write(path, os.fsencode(script), 0o755)
        return path

    def unregister(self, ctid, name):
        """Remove the registration links of container ``ctid`` called ``name``
        (those that are there); what :meth:`register` made."""
        for link in self.registration_links(ctid, name):
            if os.path.islink(link):
                os.unlink(link)

    def tree_path(self, ctid):
        return self.host.real(b"%s/%s" % (TREES, ctid.encode()))

    def tree(self, ct):
        """The real path of the template tree of ``ct`` (what its image holds)."""
        return self.tree_path(ct.ctid)

    # -- state signals ---------------------------------------------------------

    def _ve_dir(self, ct):
        return self.host.real(b"/sys/fs/cgroup/ve/" + ct.ctid.encode())

    def _freezer_dir(self, ct):
        return self.host.real(b"/sys/fs/cgroup/freezer/machine.slice/" + ct.ctid.encode())

    def _ploop_devices(self, ct):
        """Real paths of the staged /sys/block/ploopN of ``ct``."""
        base = self.host.real(status.SYS_BLOCK)
        image = os.path.realpath(ct.base_image)
        found = []
        for dev in sorted(os.listdir(base)):
            attached = os.path.join(base, dev, b"pdelta/0/image")
            if os.path.exists(attached):
                with open(attached, "rb") as f:
                    if f.read().strip() == image:
                        found.append(os.path.join(base, dev))
        return found

    def _attach_ploop(self, ct):
        if self._ploop_devices(ct):
            return
        base = self.host.real(status.SYS_BLOCK)
        minor = FIRST_PLOOP_MINOR
        while os.path.exists(os.path.join(base, b"ploop%d" % minor)):
            minor += 1
        dev = os.path.join(base, b"ploop%d" % minor)
        _write(os.path.join(dev, b"pdelta/0/image"), os.path.realpath(ct.base_image) + b"\n")
        _write(os.path.join(dev, b"pstate/running"), b"1\n")

    def _mount_root(self, ct):
        if os.path.realpath(ct.root) not in _mount_points_under(self.root):
            subprocess.check_call(["mount", "--bind", os.fsdecode(self.tree(ct)),
                                   os.fsdecode(ct.root)])

    def _unmount_root(self, ct):
        if os.path.realpath(ct.root) in _mount_points_under(self.root):
            subprocess.check_call(["umount", os.fsdecode(ct.root)])

    def stage(self, ct, state):
        """Make the host show ``ct`` in ``state``: one of ``status.STOPPED``,
        ``RUNNING``, ``MOUNTED``, ``SUSPENDED`` (stopped with a checkpoint dump),
        ``"frozen"`` (running, freezer FROZEN), ``"starting"``/``"stopping"``
        (the kernel's transitional ve states)."""
        ve_state = {status.RUNNING: b"RUNNING", "frozen": b"RUNNING",
                    "starting": b"STARTING", "stopping": b"STOPPING"}.get(state)
        if ve_state is None and state not in (status.STOPPED, status.MOUNTED, status.SUSPENDED):
            raise ValueError("cannot stage state %r" % (state,))
        if ve_state is None:
            shutil.rmtree(self._ve_dir(ct), ignore_errors=True)
            shutil.rmtree(self._freezer_dir(ct), ignore_errors=True)
        else:
            _write(os.path.join(self._ve_dir(ct), b"ve.state"), ve_state + b"\n")
            _write(os.path.join(self._freezer_dir(ct), b"freezer.state"),
                   b"FROZEN\n" if state == "frozen" else b"THAWED\n")
        dump = os.path.join(ct.private, b"dump/Dump")
        if state == status.SUSPENDED:
            _write(dump, b"CRIU image of a suspended sandbox container\n", 0o600)
        elif os.path.exists(dump):
            os.unlink(dump)
        if state in (status.RUNNING, status.MOUNTED, "frozen", "stopping"):
            self._attach_ploop(ct)
            self._mount_root(ct)
        else:
            self._unmount_root(ct)
            for dev in self._ploop_devices(ct):
                shutil.rmtree(dev)

    def stage_vzctl_lock(self, ct, operation, pid=None):
        """vzctl's lock file of ``ct``, as vzctl writes it while it works on the
        container (``pid`` default: this process). ``operation`` None removes it."""
        path = self.host.real(b"/vz/lock/%s.lck" % ct.ctid.encode())
        if operation is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        _write(path, b"%d\n%s\n" % (os.getpid() if pid is None else pid, operation.encode()))



def prlctl_main(argv):
    """What the ``prlctl`` of :meth:`Sandbox.write_prlctl` does: ``argv`` is the
    sandbox root, then prlctl's arguments. Returns the exit status."""
    root, args = argv[0], argv[1:]
    if len(args) not in (2, 3) or args[0] != "register" or args[2:] not in ([], ["--preserve-uuid"]):
        sys.stderr.write("prlctl of the sandbox host %s: only 'register <private> "
                         "[--preserve-uuid]' is served, not %r\n" % (root, args))
        return 2
    sandbox = Sandbox(root)
    private = os.fsencode(args[1])
    if not os.path.exists(os.path.join(sandbox.root, MARKER)):
        sys.stderr.write("prlctl: %s is not a sandbox host\n" % root)
        return 1
    if not os.path.isfile(sandbox.host.real(private.rstrip(b"/") + b"/ve.conf")):
        sys.stderr.write("prlctl: no container in %s of the sandbox host %s\n"
                         % (os.fsdecode(private), root))
        return 1
    sandbox.register(private)
    print("The CT has been successfully registered.")
    return 0
