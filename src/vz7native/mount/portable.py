"""The portable backend, caller's side: start the helper process, wait for its
word, stop it. The device work is all in :mod:`vz7native.mount.helper`.

Safe for the file daemon: imports neither ctypes nor pyudev.

The helper is a child of the calling process and, unless the mount is
persistent, stays in its process group and lives only as long as its stdin
pipe: closing the pipe (or dying) is how the caller says "take it down".
"""
import json
import os
import select
import subprocess
import sys
import time

import vz7native
from vz7native import image
from vz7native.mount import MountError, ReadOnlyMount, RunDirError, TargetBusyError, state

READY_TIMEOUT = 120.0
# Covers the helper's own patience with a busy filesystem (teardown.UMOUNT_GRACE
# and RELEASE_GRACE) with room to spare.
STOP_TIMEOUT = 60.0
PYTHON_ENV = "VZ7NATIVE_PYTHON"


def _python():
    """The interpreter for the helper.

    Inside the file daemon ``sys.executable`` is not always a Python (it may be
    empty, or the daemon itself): then the interpreter next to this one's
    prefix. ``$VZ7NATIVE_PYTHON`` overrides both.
    """
    override = os.environ.get(PYTHON_ENV)
    if override:
        return override
    if sys.executable and os.path.basename(sys.executable).startswith("python"):
        return sys.executable
    candidate = os.path.join(sys.exec_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    if os.access(candidate, os.X_OK):
        return candidate
    raise MountError("cannot find a Python interpreter for the mount helper "
                     "(set $%s)" % PYTHON_ENV)


def _helper(*args):
    """argv and environment to run the helper with ``args``: this very vz7native."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(vz7native.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH")) if p)
    argv = [os.fsencode(_python()), b"-m", b"vz7native.mount.helper"]
    argv += [os.fsencode(a) for a in args]
    return argv, env


def _read_line(fd, timeout):
    """One line from ``fd`` within ``timeout`` seconds; b"" at EOF, None on timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _parse(line):
    """(word, payload) of a helper status line; ("", {}) for anything else."""
    word, _, payload = line.decode("utf-8", "replace").strip().partition(" ")
    try:
        return word, (json.loads(payload) if payload else {})
    except ValueError:
        return "", {}


# What the helper reports by type name, raised here as the same type: an image
# the helper cannot read fails as it does in this process.
_ERRORS = {cls.__name__: cls for cls in (
    image.ImageError, image.DescriptorError, image.FormatError, image.NoPartitionTable,
    image.SnapshotNotFound, RunDirError)}
_ERRORS["TargetBusy"] = TargetBusyError


def _failure(payload, what=None):
    cls = _ERRORS.get(payload.get("type"), MountError)
    message = payload.get("message") or "the mount helper failed"
    if what:
        message = "%s: %s" % (what, message)
    problems = payload.get("problems")
    if problems:
        message += " (left behind: %s)" % "; ".join(problems)
    return cls(message)


class PortableMount(ReadOnlyMount):
    """A snapshot mounted by a helper process (see :func:`mount`).

    Extra attributes: ``id`` (the set's record name), ``info`` (what the
    helper reported: loop device, partition offset and size, FUSE dir and
    library, whether the loop device reads with direct I/O).
    """

    backend = "portable"

    def __init__(self, dd, target, guid, mount_id, info, process, persistent):
        super(PortableMount, self).__init__(dd, target, guid, os.fsencode(info["loop"]))
        self.id = mount_id
        self.info = info
        self._process = process
        self._persistent = persistent

    def _umount(self):
        process = self._process
        # A persistent helper no longer watches its stdin: it is told by signal.
        out = _stop(process, terminate=self._persistent)
        lines = (out or b"").splitlines()
        word, payload = _parse(lines[-1]) if lines else ("", {})
        if word == "DONE" or (self._persistent and process.returncode == 0):
            return
        # The helper failed or died: what its set left goes now.
        left = [p for entry in cleanup(self.dd, mount_id=self.id) for p in entry["problems"]]
        if word == "ERROR" or left:
            raise _failure(dict(payload, problems=left or payload.get("problems")),
                           "cannot unmount %s" % os.fsdecode(self.target))


def mount(dd_path, target, guid=None, persistent=False):
    """Mount through a helper process; see :func:`vz7native.mount.mount_readonly`."""
    descriptor = image.read_descriptor(dd_path)
    # SnapshotNotFound here, in this process; the helper gets the descriptor's spelling.
    guid = descriptor.resolve_guid(descriptor.top_guid if guid is None else guid)
    dd = state.canonical_dd(descriptor.path)
    mount_id = state.new_id()
    args = ["serve", "--run-dir", state.run_dir(), "--id", mount_id, "--dd", dd,
            "--target", target, "--guid", guid]
    if persistent:
        args.append("--persistent")
    argv, env = _helper(*args)
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                               env=env, close_fds=True, start_new_session=persistent)
    try:
        line = _read_line(process.stdout.fileno(), READY_TIMEOUT)
    except BaseException:
        _stop(process, terminate=True)
        raise
    word, payload = _parse(line) if line else ("", {})
    if word == "READY":
        if persistent:
            # The helper now lives on its own; it no longer watches stdin.
            process.stdin.close()
            process.stdout.close()
        return PortableMount(dd, target, payload.get("guid", guid), mount_id, payload,
                             process, persistent)
    _stop(process, terminate=True)
    if word != "ERROR":
        left = [p for entry in cleanup(dd, mount_id=mount_id) for p in entry["problems"]]
        payload = {"message": "the mount helper for %s %s" % (
            os.fsdecode(dd), "did not answer within %d s" % READY_TIMEOUT if line is None
            else "exited with code %s" % process.returncode), "problems": left}
    raise _failure(payload)


def _stop(process, terminate):
    """Let the helper finish (closing its stdin tells it to take its set down),
    after SIGTERM if ``terminate``; kill it after STOP_TIMEOUT. Returns its output."""
    if terminate and process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def cleanup(dd_path=None, mount_id=None):
    """Run the helper's ``cleanup``; see :func:`vz7native.mount.cleanup`."""
    args = ["cleanup", "--run-dir", state.run_dir()]
    if dd_path is not None:
        args += ["--dd", state.canonical_dd(dd_path)]
    if mount_id is not None:
        args += ["--id", mount_id]
    argv, env = _helper(*args)
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env)
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace"))
    except ValueError:
        raise MountError("the mount helper's cleanup failed (exit code %d): %s" % (
            proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
