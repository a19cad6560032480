"""Test trees: build one with every kind of file, compare two entry by entry.

    build_rich_tree(path)            # needs root (device nodes, owners, capabilities)
    problems = compare_trees(a, b, ignore_root=(b"lost+found",))
    assert_same_tree(a, b, ...)      # fails listing every difference

What :func:`compare_trees` compares, per entry (bytes names, symlinks never
followed): type; permission bits including setuid/setgid/sticky; uid and gid;
mtime in whole seconds (``mkfs.ext4 -d`` keeps seconds only; a tree root's
mtime is not compared, mkfs sets its own); for regular files size, a SHA-256 of
the content and sparseness (a file with holes must still have holes: fewer
512-byte blocks than its size needs); for symlinks the target; for device
nodes ``st_rdev``; all extended attributes (``user.*``, ``security.*``, ACLs
as ``system.posix_acl_*``) by name and value; hard-link groups (which names
share an inode, within the tree); and which names each directory holds.
Directory sizes and atimes/ctimes are not compared: no copy keeps them.

Found with ``mkfs.ext4 -d`` of e2fsprogs 1.47 (what ``make_ct_disk`` uses):
it keeps every kind below, sockets included, ACLs (access and default) and
``security.capability``, and leaves holes where the source has them.
"""
import hashlib
import os
import stat
import struct
import subprocess

# The names that are not valid UTF-8 (or odd in other ways) the tree holds.
ODD_NAMES = (b"caf\xe9", b"\xff\xfe\xfd", b"new\nline", b" leading space", b"tab\there")
DEPTH = 100


def _write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _capability(effective_bits):
    # struct vfs_cap_data, revision 2, with the effective flag set.
    return struct.pack("<IIIII", 0x02000001, effective_bits, 0, 0, 0)


