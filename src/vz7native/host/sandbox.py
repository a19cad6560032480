"""A sandbox VZ7 host: a directory that looks like a Virtuozzo 7 host on disk.

Used by the tests and by ``make demo``. ``Sandbox.build(root, count, seed)`` writes

* ``/etc/vz/vz.conf`` and, per container, ``/vz/private/<UUID>/`` with ``ve.conf``,
  ``.ve.layout`` (5), ``.owner``, ``scripts/``, ``dump/`` and ``root.hdd/`` holding a
  real ploop image (``vz7native.image.make_ct_disk``) of a template tree with every
  file kind (``write_tree``), the ``/etc/vz/conf/<UUID>.conf`` link and the
  ``/etc/vz/names/<name>`` link, and an empty ``/vz/root/<UUID>``;
* the template tree itself under ``/.sandbox/trees/<UUID>`` (what the image holds:
  tests compare restores with it);
* the kernel files ``vz7native.host.status`` reads, for the state each container is
  put in (``stage``).

A *running* container looks to ``status`` as on a real host: ``ve.state`` says
``RUNNING``, the freezer ``THAWED``, a ``/sys/block/ploopN`` device holds its base
image and is running, and its ``VE_ROOT`` is a real mount showing its files: a bind
mount of its template tree (read-write like a real running container; writes there
do not reach the image, which needs the ploop driver to be written live).

Everything is deterministic from ``seed``: UUIDs, names, tree contents, modes,
owners, times. ``close()`` (or leaving the ``with`` block) unmounts what was staged;
``cleanup(root)`` does the same for a sandbox left behind by a crashed run (it only
touches mounts under ``root``). Needs root (device nodes, owners, mounts).
"""
import os
import random
import shutil
import stat
import struct
import subprocess

from vz7native.host import Host, procfs, status

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


