"""A container-like file tree with every kind of file, for building test images.

``build_tree(root)`` makes it (needs root: device nodes, owners), ``change_tree(root)``
turns it into "the container after a while" (what a snapshot must not show), and
``describe(root)`` gives a comparable picture of a tree (kinds, modes, owners,
sizes, device numbers, whole-second mtimes, symlink targets, xattrs and ACLs,
content hashes, hard-link groups, sparseness) so an image's view can be compared
with its source.
"""
import hashlib
import os
import random
import socket
import stat
import subprocess

NON_UTF8_DIR = b"caf\xe9-\xff\xfe"
NON_UTF8_FILE = b"r\xe9sum\xe9\x80.txt"
DEEP_LEVELS = 40
OLD_MTIME = 981173106  # 2001-02-03 04:05:06 UTC
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service


def _write(path, data, mode=0o644, uid=0, gid=0, mtime=OLD_MTIME):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def _random_bytes(seed, size):
    rng = random.Random(seed)
    block = bytes(rng.getrandbits(8) for _ in range(4096))
    return (block * (-(-size // 4096)))[:size]


def build_tree(root):
    """Fill the (existing, empty) directory ``root``; paths are bytes."""
    root = os.fsencode(root)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    for d in (b"etc", b"home", b"home/user", b"var", b"var/lib", b"dev", b"srv", b"tmp",
              NON_UTF8_DIR):
        os.mkdir(j(d))
    _write(j(b"etc/hostname"), b"ct101\n")
    _write(j(b"etc/empty"), b"")
    _write(j(b"etc/shadow"), b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42)
    _write(j(b"home/user/notes.txt"), b"first version\n" * 100, uid=1000, gid=1000)
    _write(j(b"home/user/random.bin"), _random_bytes(1, 3 << 20 | 123), uid=1000, gid=1000)
    # Hard links, one across directories.
    _write(j(b"var/lib/data"), b"linked content\n", uid=33, gid=33)
    os.link(j(b"var/lib/data"), j(b"var/lib/data.link"))
    os.link(j(b"var/lib/data"), j(b"srv/data.link"))
    # Symlinks: relative, absolute, dangling.
    os.symlink(b"../etc/hostname", j(b"srv/hostname"))
    os.symlink(b"/etc/shadow", j(b"srv/abs"))
    os.symlink(b"nowhere/at/all", j(b"srv/dangling"))
    # Device nodes, FIFO, socket.
    os.mknod(j(b"dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(j(b"dev/sda1"), 0o660 | stat.S_IFBLK, os.makedev(8, 1))
    os.chown(j(b"dev/sda1"), 0, 6)
    os.mkfifo(j(b"tmp/fifo"), 0o620)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(j(b"tmp/socket"))
    finally:
        sock.close()
    # Special modes.
    _write(j(b"srv/setuid"), b"#!/bin/sh\n", mode=0o4755)
    _write(j(b"srv/setgid"), b"#!/bin/sh\n", mode=0o2750, gid=50)
    os.chmod(j(b"tmp"), 0o1777)
    # Names that are not UTF-8, and a 255-byte name.
    _write(j(NON_UTF8_DIR, NON_UTF8_FILE), b"latin-1 name\n", uid=65534, gid=65534)
    _write(j(b"srv", b"n" * 255), b"long name\n")
    # xattrs: user, security.capability (set after chown: chown drops it), ACLs.
    _write(j(b"srv/xattr"), b"attributes\n", uid=1000, gid=1000)
    os.setxattr(j(b"srv/xattr"), b"user.comment", b"hello \xff world")
    os.setxattr(j(b"srv/xattr"), b"user.empty", b"")
    _write(j(b"srv/ping"), b"\x7fELF", mode=0o755)
    os.setxattr(j(b"srv/ping"), b"security.capability", CAPABILITY)
    _write(j(b"srv/acl"), b"acl\n")
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
    _write(os.path.join(deep, b"bottom"), b"deep down\n")
    # Many entries in one directory (hashed directory index in ext4).
    many = j(b"var/many")
    os.mkdir(many)
    for n in range(300):
        _write(os.path.join(many, b"file-%04d" % n), b"%d\n" % n)
    _set_dir_times(root)


def change_tree(root):
    """What a running container does after a snapshot: edit, add, remove, chmod."""
    root = os.fsencode(root)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    _write(j(b"home/user/notes.txt"), b"second version\n" * 120, uid=1000, gid=1000,
           mtime=OLD_MTIME + 86400)
    _write(j(b"home/user/new-file"), _random_bytes(2, 2 << 20), uid=1000, gid=1000)
    os.unlink(j(b"var/lib/data.link"))
    os.unlink(j(NON_UTF8_DIR, NON_UTF8_FILE))
    os.chmod(j(b"etc/shadow"), 0o600)
    for n in range(0, 300, 3):
        os.unlink(j(b"var/many", b"file-%04d" % n))
    _set_dir_times(root)


def _set_dir_times(root):
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.utime(dirpath, (OLD_MTIME, OLD_MTIME))


def describe(root, ignore=(b"lost+found",)):
    """``{relative path (bytes): properties}`` of every entry under ``root``.

    Properties are those a filesystem image keeps: kind, permission bits,
    owner, size (not for directories), rdev, whole-second mtime (not for the
    root), symlink target,
    xattrs (ACLs included), content hash, hard-link group (the first path of
    the inode, in sorted order) and whether a file is sparse.
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
            props = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                     "gid": st.st_gid}
            if rel != b".":  # mkfs.ext4 -d does not carry the root directory's times
                props["mtime"] = int(st.st_mtime)
            if kind != stat.S_IFDIR:
                props["size"] = st.st_size
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                props["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind == stat.S_IFLNK:
                props["target"] = os.readlink(path)
            else:
                props["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                                   for k in sorted(os.listxattr(path, follow_symlinks=False))}
            if kind == stat.S_IFREG:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                props["sha256"] = digest.hexdigest()
                props["sparse"] = st.st_blocks * 512 < st.st_size
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            entries[rel] = props
    for paths in inodes.values():
        for rel in paths:
            entries[rel]["links"] = sorted(paths)
    return entries
