"""A container's file tree with every kind of entry, for sandbox hosts and tests.

``write_tree(path, seed)`` fills an empty directory with what a backup must keep:
regular, empty, sparse and large files, hard links (one across directories),
symlinks (relative, absolute as the container sees them, to a directory,
dangling; one owned by someone else), a FIFO, a socket, character and block
devices, names that are not UTF-8, a 255-byte name, a UTF-8 name with a blank
and names with control characters, user/trusted xattrs (one value holding every
byte), a file capability, POSIX ACLs (access, and a default one on a
directory), setuid/setgid/sticky modes and a file with none, several owners, a
directory 100 levels deep, one with 300 entries, and a CentOS-7-like skeleton
(``/etc``, ``/root``, ``/usr``, ``/var/log``, ``/var/run`` -> ``../run``,
``/home``, ``/dev``, ``/tmp``), hard-linked symlinks and FIFOs, and entries dated
at the edges of what a filesystem keeps (``ODD_TIMES``: before 1970, past
2038-01-19 03:14:07, up to 2446, with nanoseconds) below ``srv/times``.

The same seed writes the same tree, down to the bytes, modes, owners, xattrs and
times (everything but ``srv/times`` dated ``OLD_MTIME``); the seed changes the
hostname and a few data files, so that the containers of one sandbox differ. Needs root (device
nodes, owners, the ``security.capability`` and ``trusted.*`` xattrs) and
``setfacl``.

``describe(root)`` gives a comparable picture of a tree (kinds, modes, owners,
sizes, device numbers, mtimes in nanoseconds, symlink targets, xattrs and ACLs,
content hashes, hard-link groups, sparseness; access times are left out:
listing a directory sets them) and ``compare_trees(expected, actual)`` lists
every difference between two trees, entry by entry: for tests, and for
``vz7ploop selftest``, which checks what an image shows against what was
written.
"""
import hashlib
import os
import random
import socket
import stat
import subprocess

NON_UTF8_DIR = b"caf\xe9-\xff\xfe"
NON_UTF8_FILE = b"r\xe9sum\xe9\x80.txt"
# Valid UTF-8, but awkward for anything that splits lines or trims blanks.
ODD_NAMES = (b"new\nline", b"tab\there", b" leading space")
DEEP_LEVELS = 100
MANY_ENTRIES = 300
OLD_MTIME = 981173106  # 2001-02-03 04:05:06 UTC
# Names below srv/times and their access = modification times in nanoseconds since
# the epoch. ext4 keeps them only in 256-byte inodes (1901-12-13 .. 2446-05-10).
ODD_TIMES = (
    (b"1901", -2147472000 * 10 ** 9 + 123456789),      # 1901-12-14 00:00:00.123456789
    (b"1960", -301233600 * 10 ** 9 + 250000000),       # 1960-06-15 12:00:00.25
    (b"minus-1s", -1 * 10 ** 9 + 1),                   # 1969-12-31 23:59:59.000000001
    (b"2038", 2147483648 * 10 ** 9 + 7),               # 2038-01-19 03:14:08.000000007
    (b"2100", 4102444800 * 10 ** 9 + 987654321),       # 2100-01-01 00:00:00.987654321
    (b"2446", 15032304000 * 10 ** 9 + 999999999),      # 2446-05-10 00:00:00.999999999
)
TIMES_DIR = b"srv/times"
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service