def fake_uuid(rnd):
    """A version-4 UUID string from ``rnd`` (``uuid`` is not imported: it loads ctypes on 3.6)."""
    value = rnd.getrandbits(128)
    value = (value & ~(0xF << 76)) | (4 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    text = "%032x" % value
    return "-".join((text[:8], text[8:12], text[12:16], text[16:20], text[20:]))


def _random_bytes(rnd, size):
    return rnd.getrandbits(8 * size).to_bytes(size, "little") if size else b""


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
# The template tree

# POSIX ACL xattr (system.posix_acl_*): version 2, then (tag u16, perm u16, id u32)
# entries in tag order.
_ACL_TAGS = {"user_obj": 0x01, "user": 0x02, "group_obj": 0x04, "group": 0x08,
             "mask": 0x10, "other": 0x20}
_NO_ID = 0xFFFFFFFF


def _acl(*entries):
    data = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        data += struct.pack("<HHI", _ACL_TAGS[tag], perm, _NO_ID if ident is None else ident)
    return data


def write_tree(path, seed):
    """Write a container's file tree into the empty or missing directory ``path``.

    It has every kind of entry a backup must keep: regular, empty and sparse files,
    hard links, symlinks (relative, absolute as the container sees them, to a
    directory, dangling), a FIFO, character and block devices, names that are not
    UTF-8, user/trusted xattrs and POSIX ACLs (default ACL on a directory too),
    setuid/setgid/sticky modes, several owners, a deep directory chain, and a VZ7-like
    skeleton (/etc, /var, /home, /root, /tmp, /dev, /usr). The same seed writes the
    same tree (names, bytes, modes, owners, xattrs, times). Needs root."""
    path = os.fsencode(path)
    rnd = random.Random(seed)
    os.makedirs(path, exist_ok=True)
    p = lambda rel: os.path.join(path, rel)  # noqa: E731
    for d, mode in ((b"etc", 0o755), (b"etc/sysconfig", 0o755), (b"var/log", 0o755),
                    (b"var/spool/mail", 0o775), (b"home/alice/docs", 0o700), (b"home/bob", 0o750),
                    (b"root", 0o550), (b"tmp", 0o1777), (b"dev", 0o755), (b"usr/bin", 0o755),
                    (b"usr/lib64", 0o755), (b"run", 0o755), (b"srv/share", 0o2775)):
        os.makedirs(p(d), exist_ok=True)
        os.chmod(p(d), mode)
    hostname = "ct-%d" % seed
    _write(p(b"etc/hostname"), hostname.encode() + b"\n")
    _write(p(b"etc/os-release"), b'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\n')
    _write(p(b"etc/passwd"), b"root:x:0:0:root:/root:/bin/bash\n"
           b"apache:x:48:48:Apache:/usr/share/httpd:/sbin/nologin\n"
           b"alice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/bash\n")
    _write(p(b"etc/shadow"), b"root:!!:19000:0:99999:7:::\n", 0o000)
    _write(p(b"etc/sysconfig/network"), b"NETWORKING=yes\nHOSTNAME=%s\n" % hostname.encode())
    _write(p(b"etc/empty.conf"), b"")
    _write(p(b"usr/bin/passwd"), b"\x7fELF" + _random_bytes(rnd, 4092), 0o4755)
    _write(p(b"usr/bin/wall"), b"\x7fELF" + bytes(4092), 0o2755)
    _write(p(b"usr/bin/ping"), b"\x7fELF" + bytes(2044), 0o755)
    os.setxattr(p(b"usr/bin/ping"), "security.capability",
                struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))  # cap_net_raw+ep
    _write(p(b"usr/lib64/libdemo.so.1.0"), _random_bytes(rnd, 8192))
    _symlink(b"libdemo.so.1.0", p(b"usr/lib64/libdemo.so.1"))
    # Logs: a sparse file with data at both ends, a plain one, an empty one.
    with open(p(b"var/log/lastlog"), "wb") as f:
        f.write(b"head")
        f.seek(32 << 20)
        f.write(b"tail")
    _write(p(b"var/log/messages"), b"".join(
        b"Jan %2d 02:00:%02d %s kernel: line %d\n" % (1 + i % 28, i % 60, hostname.encode(), i)
        for i in range(rnd.randint(200, 400))))
    _write(p(b"var/log/boot.log"), b"")
    _write(p(b"var/spool/mail/alice"), b"From root\nSubject: hi\n\nhello\n", 0o660)
    # Hard links: three names of one file, across directories.
    _write(p(b"home/alice/docs/report.txt"), b"quarterly report %d\n" % rnd.getrandbits(32))
    os.link(p(b"home/alice/docs/report.txt"), p(b"home/alice/docs/report-copy.txt"))
    os.link(p(b"home/alice/docs/report.txt"), p(b"home/bob/report-link.txt"))
    # Names that are not UTF-8 (Latin-1 and a lone continuation byte).
    _write(p(b"home/alice/docs/caf\xe9.txt"), b"latin-1 name\n")
    _write(p(b"home/alice/docs/K\xdcBLER.csv"), b"a;b\n1;2\n")
    os.makedirs(p(b"home/bob/\x80dir"), exist_ok=True)
    _write(p(b"home/bob/\x80dir/inside"), b"x\n")
    _write(p(b"home/alice/\xe2\x9c\x93 done.txt"), b"utf-8 name with a space\n")
    # Symlinks: relative, absolute (the container's own /etc), to a directory, dangling.
    _symlink(b"../../etc/os-release", p(b"home/alice/os-release"))
    _symlink(b"/etc/hostname", p(b"root/hostname"))
    _symlink(b"docs", p(b"home/alice/documents"))
    _symlink(b"/nonexistent/target", p(b"home/bob/dangling"))
    _symlink(b"../run", p(b"var/run"))
    # Special files.
    os.mkfifo(p(b"run/initctl"), 0o600)
    for name, mode, major, minor in ((b"null", stat.S_IFCHR | 0o666, 1, 3),
                                     (b"zero", stat.S_IFCHR | 0o666, 1, 5),
                                     (b"tty", stat.S_IFCHR | 0o666, 5, 0),
                                     (b"loop0", stat.S_IFBLK | 0o660, 7, 0),
                                     (b"ploop12345p1", stat.S_IFBLK | 0o660, 182, 197521)):
        os.mknod(p(b"dev/" + name), mode, os.makedev(major, minor))
        os.chmod(p(b"dev/" + name), mode & 0o7777)
    # xattrs and ACLs.
    os.setxattr(p(b"home/alice/docs/report.txt"), "user.origin", b"sandbox seed %d" % seed)
    os.setxattr(p(b"home/alice/docs/report.txt"), "trusted.vz7native", b"\x00\x01binary\xff")
    os.setxattr(p(b"srv/share"), "user.comment", b"shared")
    _write(p(b"srv/share/notes"), b"shared notes\n", 0o664)
    os.setxattr(p(b"srv/share/notes"), "system.posix_acl_access", _acl(
        ("user_obj", 6, None), ("user", 6, 1001), ("group_obj", 4, None),
        ("mask", 6, None), ("other", 4, None)))
    os.setxattr(p(b"srv/share"), "system.posix_acl_default", _acl(
        ("user_obj", 7, None), ("group_obj", 5, None), ("group", 5, 48),
        ("mask", 7, None), ("other", 0, None)))
    # A deep chain of directories.
    deep = p(b"var/lib/deep")
    for level in range(24):
        deep = os.path.join(deep, b"level%02d" % level)
    _write(os.path.join(deep, b"bottom"), b"the bottom\n")
    # Random files (the part that differs between seeds).
    for i in range(rnd.randint(5, 10)):
        _write(p(b"srv/data-%02d.bin" % i), _random_bytes(rnd, rnd.choice((0, 1, 511, 4096, 65537))))
    # Owners, then the modes that chown clears (setuid/setgid), then times.
    owners = {b"home/alice": (1000, 1000), b"home/bob": (1001, 1001),
              b"var/spool/mail/alice": (1000, 12), b"srv/share": (48, 48),
              b"srv/share/notes": (1001, 48), b"usr/bin/wall": (0, 5)}
    for rel, (uid, gid) in owners.items():
        if os.path.isdir(p(rel)) and rel.startswith(b"home/"):
            for base, dirs, files in os.walk(p(rel)):
                for name in dirs + files:
                    os.lchown(os.path.join(base, name), uid, gid)
        os.lchown(p(rel), uid, gid)
    for rel, mode in ((b"usr/bin/passwd", 0o4755), (b"usr/bin/wall", 0o2755), (b"srv/share", 0o2775)):
        os.chmod(p(rel), mode)
    _set_times(path, 1500000000 + (seed % 1000) * 86400)


