"""What the running kernel says about processes, flocks and mounts (the real ``/proc``).

These facts are never read under a host root: a sandbox host shares the kernel it
runs on, so its "running" containers have real mounts, and the processes and locks
it stages are real ones.
"""
import collections
import os
import re

PROC = b"/proc"

Mount = collections.namedtuple("Mount", "mount_point fstype source options")
_OCTAL_ESCAPE = re.compile(br"\\([0-7]{3})")


def _unescape(field):
    return _OCTAL_ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), field)


def mounts():
    """The mounts this process sees (``/proc/self/mountinfo``), mount points as bytes."""
    with open(PROC + b"/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    result = []
    for line in lines:
        fields = line.split(b" ")
        sep = fields.index(b"-")
        result.append(Mount(mount_point=_unescape(fields[4]),
                            fstype=fields[sep + 1].decode("ascii", "replace"),
                            source=_unescape(fields[sep + 2]),
                            options=fields[sep + 3].decode("ascii", "replace")))
    return result


def pid_alive(pid):
    """True if a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(pid, name):
    try:
        with open(b"%s/%d/%s" % (PROC, pid, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def argv(pid):
    """The command line of ``pid`` as a list of bytes (empty if it is gone)."""
    data = _read(pid, b"cmdline")
    return data.rstrip(b"\0").split(b"\0") if data else []


def comm(pid):
    """The kernel's name of ``pid`` (``/proc/PID/comm``), or None if it is gone."""
    data = _read(pid, b"comm")
    return data.rstrip(b"\n").decode("utf-8", "replace") if data is not None else None


def describe(pid, limit=200):
    """``pid`` and its command line, for messages."""
    words = argv(pid)
    if not words:
        return "pid %d" % pid
    text = b" ".join(words).decode("utf-8", "backslashreplace")
    if len(text) > limit:
        text = text[:limit] + "..."
    return "pid %d (%s)" % (pid, text)


def pids():
    """Every process ID (numeric entries of ``/proc``)."""
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def start_time(pid):
    """When ``pid`` started, in seconds since the epoch (None if it is gone)."""
    stat_line = _read(pid, b"stat")
    if stat_line is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat_line[stat_line.rindex(b")") + 2:].split()
    started_ticks = int(fields[19])
    with open(PROC + b"/stat", "rb") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    return boot + started_ticks / os.sysconf("SC_CLK_TCK")


def flock_holders(st):
    """PIDs holding a ``flock`` on the file whose ``os.stat`` result is ``st``
    (``/proc/locks``: ``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END``)."""
    key = b"%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders = []
    with open(PROC + b"/locks", "rb") as f:
        for line in f:
            fields = line.split()
            # Waiters are listed as "N: -> FLOCK ...": only holders have the type second.
            if len(fields) >= 6 and fields[1] == b"FLOCK" and fields[5] == key:
                holders.append(int(fields[4]))
    return holders
