"""What several vz7native.host test modules share: a small host, helper processes,
a run dir of a module's own."""
import contextlib
import os
import subprocess

from vz7native.mount import state

from vz7native.host.sandbox import Sandbox

WEB = "2d109ae4-5231-475f-bc44-5cabf5d8503b"
DB = "9a3c9e1f-6a77-4c1b-8e0e-35b6f3d5a0c2"


def two_container_host(tmp_path, db_name="db01"):
    """A sandbox host with the configuration (no image) of web01 (WEB) and DB."""
    box = Sandbox.create(str(tmp_path / "host"))
    box.write_container(WEB, "web01")
    box.write_container(DB, db_name)
    return box


class Processes(object):
    """Helper processes of a test: each prints a line once it is ready (so its
    command line and locks are in place); ``close()`` kills them all."""

    def __init__(self):
        self._procs = []

    def start(self, argv, ready, cwd=None):
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.PIPE,
                                universal_newlines=True)
        self._procs.append(proc)
        assert proc.stdout.readline().strip() == ready
        return proc

    def close(self):
        for proc in self._procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()


@contextlib.contextmanager
def own_run_dir(base):
    """``$VZ7NATIVE_RUN_DIR`` is ``base`` meanwhile: the mounts a test module makes
    are recorded there, and other people's are never seen (nor cleaned)."""
    old = os.environ.get(state.RUN_DIR_ENV)
    os.environ[state.RUN_DIR_ENV] = os.fsdecode(base)
    try:
        yield base
    finally:
        if old is None:
            del os.environ[state.RUN_DIR_ENV]
        else:
            os.environ[state.RUN_DIR_ENV] = old
