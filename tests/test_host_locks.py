"""flock locks: between processes and threads, timeouts that name the holder, kill -9."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from host_helpers import DB, WEB, Processes, two_container_host
from vz7native.host import HostError, LockTimeout
from vz7native.host.locks import FileLock

HOLDER = r"""
import sys, time
from vz7native.host.locks import FileLock
with FileLock(sys.argv[1], 5, "test lock", note="backup of web01 (job 42)"):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder():
    """holder(path) starts a process that holds the lock on ``path``."""
    processes = Processes()
    yield lambda path: processes.start([sys.executable, "-c", HOLDER, path], "locked")
    processes.close()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_a_timeout_names_the_holding_process(tmp_path, holder):
    path = tmp_path / "bareos.lock"
    proc = holder(path)
    assert path.read_text() == "%d\nbackup of web01 (job 42)\n" % proc.pid
    started = time.monotonic()
    with pytest.raises(LockTimeout) as e:
        FileLock(str(path), 0.3, "lockfile /var/lock/bareos.lock").acquire()
    assert time.monotonic() - started >= 0.3
    assert e.value.holder_pid == proc.pid
    assert e.value.path == os.fsencode(str(path))
    message = str(e.value)
    assert message.startswith("lockfile /var/lock/bareos.lock is still held after 0.3 s by pid %d ("
                              % proc.pid)
    assert "which says: backup of web01 (job 42)" in message


def test_kill_9_releases_the_lock(tmp_path, holder):
    path = tmp_path / "bareos.lock"
    proc = holder(path)
    with pytest.raises(LockTimeout):
        FileLock(str(path), 0, "lockfile").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with FileLock(str(path), 5, "lockfile", note="next job") as lock:
        assert lock.locked
        assert path.read_text() == "%d\nnext job\n" % os.getpid()
    assert path.read_text() == ""                # released: no stale pid left behind
    assert path.exists()                         # never removed


def test_threads_of_one_process_exclude_each_other(tmp_path):
    # Two Bareos jobs are two threads of one file daemon: separate opens conflict.
    path = str(tmp_path / "ct.lock")
    held, release, results = threading.Event(), threading.Event(), []

    def job_a():
        with FileLock(path, 1, "lock", note="job A"):
            held.set()
            release.wait(10)

    def job_b(timeout):
        try:
            with FileLock(path, timeout, "lock", note="job B"):
                results.append("B locked")
        except LockTimeout as e:
            results.append(str(e))

    a = threading.Thread(target=job_a)
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=job_b, args=(0.2,))
    b.start()
    b.join()
    assert results[0].startswith("lock is still held after 0.2 s by pid %d (" % os.getpid())
    assert results[0].endswith("which says: job A")
    waiter = threading.Thread(target=job_b, args=(10,))
    waiter.start()
    time.sleep(0.1)
    release.set()
    a.join()
    waiter.join()
    assert results[1] == "B locked"


def test_a_holder_that_wrote_nothing_is_named_by_the_kernel(tmp_path):
    # flock(1) around pcompact in cron takes the lock without writing a pid.
    flock = shutil.which("flock")
    assert flock, "util-linux flock(1) is needed"
    path = tmp_path / "bareos.lock"
    proc = subprocess.Popen([flock, str(path), "-c", "echo locked; exec sleep 60"],
                            stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout) as e:
            FileLock(str(path), 0.1, "lockfile").acquire()
        assert e.value.holder_pid == proc.pid
        assert "by pid %d (%s %s -c echo locked; exec sleep 60)" % (proc.pid, flock, path) in str(e.value)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_no_fd_is_leaked_on_any_path(tmp_path, holder):
    path, held = str(tmp_path / "l"), str(tmp_path / "held")
    holder(held)
    before = open_fds()
    for _ in range(20):
        with FileLock(path, 1, "lock"):
            pass
        with pytest.raises(RuntimeError):
            with FileLock(path, 1, "lock"):
                raise RuntimeError("the job failed")
    for _ in range(5):
        with pytest.raises(LockTimeout):
            FileLock(held, 0, "lock").acquire()
    with pytest.raises(HostError):
        FileLock(str(tmp_path / "missing" / "l"), 0, "lock").acquire()
    assert open_fds() == before


def test_an_interrupted_wait_closes_its_fd(tmp_path, holder):
    path = str(tmp_path / "l")
    holder(path)
    before = open_fds()
    previous = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            FileLock(path, 30, "lock").acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert open_fds() == before


def test_bad_lock_paths_name_the_option(tmp_path):
    with pytest.raises(HostError) as e:
        FileLock(str(tmp_path / "no" / "dir.lock"), 1, "lockfile /no/dir.lock").acquire()
    assert str(e.value) == ("lockfile /no/dir.lock: cannot open %s: No such file or directory"
                            % (tmp_path / "no" / "dir.lock"))
    target = tmp_path / "elsewhere"
    os.symlink(str(target), str(tmp_path / "link.lock"))
    with pytest.raises(HostError, match="cannot open .*link.lock: Too many levels of symbolic links"):
        FileLock(str(tmp_path / "link.lock"), 1, "lockfile").acquire()
    assert not target.exists()                    # a symlink is never followed to create a file
    with pytest.raises(HostError, match="lockfile var/lock/x: the lock file must be an absolute path"):
        two_container_host(tmp_path).host.lockfile("var/lock/x", 1)
    with pytest.raises(ValueError, match="lockfile: the timeout must be"):
        FileLock(str(tmp_path / "l"), -1, "lockfile")
    lock = FileLock(str(tmp_path / "l"), 0, "lockfile")
    with lock:
        with pytest.raises(HostError, match="already held by this object"):
            lock.acquire()


def test_host_locks_live_under_the_host_root(tmp_path):
    box = two_container_host(tmp_path)
    web, db = box.host.find(uuid=WEB), box.host.find(uuid=DB)
    with box.host.lockfile(b"/var/lock/bareos-vz7.lock", 1, "job 1") as lock:
        assert lock.path == box.root + b"/var/lock/bareos-vz7.lock"
        with pytest.raises(LockTimeout, match="^lockfile /var/lock/bareos-vz7.lock is still held"):
            box.host.lockfile("/var/lock/bareos-vz7.lock", 0).acquire()
    with box.host.container_lock(web, 1, "backup") as lock:
        assert lock.path == box.root + b"/var/lock/vz7native/ct-%s.lock" % web.uuid.encode()
        with box.host.container_lock(db, 0):        # another container: no conflict
            pass
        with pytest.raises(LockTimeout) as e:
            box.host.container_lock(web, 0.05).acquire()
        assert str(e.value).startswith(
            "the lock of container 'web01' (%s) (/var/lock/vz7native/ct-%s.lock) is still held "
            "after 0.05 s by pid %d" % (web.uuid, web.uuid, os.getpid()))
        assert str(e.value).endswith("which says: backup")