def build_rich_tree(root, seed=b"", big_size=3 << 20):
    """Fill directory ``root`` (bytes) with every kind of entry; return ``root``.

    ``seed`` varies the content (two calls with different seeds give trees that
    differ in every regular file). ``big_size`` is the size of ``big.bin``, a
    file of pseudo-random bytes spanning several 1 MiB ploop clusters.
    """
    root = os.fsencode(root)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    os.makedirs(j(b"dir", b"sub"))
    _write(j(b"empty"), b"")
    _write(j(b"small.txt"), b"hello " + seed + b"\n")
    _write(j(b"big.bin"), hashlib.shake_256(b"big.bin" + seed).digest(big_size))
    # Sparse: holes at the start, in the middle and at the end.
    with open(j(b"sparse"), "wb") as f:
        f.truncate(12 << 20)
        f.seek(5 << 20)
        f.write(b"data in the middle " + seed)
        f.seek(9 << 20)
        f.write(b"more data " + seed)
    # Hard links across directories.
    _write(j(b"linked"), b"one inode, three names " + seed)
    os.link(j(b"linked"), j(b"dir", b"linked.2"))
    os.link(j(b"linked"), j(b"dir", b"sub", b"linked.3"))
    # Symlinks: relative, absolute, dangling, to a directory.
    os.symlink(b"small.txt", j(b"to_file"))
    os.symlink(b"/etc/hostname", j(b"absolute"))
    os.symlink(b"no/such/target", j(b"dangling"))
    os.symlink(b"dir/sub", j(b"to_dir"))
    # Special files.
    os.mkfifo(j(b"fifo"))
    os.mknod(j(b"char"), 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(j(b"block"), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.mknod(j(b"socket"), 0o755 | stat.S_IFSOCK)
    # Names that are not valid UTF-8, or otherwise awkward.
    for i, name in enumerate(ODD_NAMES):
        _write(j(b"dir", name), b"odd name %d " % i + seed)
    os.mkdir(j(b"caf\xe9.d"))
    _write(j(b"caf\xe9.d", b"\xe9t\xe9"), b"latin-1 inside latin-1 " + seed)
    # Extended attributes and ACLs.
    _write(j(b"xattrs"), b"has xattrs " + seed)
    os.setxattr(j(b"xattrs"), b"user.text", b"value " + seed)
    os.setxattr(j(b"xattrs"), b"user.binary", bytes(range(256)))
    os.setxattr(j(b"xattrs"), b"user.empty", b"")
    _write(j(b"capable"), b"\x7fELF pretend " + seed, 0o755)
    os.setxattr(j(b"capable"), b"security.capability", _capability(1 << 10))
    _write(j(b"acl"), b"acl " + seed)
    subprocess.check_call([b"setfacl", b"-m", b"u:1234:rw,g:4321:r", j(b"acl")])
    os.mkdir(j(b"acl.d"))
    subprocess.check_call([b"setfacl", b"-d", b"-m", b"u:1234:rwx", j(b"acl.d")])
    # Odd modes and owners.
    _write(j(b"setuid"), b"#!/bin/sh\n", 0o4755)
    _write(j(b"setgid"), b"#!/bin/sh\n", 0o2711)
    _write(j(b"nothing"), b"no permissions at all", 0o000)
    os.mkdir(j(b"sticky"))
    os.chmod(j(b"sticky"), 0o1777)
    _write(j(b"owned"), b"someone else's " + seed)
    os.chown(j(b"owned"), 1000, 1000)
    os.chown(j(b"dir", b"sub"), 12345, 54321)
    os.chown(j(b"to_file"), 4242, 2424, follow_symlinks=False)
    os.chown(j(b"fifo"), 65534, 65534)
    # Deep nesting.
    deep = j(b"deep")
    for level in range(DEPTH):
        deep = os.path.join(deep, b"d%02d" % level)
    os.makedirs(deep)
    _write(os.path.join(deep, b"bottom"), b"level %d " % DEPTH + seed)
    _set_mtimes(root)
    return root


def _set_mtimes(root):
    """Distinct whole-second mtimes, bottom up (a child's change touches its parent)."""
    stamp = 1000000000
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            stamp += 7
            os.utime(os.path.join(dirpath, name), (stamp, stamp), follow_symlinks=False)


# -- comparison -------------------------------------------------------------------

def _kind(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def _digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _xattrs(path):
    names = os.listxattr(path, follow_symlinks=False)
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}


def _describe(path, st, is_root):
    kind = _kind(st.st_mode)
    info = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid, "gid": st.st_gid, "xattrs": _xattrs(path)}
    if not is_root:
        info["mtime"] = int(st.st_mtime)
    if kind == "file":
        info["size"] = st.st_size
        info["sha256"] = _digest(path)
        info["sparse"] = st.st_blocks * 512 < st.st_size
    elif kind == "symlink":
        info["target"] = os.readlink(path)
    elif kind in ("char", "block"):
        info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return info


def _scan(root, ignore_root):
    """{relative path: description}, {inode: [relative paths]} of a tree."""
    entries = {}
    inodes = {}

    def visit(rel):
        path = os.path.join(root, rel) if rel else root
        st = os.lstat(path)
        entries[rel] = _describe(path, st, not rel)
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(path))
            if not rel:
                names = [n for n in names if n not in ignore_root]
            entries[rel]["names"] = names
            for name in names:
                visit(os.path.join(rel, name) if rel else name)
        elif st.st_nlink > 1:
            inodes.setdefault(st.st_ino, []).append(rel)

    visit(b"")
    return entries, inodes


def compare_trees(expected, actual, ignore_root=()):
    """Every difference between trees ``expected`` and ``actual`` (a list of strings).

    ``ignore_root``: names left out at the top of both trees (e.g. ``lost+found``
    of a fresh ext4). An empty list means the trees are the same.
    """
    want, want_links = _scan(os.fsencode(expected), ignore_root)
    got, got_links = _scan(os.fsencode(actual), ignore_root)
    problems = []
    for rel in sorted(set(want) | set(got)):
        shown = rel.decode("utf-8", "backslashreplace") or "."
        if rel not in got:
            problems.append("%s: missing" % shown)
        elif rel not in want:
            problems.append("%s: unexpected" % shown)
        else:
            for key in sorted(set(want[rel]) | set(got[rel])):
                if want[rel].get(key) != got[rel].get(key):
                    problems.append("%s: %s is %r, expected %r"
                                    % (shown, key, got[rel].get(key), want[rel].get(key)))
    groups = lambda links: sorted(sorted(g) for g in links.values())  # noqa: E731
    if groups(want_links) != groups(got_links):
        problems.append("hard-link groups are %r, expected %r"
                        % (groups(got_links), groups(want_links)))
    return problems


def assert_same_tree(expected, actual, ignore_root=()):
    problems = compare_trees(expected, actual, ignore_root)
    assert not problems, "%d difference(s):\n  %s" % (len(problems), "\n  ".join(problems))
