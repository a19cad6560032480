"""The binding as Bareos loads it: a fresh sub-interpreter per job, jobs at once."""
import os
import subprocess
import sys
import threading

import pytest

JOB = r"""
import os, sys
from vz7native import ploop
work = os.path.join({work!r}, "job{n}")
os.makedirs(work)
dd = ploop.create_image(os.path.join(work, "root.hds"), 16 << 20)
with ploop.Disk.open(dd) as disk:
    for i in range(10):
        disk.delete_snapshot(disk.create_snapshot())
    try:
        disk.delete_snapshot("{{{n:08d}-0000-4000-8000-000000000000}}")
    except ploop.NoSnapshotError as e:
        message = e.message
    left = len(disk.snapshots)
with open(os.path.join(work, "result"), "w") as f:
    f.write("%d %s %s" % (left, "{n:08d}" in message, "ctypes" in sys.modules))
"""


def test_importing_the_binding_loads_no_ctypes():
    # ctypes costs ~190 KB per Bareos job that is never given back (contract §12.1).
    code = "import sys, vz7native.ploop; print('ctypes' in sys.modules)"
    out = subprocess.check_output([sys.executable, "-c", code], universal_newlines=True)
    assert out.strip() == "False"


def test_jobs_in_concurrent_sub_interpreters(tmp_path):
    interpreters = pytest.importorskip(
        "_xxsubinterpreters", reason="this Python offers no sub-interpreters")

    failures = []

    def job(n):
        iid = interpreters.create()
        try:
            interpreters.run_string(iid, JOB.format(work=str(tmp_path), n=n))
        except Exception as e:
            failures.append("job%d: %s" % (n, e))
        finally:
            interpreters.destroy(iid)

    # Three rounds of three overlapping jobs: fresh and shared module copies alike.
    for round_ in range(3):
        threads = [threading.Thread(target=job, args=(round_ * 3 + i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    results = sorted(os.listdir(str(tmp_path)))
    assert len(results) == 9
    for name in results:
        with open(os.path.join(str(tmp_path), name, "result")) as f:
            assert f.read() == "1 True False", name
