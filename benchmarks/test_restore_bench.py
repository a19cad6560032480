"""Restores through the FD simulator against plain copies of the same trees.

* ``restore=ct`` of a container with many small files, and of one with large
  files: a whole restore job (fresh raw GPT + ext4 disk on a loop device, every
  entry created with its exact attributes, unmount, conversion into a ploop
  image, ``ve.conf``, registration) against ``cp -a`` of the same tree (from a
  read-only mount of the container's image) into a fresh loop-mounted ext4 of the
  same size (mkfs, mount, copy, unmount).
* ``restore=files`` of many small files into a running container against the
  simulator's reference plugin restoring the same files with CF_CORE (the core
  creates them, following paths; the plugin only writes the data).

Sizes (``VZ7N_BENCH_RESTORE_SMALL``, ``VZ7N_BENCH_RESTORE_LARGE_MIB``,
``VZ7N_BENCH_RESTORE_FILES``) default to 20000 small files, 1024 MiB in large
files and 5000 files. Three rounds each, wall-clock time (the jobs run in FD
processes); the ratios are of medians.
"""
import itertools
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import MEDIANS, goal, note, record

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from fdsim.testing import make_director, plugin_line  # noqa: E402
from timed_plugin import entry_point_times, write_timed_plugin  # noqa: E402
from restore_helpers import image_view, loop_mounted, stand_in_prlctl
from vz7native import image
from vz7native.host.sandbox import Sandbox
from vz7native.host.tree import OLD_MTIME

pytestmark = pytest.mark.root

SMALL = int(os.environ.get("VZ7N_BENCH_RESTORE_SMALL", "20000"))
LARGE_MIB = int(os.environ.get("VZ7N_BENCH_RESTORE_LARGE_MIB", "1024"))
FILES = int(os.environ.get("VZ7N_BENCH_RESTORE_FILES", "5000"))
ROUNDS = 3
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "src", "plugin")
UUIDS = ("5e000000-0000-4000-8000-%012x" % n for n in itertools.count(1))

goal("restore_ct_small", "restore_ct", "cp_a", "at_most", 1.5,
     "restore=ct of %d small files at most 1.5x cp -a into a fresh ext4" % SMALL)
goal("restore_ct_large", "restore_ct", "cp_a", "at_most", 1.5,
     "restore=ct of %d MiB in large files at most 1.5x cp -a into a fresh ext4" % LARGE_MIB)
goal("restore_ct_small: own time", "restore_ct_own", "cp_a", "at_most", 1.5,
     "the plugin's own time in a restore=ct of %d small files (its entry points, the end of "
     "the job included; not the simulator's) at most 1.5x cp -a" % SMALL)
goal("restore_ct_large: own time", "restore_ct_own", "cp_a", "at_most", 1.5,
     "the plugin's own time in a restore=ct of %d MiB in large files at most 1.5x cp -a"
     % LARGE_MIB)
goal("restore_files", "restore_files", "reference_cf_core", "at_most", 2.0,
     "restore=files of %d files at most 2x the reference plugin with CF_CORE" % FILES)


