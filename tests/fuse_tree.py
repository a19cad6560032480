"""A FUSE filesystem for the walker's tests: what no local filesystem does on demand.

    python fuse_tree.py MOUNTPOINT LOG

serves, read-only, in the foreground until unmounted:

    /known/         three files, listed with their types
    /unknown/       entries listed without a type (DT_UNKNOWN): the files
                    ``file`` and ``skip.tmp``, the symlink ``link`` and the
                    directory ``subdir`` (holding the file ``inner``)
    /broken/        BROKEN_NAMES files ``n000``..., whose listing fails with
                    EIO after the first LISTED_BEFORE_FAILURE of them
    /z              a file

Every ``getattr`` (what a stat or a lookup of a path asks) appends the path
and a newline to LOG, so a test can tell what was stat'ed. Attributes and
names are not cached by the kernel (timeouts 0): every stat reaches us.

A script run in its own process: mfusepy is ctypes-based. Works with mfusepy
1.x (Python 3.6) and 3.x, on libfuse 2 or 3.
"""
import errno
import stat
import sys

import mfusepy

BROKEN_NAMES = 600
LISTED_BEFORE_FAILURE = 250

DIR = stat.S_IFDIR | 0o755
FILE = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777

# path: (mode, listed with its type, names below it); the root is "/".
TREE = {
    "/": (DIR, True, ["known", "unknown", "broken", "z"]),
    "/known": (DIR, True, ["a", "b", "c"]),
    "/known/a": (FILE, True, []),
    "/known/b": (FILE, True, []),
    "/known/c": (FILE, True, []),
    "/unknown": (DIR, True, ["file", "skip.tmp", "link", "subdir"]),
    "/unknown/file": (FILE, False, []),
    "/unknown/skip.tmp": (FILE, False, []),
    "/unknown/link": (LINK, False, []),
    "/unknown/subdir": (DIR, False, ["inner"]),
    "/unknown/subdir/inner": (FILE, True, []),
    "/broken": (DIR, True, ["n%03d" % i for i in range(BROKEN_NAMES)]),
    "/z": (FILE, True, []),
}
for _name in TREE["/broken"][2]:
    TREE["/broken/" + _name] = (FILE, True, [])


def child(path, name):
    return ("" if path == "/" else path) + "/" + name


class TreeOps(mfusepy.Operations):
    use_ns = True

    def __init__(self, log):
        self.log = log

    def getattr(self, path, fh=None):
        with open(self.log, "a") as f:
            f.write(path + "\n")
        if path not in TREE:
            raise mfusepy.FuseOSError(errno.ENOENT)
        mode = TREE[path][0]
        return {"st_mode": mode, "st_nlink": 2 if stat.S_ISDIR(mode) else 1, "st_size": 0}

    def readlink(self, path):
        return "file"

    def readdir(self, path, fh):
        """Declares that this filesystem lists (mfusepy registers only what is
        defined); TreeFUSE._readdir does the listing."""
        raise mfusepy.FuseOSError(errno.ENOSYS)


class TreeFUSE(mfusepy.FUSE):
    """Lists through the raw callback, with offsets, so that a listing can
    fail part-way: the kernel asks again from where it stopped, and gets EIO."""

    def _readdir(self, path, buf, filler, offset, fip):
        path = path.decode()
        names = TREE[path][2]
        if path == "/broken" and offset >= LISTED_BEFORE_FAILURE:
            return -errno.EIO
        stop = LISTED_BEFORE_FAILURE if path == "/broken" else len(names)
        flags = (0,) if mfusepy.fuse_version_major == 3 else ()
        for i in range(offset, stop):
            mode, typed, _ = TREE[child(path, names[i])]
            st = None
            if typed:
                st = mfusepy.c_stat()
                st.st_mode = mode
            if filler(buf, names[i].encode(), st, i + 1, *flags) != 0:
                break
        return 0


if __name__ == "__main__":
    mountpoint, log = sys.argv[1], sys.argv[2]
    TreeFUSE(TreeOps(log), mountpoint, foreground=True, ro=True,
             entry_timeout=0, attr_timeout=0, negative_timeout=0)
