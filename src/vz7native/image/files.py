"""Opening the files of an image: never blocking, and regular files only.

A descriptor may name anything in its ``<File>`` entries. A FIFO would block an
``open()`` until someone writes to it (for good, in a helper nobody waits
for), a device would be read as if it were a delta. So every file of an image
is opened with ``O_NONBLOCK`` and ``fstat``-ed: what is not a regular file is
refused, naming the file (a regular file's fd is then made blocking again). Symlinks are followed,
as libploop follows them; the check is on the file actually opened.
"""
import fcntl
import os
import stat

from vz7native.image.errors import FormatError
from vz7native.paths import show

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def open_regular(path, flags=os.O_RDONLY, error=FormatError, what="delta"):
    """An fd of the regular file ``path`` opened with ``flags``; raises ``error``
    (``what``: how the message names the file) for anything else, and OSError
    when it cannot be opened."""
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise error("%s %s is %s, not a regular file" % (what, show(path), kind))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd
