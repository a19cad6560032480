"""What the running kernel says about mounts, processes and flocks (the real ``/proc``).

The one reader of ``/proc`` for every room: the host room (container status,
locks, pcompact), the mount records (is a helper or owner still the process
that was recorded?) and the mount teardown. Pure Python, standard library only
and nothing else of ours, so the file daemon can import it (no ctypes).

These facts are never read under a host root: a sandbox host shares the kernel
it runs on, so its "running" containers have real mounts, and the processes
and locks it stages are real ones. Paths and mountinfo fields are ``bytes``.
"""
import collections
import os
import re

PROC = b"/proc"
MOUNTINFO = PROC + b"/self/mountinfo"

MountEntry = collections.namedtuple(
    "MountEntry",
    "mount_id parent_id devnum root mount_point options fstype source super_options")
MountEntry.__doc__ = """One line of /proc/self/mountinfo.

``devnum`` is the st_dev of the filesystem (``os.makedev(major, minor)``);
``mount_point``, ``root`` and ``source`` are unescaped ``bytes``; ``options``
the per-mount options (``b"rw,relatime"``), ``super_options`` those of the
filesystem (``b"rw,freezer"`` for a cgroup v1 hierarchy); ``fstype`` e.g.
``b"ext4"`` or ``b"fuse.vz7native"``.
"""

ProcessId = collections.namedtuple("ProcessId", "pid start_ticks")
ProcessId.__doc__ = """A process, told apart from later ones with the same pid by
when it started (``start_ticks``: clock ticks after boot, field 22 of
``/proc/PID/stat``)."""

ProcessStat = collections.namedtuple("ProcessStat", "state start_ticks")
ProcessStat.__doc__ = """What ``/proc/PID/stat`` says of a process: ``state`` (``b"R"``,
``b"S"``, ``b"Z"`` for a zombie...) and ``start_ticks``."""

# mountinfo writes a blank, tab, newline and backslash in a field as \ooo.
_OCTAL_ESCAPE = re.compile(br"\\([0-7]{3})")


def _unescape(field):
    return _OCTAL_ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), field)


# -- mounts ----------------------------------------------------------------------

def mounts():
    """Every mount this process sees, in mount order (a list of MountEntry)."""
    with open(MOUNTINFO, "rb") as f:
        lines = f.read().splitlines()
    entries = []
    for line in lines:
        fields = line.split(b" ")
        # Optional fields (shared:N, master:N...) run from the 7th up to "-".
        sep = fields.index(b"-", 6)
        major, minor = fields[2].split(b":")
        entries.append(MountEntry(
            mount_id=int(fields[0]), parent_id=int(fields[1]),
            devnum=os.makedev(int(major), int(minor)), root=_unescape(fields[3]),
            mount_point=_unescape(fields[4]), options=fields[5],
            fstype=_unescape(fields[sep + 1]), source=_unescape(fields[sep + 2]),
            super_options=fields[sep + 3]))
    return entries


def mounts_at(path):
    """The mounts stacked at ``path`` (resolved), bottom first."""
    path = os.path.realpath(os.fsencode(path))
    return [m for m in mounts() if m.mount_point == path]


# -- processes -------------------------------------------------------------------

def _read(pid, name):
    try:
        with open(b"%s/%d/%s" % (PROC, pid, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def process_stat(pid):
    """ProcessStat of ``pid``, or None if there is no such process."""
    stat_line = _read(pid, b"stat")
    if stat_line is None:
        return None
    # The command name (field 2) may hold blanks and parentheses: split after the last ")".
    fields = stat_line[stat_line.rindex(b")") + 2:].split()
    return ProcessStat(state=fields[0], start_ticks=int(fields[19]))


def start_time(pid):
    """When ``pid`` started, in seconds since the epoch (None if it is gone)."""
    stat = process_stat(pid)
    if stat is None:
        return None
    with open(PROC + b"/stat", "rb") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    return boot + stat.start_ticks / os.sysconf("SC_CLK_TCK")


def process_id(pid):
    """ProcessId of the running process ``pid``, or None when there is none
    (a zombie has finished its work: it does not count)."""
    stat = process_stat(pid)
    if stat is None or stat.state == b"Z":
        return None
    return ProcessId(pid, stat.start_ticks)


def is_running(proc):
    """True while the process ``proc`` (a ProcessId or None) is still the one recorded."""
    return proc is not None and process_id(proc.pid) == proc


def pid_alive(pid):
    """True if a process ``pid`` exists (a zombie too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# -- locks -----------------------------------------------------------------------

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