def small_tree(root, seed):
    rnd = random.Random(seed)
    for n in range(SMALL):
        directory = os.path.join(root, b"d%03d" % (n // 100))
        if n % 100 == 0:
            os.makedirs(directory)
        path = os.path.join(directory, b"f%05d" % n)
        with open(path, "wb") as f:
            f.write(rnd.getrandbits(8 * 64).to_bytes(64, "little") * rnd.randint(1, 32))
        os.utime(path, (OLD_MTIME, OLD_MTIME))


def large_tree(root, seed):
    chunk = os.urandom(1 << 20)
    for n in range(8):
        with open(os.path.join(root, b"large-%d" % n), "wb") as f:
            for _ in range(LARGE_MIB // 8):
                f.write(chunk)


class Bench(object):
    """A sandbox host with one container of the tree ``builder`` writes, backed up."""

    def __init__(self, top, builder, disk_size, running, name):
        self.base = os.path.join(top, name)
        self.root = os.path.join(self.base, "host")
        stand_in_prlctl(os.path.join(top, "bin"), self.root)
        self.box = Sandbox.build(self.root, count=1, seed=3, running=(0,) if running else (),
                                 disk_size=disk_size, tree_builder=builder)
        self.ct = self.box.containers[0]
        self.director = make_director(os.path.join(self.base, "fdsim"), isolation="process")
        # Through the timing wrapper: the restores load the module the backup named.
        line = write_timed_plugin(os.path.join(self.base, "timed"), "timed_vz7", PLUGIN_DIR,
                                  "bareos-fd-vz7_ct_fs.py", host_root=self.root)
        self.own_times = []
        self.full = self.director.backup(line, fd_plugin_options=[
            "python3:name=%s:uuid=%s" % (self.ct.name, self.ct.uuid)])
        assert self.full.status == "T", self.full.report()
        self._source = None

    def source(self):
        """The container's filesystem, from a read-only mount of its image kept for
        the module (cp -a copies from it; mounting is no part of what is timed)."""
        if self._source is None:
            self._view = image_view(self.ct.disk_descriptor, os.path.join(self.base, "view"))
            self._source = self._view.__enter__()
        return self._source

    def close(self):
        if self._source is not None:
            self._view.__exit__(None, None, None)
        self.box.close()

    def restore_ct(self):
        uuid = next(UUIDS)
        result = self.director.restore(
            jobid=self.full.jobid,
            plugin_options="python:restore=ct:new_name=bench-%s:new_uuid=%s" % (uuid, uuid))
        assert result.status == "T" and not result.messages("M_ERROR"), result.report()[-3000:]
        assert [m for m in result.plugin_messages("M_INFO") if " restored: " in m], \
            result.report()[-3000:]
        self.own_times.append(sum(wall for _, _, wall in
                                  entry_point_times(result)["times"].values()))

    def cp_a(self):
        """mkfs + mount + cp -a + umount, into a disk of the container's size."""
        scratch = os.path.join(self.base, "cp")
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(os.path.join(scratch, "mnt"))
        raw = os.path.join(scratch, "disk.raw").encode()
        partition = image.make_ct_raw_disk(None, self.ct.disk_size, raw)
        with loop_mounted(raw, partition.offset, partition.size,
                          os.path.join(scratch, "mnt")) as target:
            subprocess.check_call(["cp", "-a", os.fsdecode(self.source()) + "/.", target])
        shutil.rmtree(scratch)


@pytest.fixture(scope="module")
def bench_path(tmp_path_factory):
    """A directory for the module's stand-in prlctl, first on PATH."""
    base = str(tmp_path_factory.mktemp("bench-restore"))
    path = os.environ["PATH"]
    os.environ["PATH"] = os.path.join(base, "bin") + os.pathsep + path
    yield base
    os.environ["PATH"] = path


@pytest.fixture(scope="module")
def small(bench_path):
    bench = Bench(bench_path, small_tree, 1 << 30, running=False, name="small")
    yield bench
    bench.close()


@pytest.fixture(scope="module")
def large(bench_path):
    bench = Bench(bench_path, large_tree, (LARGE_MIB + 512) << 20, running=False, name="large")
    yield bench
    bench.close()


def measure_restore_ct(measure, bench, group, contender):
    """A restore=ct round of ``contender``; after the plugin's rounds, its own time
    (in its entry points, the end of the job included) against cp -a's."""
    bench.source()
    measure(group, contender, getattr(bench, contender), setup=lambda: None, rounds=ROUNDS)
    if contender == "restore_ct":
        own = sorted(bench.own_times)[len(bench.own_times) // 2]
        record(group + ": own time", "restore_ct_own", own)
        record(group + ": own time", "cp_a", MEDIANS[group]["cp_a"])
        note("%s: the plugin's own time %.2f s (median of %s s), the whole job %.2f s" % (
            group, own, ", ".join("%.2f" % t for t in bench.own_times),
            MEDIANS[group]["restore_ct"]))


@pytest.mark.parametrize("contender", ["cp_a", "restore_ct"])
def test_restore_ct_small_files(measure, small, contender):
    measure_restore_ct(measure, small, "restore_ct_small", contender)


@pytest.mark.parametrize("contender", ["cp_a", "restore_ct"])
def test_restore_ct_large_files(measure, large, contender):
    measure_restore_ct(measure, large, "restore_ct_large", contender)


def files_tree(root, seed):
    for n in range(FILES):
        directory = os.path.join(root, b"srv", b"d%03d" % (n // 100))
        if n % 100 == 0:
            os.makedirs(directory)
        with open(os.path.join(directory, b"f%05d" % n), "wb") as f:
            f.write(b"x" * 200)


@pytest.fixture(scope="module")
def files(bench_path):
    """(ours, reference): one restore job each of the same FILES files."""
    bench = Bench(bench_path, files_tree, 256 << 20, running=True, name="files")
    ct = bench.ct
    counter = itertools.count()

    def ours():
        result = bench.director.restore(
            jobid=bench.full.jobid, plugin_options="python:restore=files",
            regexwhere="!^/mnt/bareos/%s/!/vz/root/%s/tmp/r%d/!" % (ct.uuid, ct.uuid,
                                                                    next(counter)),
            select="/mnt/bareos/%s/srv" % ct.uuid)
        assert result.status == "T", result.report()

    source = os.path.join(bench.base, "reference")
    shutil.copytree(os.path.join(os.fsdecode(ct.root), "srv"), os.path.join(source, "srv"),
                    symlinks=True)
    reference = make_director(os.path.join(bench.base, "fdsim-reference"),
                              isolation="process")
    full = reference.backup(plugin_line("reference_tree", root=source, restore="core"))
    assert full.status == "T", full.report()

    def reference_cf_core():
        result = reference.restore(jobid=full.jobid, where=os.path.join(
            bench.base, "reference-out-%d" % next(counter)))
        assert result.status == "T", result.report()

    yield {"restore_files": ours, "reference_cf_core": reference_cf_core}
    bench.close()


@pytest.mark.parametrize("contender", ["reference_cf_core", "restore_files"])
def test_restore_files_against_the_reference_plugin(measure, files, contender):
    measure("restore_files", contender, files[contender], setup=lambda: None, rounds=ROUNDS)
