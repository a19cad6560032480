"""pcompact detection from real processes, flocks and the log a sandbox host holds.

A stand-in pcompact is a real process whose kernel name is ``pcompact`` (a Python
interpreter started through a link of that name): it locks the sandbox's
``/var/run/pcompact.pid`` and writes ``Inspect {UUID}`` lines to its log, as
pcompact does."""
import os
import sys
import time

import pytest

from host_helpers import DB, WEB, Processes, two_container_host
from vz7native.host import PcompactRunning

# argv: state file, log file ("-" for none), container to log ("-" for none).
PCOMPACT = r"""
import fcntl, sys, time
state, log, inspect = sys.argv[1:4]
fd = open(state, "a+")
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
if log != "-":
    with open(log, "a") as f:
        f.write("2026-11-26T02:00:00+0000 pcompact : Inspect /vz/private/old/root.hdd/DiskDescriptor.xml\n")
        if inspect != "-":
            f.write("2026-11-26T02:00:01+0000 pcompact : Inspect {%s}\n" % inspect)
            f.write("2026-11-26T02:00:01+0000 pcompact : ploop=1024MB image=700MB data=300MB\n")
print("ready", flush=True)
time.sleep(60)
"""
# A stand-in ``vzctl compact <CT>``: started as "vzctl compact <CT>" in a directory
# where "compact" is this script.
VZCTL = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def box(tmp_path):
    return two_container_host(tmp_path)


@pytest.fixture
def start(tmp_path):
    """start(name, argv, cwd) runs the Python interpreter under the kernel name
    ``name`` and waits for its "ready"."""
    processes = Processes()

    def run(name, argv, cwd=None):
        link = tmp_path / name
        if not link.exists():
            os.symlink(os.path.realpath(sys.executable), str(link))
        proc = processes.start([link] + argv, "ready", cwd=cwd)
        with open("/proc/%d/comm" % proc.pid) as f:
            assert f.read().strip() == name
        return proc

    yield run
    processes.close()


def pcompact(box, start, tmp_path, inspect, log=True):
    script = tmp_path / "pcompact.py"
    script.write_text(PCOMPACT)
    return start("pcompact", [str(script), os.fsdecode(box.host.real(b"/var/run/pcompact.pid")),
                              os.fsdecode(box.host.real(b"/var/log/pcompact.log")) if log else "-",
                              inspect or "-"])


def test_nothing_running(box):
    box.host.check_pcompact(box.host.find(name="web01"))


def test_pcompact_on_this_container(box, start, tmp_path):
    proc = pcompact(box, start, tmp_path, WEB)
    with pytest.raises(PcompactRunning) as e:
        box.host.check_pcompact(box.host.find(name="web01"))
    assert e.value.pid == proc.pid
    assert str(e.value).startswith("pcompact (pid %d (" % proc.pid)
    assert str(e.value).endswith("is compacting container 'web01' (%s) (its log "
                                 "/var/log/pcompact.log: Inspect {%s})" % (WEB, WEB))


def test_pcompact_on_another_container(box, start, tmp_path):
    pcompact(box, start, tmp_path, DB)
    box.host.check_pcompact(box.host.find(name="web01"))
    with pytest.raises(PcompactRunning):
        box.host.check_pcompact(box.host.find(name="db01"))


@pytest.mark.parametrize("case", ["no log", "old log", "no container in the log"])
def test_pcompact_that_does_not_say_where_it_is(box, start, tmp_path, case):
    log = box.host.real(b"/var/log/pcompact.log")
    if case == "old log":
        with open(log, "w") as f:
            f.write("2026-11-25T02:00:01+0000 pcompact : Inspect {%s}\n" % DB)
        os.utime(log, (time.time() - 86400, time.time() - 86400))
    proc = pcompact(box, start, tmp_path, None, log=case == "no container in the log")
    why = {"no log": "its log /var/log/pcompact.log cannot be read (No such file or directory)",
           "old log": "its log /var/log/pcompact.log has nothing since it started",
           "no container in the log": "its log /var/log/pcompact.log names no container"}[case]
    with pytest.raises(PcompactRunning) as e:
        box.host.check_pcompact(box.host.find(name="web01"))
    assert e.value.pid == proc.pid
    assert "is running and %s, so it may be compacting container 'web01'" % why in str(e.value)
    assert str(e.value).endswith("run pcompact under the backup's lockfile to keep them apart")


def test_the_state_file_lock_names_pcompact_whatever_its_process_name(box, start, tmp_path):
    # The flock on /var/run/pcompact.pid is found through /proc/locks, not by name.
    script = tmp_path / "pcompact.py"
    script.write_text(PCOMPACT)
    proc = start("compactor", [str(script), os.fsdecode(box.host.real(b"/var/run/pcompact.pid")),
                               os.fsdecode(box.host.real(b"/var/log/pcompact.log")), WEB])
    with pytest.raises(PcompactRunning) as e:
        box.host.check_pcompact(box.host.find(uuid=WEB))
    assert e.value.pid == proc.pid


def test_vzctl_compact_of_this_container(box, start, tmp_path):
    workdir = tmp_path / "vzctl-cwd"
    workdir.mkdir()
    (workdir / "compact").write_text(VZCTL)
    proc = start("vzctl", ["compact", "web01", "--defrag"], cwd=str(workdir))
    with pytest.raises(PcompactRunning) as e:
        box.host.check_pcompact(box.host.find(uuid=WEB))
    assert e.value.pid == proc.pid
    assert str(e.value) == "pid %d (%s compact web01 --defrag) is compacting container " \
                           "'web01' (%s)" % (proc.pid, tmp_path / "vzctl", WEB)
    box.host.check_pcompact(box.host.find(uuid=DB))
    start("vzctl", ["compact", "{%s}" % DB.upper()], cwd=str(workdir))
    with pytest.raises(PcompactRunning):
        box.host.check_pcompact(box.host.find(uuid=DB))


def test_vzctl_lock_held_by_pcompact(box, start, tmp_path):
    # Whatever its log says, pcompact holding the container's vzctl lock is working on it.
    proc = pcompact(box, start, tmp_path, DB)
    web = box.host.find(name="web01")
    box.stage_vzctl_lock(web, "compacting", pid=proc.pid)
    with pytest.raises(PcompactRunning) as e:
        box.host.check_pcompact(web)
    assert str(e.value).startswith("pcompact (pid %d (" % proc.pid)
    assert str(e.value).endswith("holds vzctl's lock /vz/lock/%s.lck of container 'web01' (%s): "
                                 "it is compacting it" % (WEB, WEB))
