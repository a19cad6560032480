"""``flock`` locks with a timeout that say who holds them.

A lock is an exclusive ``flock`` on a file of its own. ``flock`` belongs to an open
file description, so every acquisition opens the file anew: two threads of one
process (two Bareos jobs in one file daemon) conflict exactly like two processes,
and the kernel drops the lock when its holder dies, even by ``kill -9``: there is no
stale lock to clean up. The file is never removed (removing a lock file lets a
waiter lock the removed inode while a newcomer locks a new one).

After taking the lock the holder writes ``PID\\nwhat it does\\n`` into the file
(truncate, then write), the format of vzctl's own lock files. A waiter that times out
names the holder from the kernel's lock table (``/proc/locks``, which also knows a
holder that wrote nothing, such as ``flock(1)`` wrapping pcompact) and falls back on
the file's content.

There is no module state: each lock is an object owning one fd, closed on every
path (release, error, interrupted wait).
"""
import fcntl
import os
import time

from vz7native import procfs
from vz7native.host.errors import HostError, LockTimeout
from vz7native.paths import show

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
_FIRST_WAIT = 0.01
_LONGEST_WAIT = 0.25


class FileLock(object):
    """An exclusive lock on ``path`` (real path), as a context manager.

    ``timeout``: seconds to wait (0: one attempt). ``what`` names the lock in
    messages (e.g. ``"lockfile /var/lock/bareos-vz7.lock"``); ``note`` is written
    after the pid so that a waiter can say what the holder is doing. Not re-entrant:
    taking the same lock twice from one thread waits for itself.
    """

    def __init__(self, path, timeout, what, note=""):
        if timeout is None or timeout < 0:
            raise ValueError("%s: the timeout must be a number of seconds >= 0, not %r"
                             % (what, timeout))
        self.path = os.fsencode(path)
        self.timeout = timeout
        self.what = what
        self.note = note
        self._fd = None

    @property
    def locked(self):
        return self._fd is not None

    def acquire(self):
        if self._fd is not None:
            raise HostError("%s is already held by this object" % self.what)
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as e:
            raise HostError("%s: cannot open %s: %s" % (self.what, show(self.path), e.strerror))
        try:
            self._wait(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, ("%d\n%s\n" % (os.getpid(), self.note)).encode("utf-8", "replace"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _wait(self, fd):
        deadline = time.monotonic() + self.timeout
        pause = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(fd)
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LONGEST_WAIT)

    def _timeout(self, fd):
        pid, note = holder(fd)
        if pid is None:
            who = "a process that could not be identified"
        else:
            who = procfs.describe(pid)
            if note:
                who += ", which says: %s" % note
        return LockTimeout("%s is still held after %g s by %s"
                           % (self.what, self.timeout, who), self.path, pid)

    def release(self):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the only fd of this open file releases the flock

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


def holder(fd):
    """(pid, note) of whoever holds the flock on the file open at ``fd``.

    The kernel's lock table decides the pid; the note comes from the file when the
    pid written there is that same process. (None, "") if nobody can be named."""
    pids = procfs.flock_holders(os.fstat(fd))
    try:
        content = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        content = ""
    first, _, rest = content.partition("\n")
    written = int(first) if first.strip().isdigit() else None
    note = rest.strip()
    if pids:
        return pids[0], note if written == pids[0] else ""
    if written is not None and procfs.pid_alive(written):
        return written, note
    return None, ""
