"""Is pcompact (or ``vzctl compact``) working on a container?

pcompact (``/usr/sbin/pcompact``, run from ``/etc/cron.d/pcompact`` at 02:00 for up
to two hours) walks every container, mounting the stopped ones, and discards unused
blocks of their ploop images. Facts from its source, and the signals read here:

* a running pcompact holds an exclusive ``flock`` on its state file
  ``/var/run/pcompact.pid`` for its whole run (the file holds the index of the
  container it is at, not a pid): its holder in ``/proc/locks`` is pcompact;
* any process whose kernel name (``/proc/PID/comm``) is ``pcompact``;
* it logs ``Inspect <UUID>`` to ``/var/log/pcompact.log`` when it moves to the next
  container (``prlctl list`` UUIDs, with braces): the last such line, written after
  the process started, names the container it works on;
* ``vzctl compact <CT>`` compacts one container by hand: its command line names it;
* a vzctl lock file of the container (``LOCKDIR/<CTID>.lck``) held by one of these.

A running pcompact whose log does not name its container (no log, nothing written
since it started) is taken as working on any container: refusing is the safe side.
The way out is to run pcompact under the backup's own lockfile (README).
"""
import os
import re

from vz7native import procfs
from vz7native.host import conf
from vz7native.host.errors import PcompactRunning
from vz7native.host.status import vzctl_lock
from vz7native.paths import show

STATE_FILE = b"/var/run/pcompact.pid"
LOG_FILE = b"/var/log/pcompact.log"
_LOG_TAIL = 64 << 10
_INSPECT = re.compile(br"\bInspect (\S+)\s*$")


def _names(ct, word):
    """True if a command-line word or log token names container ``ct``."""
    if ct.name is not None and word == ct.name.encode("utf-8", "surrogateescape"):
        return True
    ident = conf.parse_ctid(word)
    return ident is not None and ident in (ct.ctid, ct.uuid)


def _compactors():
    """{pid: kind} of running pcompact and ``vzctl compact`` processes."""
    found = {}
    for pid in procfs.pids():
        name = procfs.comm(pid)
        if name == "pcompact":
            found[pid] = "pcompact"
        elif name == "vzctl" and procfs.argv(pid)[1:2] == [b"compact"]:
            found[pid] = "vzctl compact"
    return found


def _inspected(host, pid):
    """The container pcompact ``pid`` logged last, or None with why not."""
    path = host.real(LOG_FILE)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            f.seek(max(0, st.st_size - _LOG_TAIL))
            lines = f.read().splitlines()
    except OSError as e:
        return None, "its log %s cannot be read (%s)" % (show(LOG_FILE), e.strerror)
    started = procfs.start_time(pid)
    if started is not None and st.st_mtime < started - 1:
        return None, "its log %s has nothing since it started" % show(LOG_FILE)
    for line in reversed(lines):
        match = _INSPECT.search(line)
        if match and not match.group(1).startswith(b"/"):
            return match.group(1), None
    return None, "its log %s names no container" % show(LOG_FILE)


def check_pcompact(host, ct):
    """Raise PcompactRunning if pcompact or ``vzctl compact`` works on ``ct``."""
    running = _compactors()
    try:
        for pid in procfs.flock_holders(os.stat(host.real(STATE_FILE))):
            running.setdefault(pid, "pcompact")
    except FileNotFoundError:
        pass
    if not running:
        return
    lock = vzctl_lock(host, ct)
    if lock is not None and lock[1] in running:
        raise PcompactRunning(
            "%s (%s) holds vzctl's lock %s of container %s: it is compacting it"
            % (running[lock[1]], procfs.describe(lock[1]), show(lock[0]), ct.label), lock[1])
    for pid, kind in sorted(running.items()):
        if kind == "vzctl compact":
            if any(_names(ct, word) for word in procfs.argv(pid)[2:]):
                raise PcompactRunning("%s is compacting container %s"
                                      % (procfs.describe(pid), ct.label), pid)
            continue
        inspected, unknown = _inspected(host, pid)
        if inspected is None:
            raise PcompactRunning(
                "pcompact (%s) is running and %s, so it may be compacting container %s; "
                "run pcompact under the backup's lockfile to keep them apart"
                % (procfs.describe(pid), unknown, ct.label), pid)
        if _names(ct, inspected):
            raise PcompactRunning("pcompact (%s) is compacting container %s (its log %s: Inspect %s)"
                                  % (procfs.describe(pid), ct.label, show(LOG_FILE),
                                     show(inspected)), pid)
