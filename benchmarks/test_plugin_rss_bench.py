"""Peak RSS of the Bareos FD backing up a container of a million entries
through the plugin, against the simulator's reference plugin on the same image.

The FD simulator runs in lean mode (``Director(lean=True)``): its job records
go to files, so the FD process holds nothing per file of its own and its peak
RSS (VmHWM, reset before the job) is the FD's base, python3-fd's simulated
core and the plugin. The plugin backs up a running sandbox container (snapshot,
portable mount, walk, unmount, merge) as in ``test_plugin_backup_bench``; the
reference plugin (``reference_tree``, ``io=core``) the same image mounted
read-only with the portable backend, to show the simulator's own base. One job
of each, one FD process per job; the portable mount's FUSE helper is a process
of its own and not counted.

The container: ``VZ7N_BENCH_RSS_ENTRIES`` entries (default 1,000,000) in
directories of 1,000 entries, one file in 16 holding 1 to 200 bytes (on the
tmpfs the tree is built on, every file with data takes a page). The disk gets
an inode per 16 KiB (mkfs.ext4's default ratio), so its size follows the
entry count: 16 GiB per million entries, sparse. Tree, image and the
simulator's work directories on tmpfs (``/dev/shm``). At a million entries
building the image takes a few minutes, each job about half an hour on the
shared 2-vCPU VM (the simulator's core is Python: about 1 ms per file).
"""
import os
import shutil
import tempfile
import time

import pytest

from conftest import goal, note, record
from test_plugin_backup_bench import (GiB, backup_in_fresh_fd, files_tree, mounted_image,
                                      reference_line, scratch, vz7_line,  # noqa: F401
                                      _sandbox)

from fdsim.testing import make_director  # tests/ is on sys.path since the import above

ENTRIES = int(os.environ.get("VZ7N_BENCH_RSS_ENTRIES", "1000000"))
ENTRIES_PER_DIR = 1000
DIRS = max(1, ENTRIES // ENTRIES_PER_DIR)
FILES_PER_DIR = max(0, ENTRIES // DIRS - 1)
# mkfs.ext4 makes an inode per 16 KiB; room for the tree, the container's own
# entries and lost+found.
DISK_SIZE = max(2, -(-(ENTRIES + 10000) * 16384 // GiB)) * GiB
LIMIT = 64 * 10 ** 6

TREE_ENTRIES = DIRS * (FILES_PER_DIR + 1)
GROUP = "peak RSS: FD backing up %s entries (lean simulator)" % format(TREE_ENTRIES, ",")
goal(GROUP, "vz7_plugin", "reference_plugin", "size_under", LIMIT,
     "VmHWM of the FD process over one Full backup; the reference plugin's is the "
     "simulator's own base")


def _size(k):
    return 0 if k % 16 else 1 + k % 200


@pytest.fixture(scope="module")
def many_entries_host(scratch):  # noqa: F811
    started = time.time()
    sandbox = _sandbox(scratch, "many", tree_builder=files_tree(DIRS, FILES_PER_DIR, _size),
                       disk_size=DISK_SIZE)
    with sandbox:
        shutil.rmtree(sandbox.tree(sandbox.containers[0]))  # its image holds it
        note("peak RSS: container of %s entries (%d GiB disk) built in %.0f s" % (
            format(TREE_ENTRIES, ","), DISK_SIZE // GiB, time.time() - started))
        yield sandbox


@pytest.mark.parametrize("contender", ["reference_plugin", "vz7_plugin"])
def test_peak_rss(benchmark, contender, many_entries_host, scratch,  # noqa: F811
                  mounted_image):  # noqa: F811
    director = make_director(tempfile.mkdtemp(dir=scratch, prefix="fdsim-lean-"),
                             isolation="process", lean=True)
    if contender == "vz7_plugin":
        line = vz7_line(many_entries_host)
    else:
        line = reference_line(mounted_image(many_entries_host))
    benchmark.group = GROUP
    benchmark.name = contender
    started = time.time()
    try:
        result, peak = benchmark.pedantic(backup_in_fresh_fd, args=(director, line),
                                          rounds=1, iterations=1)
    finally:
        shutil.rmtree(director.workdir, ignore_errors=True)  # catalog, records: on tmpfs
    seconds = time.time() - started
    assert result.files >= TREE_ENTRIES
    record(GROUP, contender, peak * 1024)
    benchmark.extra_info.update({"files": result.files, "peak_rss_kib": peak,
                                 "job_seconds": seconds})
    note("peak RSS: %s: %d files saved in %.0f s (job, FD and Director); FD peak RSS "
         "%.1f MiB" % (contender, result.files, seconds, peak / 1024.0))
