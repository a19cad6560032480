"""Registering a restored container: the one command the library runs.

``prlctl register <VE_PRIVATE> --preserve-uuid`` makes the Virtuozzo dispatcher and
vzctl know the container again with the UUID it had (the ``/etc/vz/conf`` link, the
name index...). Where prlctl is not installed, vzctl 7 does the vzctl part:
``vzctl register <VE_PRIVATE> <CTID>`` (it takes no ``--preserve-uuid``: it keeps the
``UUID=`` of ``ve.conf``).

The command runs with a timeout, its output (stdout and stderr together) is kept
for the error, and a command that outlives the timeout is killed with its process
group. When neither tool is found the error gives the admin the command to run.
"""
import os
import signal
import subprocess

from vz7native.host.errors import RegisterError

# bareos-fd may run with a short PATH: the VZ7 tools live in /usr/bin and /usr/sbin.
DEFAULT_SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
_KEEP_OUTPUT = 4096


def search_path():
    """The directories searched for prlctl and vzctl: PATH, then the standard ones."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return dirs + [d for d in DEFAULT_SEARCH_PATH if d not in dirs]


def _which(tool, dirs):
    for directory in dirs:
        path = os.path.join(directory, tool)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def command_for(private, ctid, dirs):
    """The registration command (a list), or None when neither tool is installed."""
    prlctl = _which("prlctl", dirs)
    if prlctl is not None:
        return [prlctl, "register", private, "--preserve-uuid"]
    vzctl = _which("vzctl", dirs)
    if vzctl is not None:
        return [vzctl, "register", private, ctid]
    return None


def register_container(private, timeout, ctid=None, dirs=None):
    """Register the container whose private area is ``private`` (host path).

    ``ctid`` (default: the last component of ``private``) is what vzctl needs;
    ``dirs`` overrides where the tools are looked for. Returns the command's output.
    Raises RegisterError on a missing tool, a failure or a timeout."""
    private = os.fsdecode(private).rstrip("/")
    ctid = ctid or os.path.basename(private)
    dirs = search_path() if dirs is None else list(dirs)
    by_hand = "prlctl register %s --preserve-uuid" % private
    command = command_for(private, ctid, dirs)
    if command is None:
        raise RegisterError(
            "the restored container in %s is not registered: neither prlctl nor vzctl was "
            "found in %s; register it with: %s" % (private, os.pathsep.join(dirs), by_hand))
    shown = " ".join(command)
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
    except OSError as e:
        raise RegisterError("cannot run %s: %s; register the container with: %s"
                            % (shown, e.strerror, by_hand), command)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        text = _text(kill_group(proc))
        raise RegisterError("%s did not finish within %g s and was killed%s; register the "
                            "container with: %s" % (shown, timeout, _quoted(text), by_hand),
                            command, text)
    except BaseException:
        kill_group(proc)
        raise
    text = _text(output)
    if proc.returncode != 0:
        raise RegisterError("%s failed (exit status %d)%s" % (shown, proc.returncode, _quoted(text)),
                            command, text)
    return text


def kill_group(proc):
    """Kill the process group of ``proc`` (a Popen started with
    ``start_new_session``), reap it, and return what it wrote to its stdout pipe.
    A descendant that left the group may still hold the pipes: it is not waited for."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        output, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        output = b""
    return output


def _text(output):
    text = output.decode("utf-8", "replace").strip()
    return text if len(text) <= _KEEP_OUTPUT else "..." + text[-_KEEP_OUTPUT:]


def _quoted(text):
    return ": %s" % text if text else " without output"
