"""Stop another process at an exact point of its work, with fanotify
permission events: the kernel asks before it lets an open or a read of a
watched file go on. A :class:`Gate` allows everything except the one event its
``hold`` function picks, which it leaves unanswered: the process waits in the
kernel (killable, also by ``kill -9``) until :meth:`Gate.release` or
:meth:`Gate.close`. No timing is involved, so a test that kills a process in
the middle of an operation always kills it at the same place.

    with Gate(lambda event: event.pid == pid and event.path == top) as gate:
        gate.watch(top, FAN_ACCESS_PERM)
        ...                        # the process reads `top`: it waits
        gate.wait_held(60)
        os.kill(pid, signal.SIGKILL)
"""
import collections
import ctypes
import os
import select
import struct
import threading

FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_CONTENT = 0x04
FAN_MARK_ADD = 0x01
FAN_OPEN_PERM = 0x00010000
FAN_ACCESS_PERM = 0x00020000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ALLOW = 0x01
AT_FDCWD = -100
# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
METADATA = struct.Struct("=IBBHQii")
RESPONSE = struct.Struct("=iI")  # struct fanotify_response: fd, response

Event = collections.namedtuple("Event", "path pid mask")
Event.__doc__ = "A permission event: the file (bytes), the asking process, the event bit."


class Gate(object):
    """Answers the permission events of the files it watches, in a thread:
    ``hold(event)`` True keeps that event unanswered (one at a time; the
    others go on meanwhile). The gate's own process is never held."""

    def __init__(self, hold):
        libc = ctypes.CDLL(None, use_errno=True)
        self._mark = libc.fanotify_mark
        self._mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
        libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK,
                                os.O_RDONLY | getattr(os, "O_LARGEFILE", 0))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, "fanotify_init: %s" % os.strerror(err))
        self.fd = fd
        self.hold = hold
        self.held = None
        self.error = None
        self._held_fd = None
        self._held_event = threading.Event()
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="fanotify-gate")
        self._thread.daemon = True
        self._thread.start()

    def watch(self, path, mask):
        """Ask for ``mask`` events of ``path`` (with FAN_EVENT_ON_CHILD: of the
        files in the directory ``path``)."""
        if self._mark(self.fd, FAN_MARK_ADD, mask, AT_FDCWD, os.fsencode(path)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "fanotify_mark %s: %s" % (os.fsdecode(path), os.strerror(err)))

    def wait_held(self, timeout):
        """The held :class:`Event` once there is one (None after ``timeout``
        seconds); an exception ``hold`` raised is raised here."""
        self._held_event.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.held

    def release(self):
        """Let the held event go on."""
        with self._lock:
            fd, self._held_fd, self.held = self._held_fd, None, None
            self._held_event.clear()
        if fd is not None:
            self._answer(fd)

    def close(self):
        """Release the held event, stop answering; what is left is allowed."""
        if self._thread is None:
            return
        os.write(self._wake_write, b"x")
        self._thread.join()
        self._thread = None
        self.release()
        for fd in (self.fd, self._wake_read, self._wake_write):
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _answer(self, fd):
        try:
            os.write(self.fd, RESPONSE.pack(fd, FAN_ALLOW))
        except OSError:
            pass  # the asking process is gone
        os.close(fd)

    def _ask(self, event):
        try:
            return self.hold(event)
        except Exception as e:  # wait_held raises it: a broken test fails, never hangs
            self.error = e
            self._held_event.set()
            return False

    def _serve(self):
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_read in ready:
                return
            try:
                data = os.read(self.fd, 64 * METADATA.size)
            except BlockingIOError:
                continue
            offset = 0
            while offset + METADATA.size <= len(data):
                length, _, _, _, mask, fd, pid = METADATA.unpack_from(data, offset)
                offset += length
                if fd < 0:
                    continue
                event = Event(os.readlink(b"/proc/self/fd/%d" % fd), pid, mask)
                with self._lock:
                    keep = self._held_fd is None and pid != os.getpid() and self._ask(event)
                    if keep:
                        self._held_fd, self.held = fd, event
                        self._held_event.set()
                if not keep:
                    self._answer(fd)