def write_file(path, data, mode=0o644, uid=0, gid=0, mtime=OLD_MTIME):
    """Write ``data`` to ``path`` with this owner, mode and mtime."""
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def random_bytes(seed, size):
    """``size`` pseudo-random bytes from ``seed`` (a 4 KiB block repeated)."""
    rng = random.Random(seed)
    block = rng.getrandbits(8 * 4096).to_bytes(4096, "little")
    return (block * (-(-size // 4096)))[:size]


def set_dir_times(root):
    """Date every directory under ``root`` (and ``root``) ``OLD_MTIME``."""
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.utime(dirpath, (OLD_MTIME, OLD_MTIME))


def _set_all_times(root):
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (OLD_MTIME, OLD_MTIME), follow_symlinks=False)
    os.utime(root, (OLD_MTIME, OLD_MTIME))


def odd_dates():
    """(path below ``TIMES_DIR``, access = modification time in ns) of every entry
    dated from ``ODD_TIMES``. The directory and the symlink are dated in the past:
    with a future mtime, every listing or readlink would move their atime (relatime)."""
    by_name = dict(ODD_TIMES)
    return list(ODD_TIMES) + [
        (b"dir-1960/inside", by_name[b"minus-1s"]), (b"dir-1960", by_name[b"1960"]),
        (b"symlink-1901", by_name[b"1901"]), (b"fifo-2038", by_name[b"2038"])]


def _write_odd_times(root):
    """``srv/times``: a file per ``ODD_TIMES`` entry, and a directory, a symlink and
    a hard-linked FIFO pair with some of those times (see :func:`_date_odd_times`)."""
    times = os.path.join(root, TIMES_DIR)
    os.mkdir(times)
    for name, _ in ODD_TIMES:
        write_file(os.path.join(times, name), b"dated " + name + b"\n")
    os.mkdir(os.path.join(times, b"dir-1960"))
    write_file(os.path.join(times, b"dir-1960", b"inside"), b"a directory's time is set last\n")
    os.symlink(b"2100", os.path.join(times, b"symlink-1901"))
    os.mkfifo(os.path.join(times, b"fifo-2038"), 0o600)
    os.link(os.path.join(times, b"fifo-2038"), os.path.join(times, b"fifo-2038.link"))


def _date_odd_times(root):
    """Give ``srv/times`` its dates, after everything else is dated ``OLD_MTIME``
    (a time set on an entry leaves its directory's alone)."""
    for name, ns in odd_dates():
        os.utime(os.path.join(root, TIMES_DIR, name), ns=(ns, ns), follow_symlinks=False)


def _make_socket(directory, name):
    # A socket path is limited to 108 bytes: bind through the directory's fd.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(b"/proc/self/fd/%d/%s" % (dir_fd, name))
    finally:
        sock.close()
        os.close(dir_fd)


def write_tree(root, seed=0):
    """Fill the existing, empty directory ``root`` (str or bytes) with the tree."""
    root = os.fsencode(root)
    rnd = random.Random(seed)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    for d in (b"etc", b"etc/sysconfig", b"home", b"home/user", b"var", b"var/lib", b"var/log",
              b"var/spool", b"var/spool/mail", b"dev", b"srv", b"tmp", b"run", b"root", b"usr",
              b"usr/bin", b"usr/lib64", NON_UTF8_DIR):
        os.mkdir(j(d))
    write_file(j(b"etc/hostname"), b"ct%d\n" % (101 + seed))
    write_file(j(b"etc/empty"), b"")
    write_file(j(b"etc/shadow"), b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42)
    write_file(j(b"etc/passwd"), b"root:x:0:0:root:/root:/bin/bash\n"
               b"www-data:x:33:33:www-data:/var/www:/sbin/nologin\n"
               b"user:x:1000:1000::/home/user:/bin/bash\n")
    write_file(j(b"etc/os-release"), b'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\n')
    write_file(j(b"etc/sysconfig/network"), b"NETWORKING=yes\n")
    write_file(j(b"home/user/notes.txt"), b"first version\n" * 100, uid=1000, gid=1000)
    write_file(j(b"home/user/random.bin"), random_bytes(1, 3 << 20 | 123), uid=1000, gid=1000)
    write_file(j(b"home/user/\xe2\x9c\x93 done.txt"), b"a UTF-8 name with a blank\n",
               uid=1000, gid=1000)
    write_file(j(b"var/spool/mail/user"), b"From root\n\nhello\n", mode=0o660, uid=1000, gid=12)
    write_file(j(b"var/log/messages"), b"".join(
        b"Feb  3 04:05:%02d ct%d kernel: line %d\n" % (n % 60, 101 + seed, n)
        for n in range(rnd.randint(100, 300))))
    write_file(j(b"var/log/boot.log"), b"")
    write_file(j(b"root/.bash_history"), b"vzctl --help\n", mode=0o600)
    write_file(j(b"usr/bin/passwd"), b"\x7fELF" + random_bytes(2, 8188), mode=0o4755)
    write_file(j(b"usr/lib64/libdemo.so.1.0"), random_bytes(3, 16384), mode=0o755)
    # Hard links, one across directories.
    write_file(j(b"var/lib/data"), b"linked content\n", uid=33, gid=33)
    os.link(j(b"var/lib/data"), j(b"var/lib/data.link"))
    os.link(j(b"var/lib/data"), j(b"srv/data.link"))
    # Symlinks: relative, absolute (the container's own /etc), to directories, dangling.
    os.symlink(b"../etc/hostname", j(b"srv/hostname"))
    os.symlink(b"/etc/shadow", j(b"srv/abs"))
    os.symlink(b"nowhere/at/all", j(b"srv/dangling"))
    os.symlink(b"libdemo.so.1.0", j(b"usr/lib64/libdemo.so.1"))
    os.symlink(b"../run", j(b"var/run"))
    os.symlink(b"/srv", j(b"home/user/srv"))
    os.chown(j(b"srv/hostname"), 33, 33, follow_symlinks=False)
    # Device nodes, FIFO, socket.
    os.mknod(j(b"dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(j(b"dev/sda1"), 0o660 | stat.S_IFBLK, os.makedev(8, 1))
    os.chown(j(b"dev/sda1"), 0, 6)
    os.mkfifo(j(b"tmp/fifo"), 0o620)
    _make_socket(j(b"tmp"), b"socket")
    # Hard links of a symlink and of a FIFO: one inode each, two names.
    os.symlink(b"../etc/os-release", j(b"srv/os-release"))
    os.link(j(b"srv/os-release"), j(b"etc/os-release.link"), follow_symlinks=False)
    os.link(j(b"tmp/fifo"), j(b"srv/fifo.link"))
    # Special modes.
    write_file(j(b"srv/setuid"), b"#!/bin/sh\n", mode=0o4755)
    write_file(j(b"srv/setgid"), b"#!/bin/sh\n", mode=0o2750, gid=50)
    os.chmod(j(b"tmp"), 0o1777)
    os.chmod(j(b"root"), 0o550)
    write_file(j(b"srv/locked"), b"no permissions at all\n", mode=0)
    # Names that are not UTF-8, a 255-byte name, control characters.
    write_file(j(NON_UTF8_DIR, NON_UTF8_FILE), b"latin-1 name\n", uid=65534, gid=65534)
    write_file(j(b"srv", b"n" * 255), b"long name\n")
    for name in ODD_NAMES:
        write_file(j(b"srv", name), b"odd name\n")
    # xattrs: user, trusted, security.capability (set after chown: chown drops it), ACLs.
    write_file(j(b"srv/xattr"), b"attributes\n", uid=1000, gid=1000)
    os.setxattr(j(b"srv/xattr"), b"user.comment", b"hello \xff world")
    os.setxattr(j(b"srv/xattr"), b"user.empty", b"")
    os.setxattr(j(b"srv/xattr"), b"user.binary", bytes(range(256)))
    os.setxattr(j(b"srv/xattr"), b"trusted.seed", b"%d" % seed)
    write_file(j(b"srv/ping"), b"\x7fELF", mode=0o755)
    os.setxattr(j(b"srv/ping"), b"security.capability", CAPABILITY)
    write_file(j(b"srv/acl"), b"acl\n")
    subprocess.check_call(["setfacl", "-m", "u:1234:rw,g:5678:r", j(b"srv/acl")])
    subprocess.check_call(["setfacl", "-d", "-m", "u:1234:rwx", j(b"home/user")])
    # A sparse file: data at both ends of 8 MiB.
    with open(j(b"var/lib/sparse.img"), "wb") as f:
        f.write(b"start")
        f.seek(8 << 20)
        f.write(b"end")
    # Deep nesting.
    deep = j(b"deep")
    os.mkdir(deep)
    for level in range(DEEP_LEVELS):
        deep = os.path.join(deep, b"level%02d" % level)
        os.mkdir(deep)
    write_file(os.path.join(deep, b"bottom"), b"deep down\n")
    # Many entries in one directory (hashed directory index in ext4).
    many = j(b"var/many")
    os.mkdir(many)
    for n in range(MANY_ENTRIES):
        write_file(os.path.join(many, b"file-%04d" % n), b"%d\n" % n)
    # What differs from one seed to the next.
    for n in range(rnd.randint(3, 8)):
        write_file(j(b"srv/seed-%02d.bin" % n), random_bytes(
            seed * 100 + n, rnd.choice((0, 1, 511, 4096, 65537))))
    _write_odd_times(root)
    _set_all_times(root)
    _date_odd_times(root)


# ---------------------------------------------------------------------------
# Comparing trees

def stat_properties(st):
    """What :func:`describe` takes of an entry's ``os.stat_result``: kind,
    permission bits, owner, mtime in nanoseconds, size (not for directories)
    and rdev (devices)."""
    kind = stat.S_IFMT(st.st_mode)
    props = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
             "gid": st.st_gid, "mtime": st.st_mtime_ns}
    if kind != stat.S_IFDIR:
        props["size"] = st.st_size
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        props["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return props


def describe(root, ignore=(b"lost+found",)):
    """``{relative path (bytes): properties}`` of every entry under ``root``.

    Properties are those a filesystem image keeps: kind, permission bits,
    owner, size (not for directories), rdev, mtime in nanoseconds, symlink
    target, xattrs (ACLs included), content hash, hard-link group (every path
    of an inode with more than one, sorted) and whether a file is sparse.
    """
    root = os.fsencode(root)
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in ignore]
        for name in sorted(dirnames + filenames) + ([b"."] if dirpath == root else []):
            path = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            props = stat_properties(st)
            if kind == stat.S_IFLNK:
                props["target"] = os.readlink(path)
            else:
                props["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                                   for k in sorted(os.listxattr(path, follow_symlinks=False))}
            if kind == stat.S_IFREG:
                digest = hashlib.sha256()
                with open(os.open(path, os.O_RDONLY | os.O_NOATIME), "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                props["sha256"] = digest.hexdigest()
                props["sparse"] = st.st_blocks * 512 < st.st_size
            if kind != stat.S_IFDIR and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
            entries[rel] = props
    for paths in inodes.values():
        for rel in paths:
            entries[rel]["links"] = sorted(paths)
    return entries


def compare_trees(expected, actual, ignore=(b"lost+found",)):
    """Every difference between the trees ``expected`` and ``actual``, entry by
    entry and property by property (see :func:`describe`), as a list of strings;
    empty when they are the same. ``ignore``: names left out at the top."""
    return picture_differences(describe(expected, ignore), describe(actual, ignore))


def picture_differences(want, got, same=None):
    """Every difference between two :func:`describe`-like pictures, as strings.
    ``same(key, expected, actual)``, when given, may accept values that differ."""
    problems = []
    for rel in sorted(set(want) | set(got)):
        shown = rel.decode("utf-8", "backslashreplace")
        if rel not in got:
            problems.append("%s: missing" % shown)
        elif rel not in want:
            problems.append("%s: unexpected" % shown)
        else:
            for key in sorted(set(want[rel]) | set(got[rel])):
                a, b = want[rel].get(key), got[rel].get(key)
                if a != b and not (same is not None and same(key, a, b)):
                    problems.append("%s: %s is %r, expected %r"
                                    % (shown, key, got[rel].get(key), want[rel].get(key)))
    return problems
