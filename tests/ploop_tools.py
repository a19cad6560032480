"""libploop as a cross-check in tests: the Debian ``ploop`` CLI and the binding,
optionally in a private mount namespace that fakes ploop v2 support.

* The Debian 1.15 CLI reads 4077 bytes from its path arguments whatever their
  length and segfaults unless that much environment follows argv on the stack
  (ploop-notes §0.2): :func:`run_ploop` pads the environment.
* libploop refuses format v2 unless /sys/module/ploop/parameters/large_disk_support
  exists (ploop-notes §0.3): with ``fake_v2=True`` the command runs under
  ``unshare --mount`` with a tmpfs over /sys/module that holds that file, so
  nothing outside the command sees it. The binding's v2 steps therefore run in
  a child Python (:func:`run_binding`), never in the test process.
"""
import os
import subprocess
import sys

STACK_PAD = {"VZ7N_TEST_STACK_PAD": "x" * 8192}
_FAKE_V2 = ("mount -t tmpfs vz7n-fake-ploop-module /sys/module && "
            "mkdir -p /sys/module/ploop/parameters && "
            "echo Y > /sys/module/ploop/parameters/large_disk_support && "
            'exec "$@"')
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


class LibploopFailed(AssertionError):
    """A libploop cross-check step failed (carries its output)."""


def _run(argv, fake_v2, env=None, check=True):
    if fake_v2:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _FAKE_V2,
                "sh"] + list(argv)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)
    output = proc.stdout.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise LibploopFailed("%s exited %d:\n%s" % (
            " ".join(os.fsdecode(a) for a in argv), proc.returncode, output))
    return proc.returncode, output


def run_ploop(*args, **kw):
    """Run the ``ploop`` CLI with the stack padding; returns (rc, output).

    Keywords: ``fake_v2`` (run in the faked-v2 namespace), ``check`` (raise
    LibploopFailed on a non-zero exit, default True).
    """
    return _run(["ploop"] + [os.fsdecode(a) for a in args], kw.get("fake_v2", False),
                STACK_PAD, kw.get("check", True))


def _binding(code, args):
    program = "import sys\nfrom vz7native import ploop\nargs = sys.argv[1:]\n" + code
    env = {"PYTHONPATH": _SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return [sys.executable, "-c", program] + [os.fsdecode(a) for a in args], env


def run_binding(code, *args, **kw):
    """Run ``code`` in a child Python that has ``ploop`` (vz7native.ploop) and
    ``args`` (str) in scope; returns its output. Keyword ``fake_v2`` as above."""
    argv, env = _binding(code, args)
    return _run(argv, kw.get("fake_v2", False), env)[1]


def start_binding(code, *args):
    """:func:`run_binding` without waiting: the child's Popen (output piped)."""
    argv, env = _binding(code, args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **env), stdin=subprocess.DEVNULL)


def check_deltas(files, fake_v2=False):
    """``ploop check -r -f -c`` (read-only, forced, duplicates and holes) on each delta."""
    for path in files:
        run_ploop("check", "-r", "-f", "-c", path, fake_v2=fake_v2)


def convert_to_raw(dd, fake_v2=False):
    """``ploop convert -f raw``: the image becomes a raw disk in place; returns its file."""
    from vz7native.image import read_descriptor

    run_ploop("convert", "-f", "raw", dd, fake_v2=fake_v2)
    descriptor = read_descriptor(dd)
    assert descriptor.mode == "raw" and len(descriptor.images) == 1, descriptor.images
    return descriptor.chain()[0].file


def libploop_snapshot(dd, fake_v2=False):
    """Take a snapshot with libploop (offline, through the binding); returns its GUID."""
    code = "with ploop.Disk.open(args[0]) as disk: print(disk.create_snapshot())"
    return run_binding(code, dd, fake_v2=fake_v2).split()[-1]


def libploop_merge(dd, fake_v2=False):
    """Merge the top delta into its parent with libploop."""
    run_binding("with ploop.Disk.open(args[0]) as disk: disk.merge_snapshot()", dd,
                fake_v2=fake_v2)


def snapshotted_image(old_raw, new_raw, target_dir, version=1):
    """An image whose snapshot shows ``old_raw`` and whose live top shows ``new_raw``.

    import_raw of the old disk (format ``version``), a libploop snapshot, then
    write_clusters of the new disk into the top. Returns (descriptor, snapshot GUID).
    """
    from vz7native import image

    dd = image.import_raw(old_raw, target_dir, version=version)
    guid = libploop_snapshot(dd, fake_v2=version == 2)
    image.write_clusters(dd, new_raw)
    return dd, guid