def _set_times(path, base):
    entries = []
    for top, dirs, files in os.walk(path):
        for name in files + dirs:
            entries.append(os.path.join(top, name))
    entries.sort()
    for i, entry in enumerate(reversed(entries + [path])):  # children before parents
        when = (base + i * 3607) * 10 ** 9 + (i * 7919 % 10 ** 9)
        os.utime(entry, ns=(when, when), follow_symlinks=False)


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
            shutil.rmtree(root)
        elif os.path.exists(root) and os.listdir(root):
            raise FileExistsError("%s exists and is not a sandbox host" % os.fsdecode(root))
        for d in (b"etc/vz/conf", b"etc/vz/names", b"vz/private", b"vz/root", b"vz/lock",
                  b"vz/dump", b"vz/template", b"sys/fs/cgroup/ve",
                  b"sys/fs/cgroup/freezer/machine.slice", b"sys/block", b"var/lock",
                  b"var/run", b"var/log", b".sandbox/trees"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
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
        from vz7native.image import make_ct_disk  # the image room is needed only here

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
        _symlink(private + b"/ve.conf", real(b"/etc/vz/conf/%s.conf" % ctid.encode()))
        _symlink(b"/etc/vz/conf/%s.conf" % ctid.encode(),
                 real(b"/etc/vz/names/" + name.encode()))

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
            if os.path.exists(attached) and open(attached, "rb").read().strip() == image:
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

