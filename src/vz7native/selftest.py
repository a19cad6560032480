"""``vz7ploop selftest``: every path of the library, run on a scratch image on this host.

    >>> from vz7native import selftest
    >>> report = selftest.run(b"/vz/selftest")
    >>> report.ok, [(s.name, s.status) for s in report.steps]

The image part, on a disk in ``<dir>/disk``:

* with the ploop kernel driver: ``create`` (``ploop.create_image`` with
  ext4), ``mount-rw`` (``Disk.mount``), ``write`` (the reference tree of
  :func:`vz7native.host.tree.write_tree`: every kind of file, names that are
  not UTF-8, xattrs, ACLs) copied into the mount; without it these are skipped
  and ``build-image`` makes the disk of the same tree with
  :func:`vz7native.image.make_ct_disk`, so that the steps below still run;
* ``snapshot`` (online while mounted), ``mount-kernel`` and
  ``mount-portable`` (the snapshot read-only through each backend of
  :func:`vz7native.mount.mount_readonly`, compared with the reference tree
  entry by entry), ``merge`` (``delete_snapshot``, online while mounted),
  ``umount``, ``verify`` (:func:`vz7native.image.verify`) and ``ploop-check``
  (the ``ploop`` binary, read-only, on every delta, where it is installed).

The backup part, ``backup``: a sandbox host in ``<dir>/host``
(:class:`vz7native.host.sandbox.Sandbox`: nothing of the host's own
``/etc/vz`` or ``/vz`` is read or written) with one running container; a Full
backup of it by the Bareos plugin, run by the Bareos FD simulator
(``python -m vz7native.fdsim``, a separate process, FD workdir ``<dir>/fd``)
with the plugin's FileSet options and ``host_root`` the sandbox. The job must
end ``T``; the catalog is compared with the container's tree, entry by entry.

The restore part, ``restore``: that backup restored as a new container
(restore=ct with ``new_name`` and ``new_uuid``) by the plugin through the
simulator, which must end ``T``. ``prlctl`` there is the sandbox's
(:meth:`Sandbox.write_prlctl <vz7native.host.sandbox.Sandbox.write_prlctl>`,
first in the simulator's ``PATH``): it registers in the sandbox, and the host's
own prlctl is never run. Then its filesystem (mounted read-only) and private
area are compared with the original's, entry by entry, and it is checked
registered and stopped. The new container (registration, private area, root
directory) is removed at the end of the step on every path (the plugin removes
what a failing restore made itself); if any of its paths exists before, the
step refuses and touches none of them.

The plugin is looked for in ``plugin_dir`` (``--plugin-dir``), else in the
source checkout this module is part of (``src/plugin``), else where the RPM
installs it (:data:`DEFAULT_PLUGIN_DIR`); the simulator is ``vz7native.fdsim``
(installed with vz7native), else the checkout's ``tests/fdsim``. If either is
missing, ``backup`` fails saying which and where (:class:`NotInstalled`) and
``restore`` is skipped: the run is not ok, as these steps are part of what the
self-test vouches for. A job the simulator ends otherwise than ``T`` fails its
step with the job's log in the detail; an ok step's detail gives the job's
JobId, status, files and bytes.

Every step reports its time and ``ok``, ``failed`` (with the error) or
``skipped`` (with why). What a step makes is registered on one ``ExitStack``
the moment it exists and undone on every path (errors, Ctrl-C); then ``<dir>``
is removed. ``<dir>`` must not exist, be empty, or hold the marker file of an
earlier self-test with nothing mounted below it, must lie apart from every
container's private area and root, and must have no ``:`` in its path.
"""
import collections
import contextlib
import importlib.util
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import time
import traceback

from vz7native import mount, procfs
from vz7native.paths import show

__all__ = ["run", "Report", "Step", "SelftestError", "DirectoryRefused", "NotInstalled",
           "MARKER", "DEFAULT_DIR", "DEFAULT_PLUGIN_DIR"]

DEFAULT_DIR = b"/vz/selftest"
MARKER = b".vz7ploop-selftest"
DISK_SIZE = 128 << 20
# The kernel steps' disk, expanded (sparse): mke2fs gives filesystems under 512 MiB
# ("small") 128-byte inodes, which cannot hold the tree's times past 2038.
KERNEL_DISK_SIZE = 1 << 30
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# Debian's ploop 1.15 CLI reads 4077 bytes from each path argument whatever its
# length and crashes unless that much environment follows argv on the stack.
_PLOOP_STACK_PAD = {"VZ7N_STACK_PAD": "x" * 8192}


class SelftestError(Exception):
    """The self-test cannot start or could not clean up after itself."""


class DirectoryRefused(SelftestError):
    """The self-test's directory holds or is near something it did not make."""


class Step(object):
    """One step: ``name``, ``status`` (``ok``, ``failed``, ``skipped``),
    ``seconds`` (None when skipped) and ``detail`` (the error or why skipped)."""

    __slots__ = ("name", "status", "seconds", "detail")

    def __init__(self, name, status, seconds=None, detail=""):
        self.name, self.status, self.seconds, self.detail = name, status, seconds, detail

    def as_dict(self):
        return {"name": self.name, "status": self.status, "seconds": self.seconds,
                "detail": self.detail}


class Report(object):
    """``directory`` and the :class:`Step` list; ``ok`` when no step failed."""

    def __init__(self, directory):
        self.directory = directory
        self.steps = []

    @property
    def ok(self):
        return all(step.status != FAILED for step in self.steps)

    def as_dict(self):
        return {"dir": show(self.directory), "ok": self.ok,
                "steps": [step.as_dict() for step in self.steps]}


class _Run(object):
    """What the steps share: the paths, the disk, the snapshot, the clean-up stack."""

    def __init__(self, directory, stack, log, plugin_dir):
        self.directory = directory
        self.stack = stack
        self.log = log
        self.plugin_given = plugin_dir
        self.tree = os.path.join(directory, b"tree")
        self.disk_dir = os.path.join(directory, b"disk")
        self.dd = None
        self.rw_mount = None
        self.snapshot = None
        # The backup and restore steps': the plugin and the simulator found, the
        # sandbox host and its prlctl, the FD's workdir, the backup's JobId.
        self.plugin_dir = self.simulator = self.simulator_env = None
        self.sandbox = self.bin_dir = self.fd_dir = self.backup_job = None

    def path(self, name):
        path = os.path.join(self.directory, name)
        os.mkdir(path, 0o700)
        return path


def _kernel_driver():
    """None when the ploop kernel driver is there, else why the kernel steps skip."""
    if os.path.exists(mount.PLOOP_MINOR):
        return None
    return "no ploop kernel driver (%s missing)" % mount.PLOOP_MINOR


def _differences(expected_tree, actual_tree):
    from vz7native.host.tree import compare_trees

    _fail_on(compare_trees(expected_tree, actual_tree), "from what was written")


def _fail_on(problems, what):
    if problems:
        raise SelftestError("%d difference(s) %s: %s%s" % (
            len(problems), what, "; ".join(problems[:5]), " ..." if len(problems) > 5 else ""))


# -- the image part ----------------------------------------------------------------

def _write_reference(run):
    from vz7native.host.tree import write_tree

    os.mkdir(run.tree, 0o755)
    write_tree(run.tree, seed=0)


def _create(run):
    from vz7native import ploop

    os.mkdir(run.disk_dir, 0o700)
    run.dd = ploop.create_image(os.path.join(run.disk_dir, b"root.hds"), KERNEL_DISK_SIZE,
                                fstype="ext4")


def _mount_rw(run):
    from vz7native import ploop

    target = run.path(b"rw")
    disk = run.stack.enter_context(ploop.Disk.open(run.dd))
    run.rw_mount = disk.mount(target)
    run.stack.callback(run.rw_mount.umount)


def _write(run):
    from vz7native.treecopy import copy_tree

    copy_tree(run.tree, run.rw_mount.target)
    _differences(run.tree, run.rw_mount.target)


def _build_image(run):
    from vz7native.image import make_ct_disk

    run.dd = make_ct_disk(run.tree, DISK_SIZE, run.disk_dir)


def _merge_if_there(dd, guid):
    from vz7native import ploop

    with ploop.Disk.open(dd) as disk:
        if any(s.guid == guid for s in disk.snapshots):
            disk.delete_snapshot(guid)


def _snapshot(run):
    from vz7native import ploop

    guid = ploop.new_guid()
    # Registered first: a snapshot half made by a failing call is merged too.
    run.stack.callback(_merge_if_there, run.dd, guid)
    with ploop.Disk.open(run.dd) as disk:
        disk.create_snapshot(guid)
    run.snapshot = guid


def _mount_snapshot(backend):
    def step(run):
        target = run.path(b"ro-" + backend.encode())
        with mount.mount_readonly(run.dd, target, guid=run.snapshot, backend=backend) as m:
            _differences(run.tree, m.target)
    return step


def _merge(run):
    from vz7native import ploop

    with ploop.Disk.open(run.dd) as disk:
        disk.delete_snapshot(run.snapshot)
        left = [s.guid for s in disk.snapshots if s.guid == run.snapshot]
    if left:
        raise SelftestError("snapshot %s is still there after its merge" % run.snapshot)


def _umount(run):
    run.rw_mount.umount()


def _verify(run):
    from vz7native import image

    report = image.verify(run.dd)
    if not report.ok:
        raise SelftestError("; ".join(report.problems))


def _ploop_check(run):
    from vz7native import image

    tool = shutil.which("ploop")
    for delta in image.read_descriptor(run.dd).chain():
        proc = subprocess.run([tool, "check", "-r", "-f", "-c", os.fsdecode(delta.file)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL,
                              env=dict(os.environ, **_PLOOP_STACK_PAD))
        if proc.returncode != 0:
            raise SelftestError("ploop check %s exited %d: %s" % (
                show(delta.file), proc.returncode,
                proc.stdout.decode("utf-8", "replace").strip()))


# -- the backup and restore parts: the Bareos plugin through the FD simulator -------

class NotInstalled(SelftestError):
    """The Bareos plugin or the FD simulator the backup and restore steps run is
    not where it should be."""


# Where the package vz7native-bareos-plugin installs the plugin (the spec's
# %{_libdir}/bareos/plugins, Bareos's plugin directory).
DEFAULT_PLUGIN_DIR = b"/usr/lib64/bareos/plugins"
PLUGIN_MODULE = "bareos-fd-vz7_ct_fs"
# The FileSet's Plugin= options of the configurations the plugin took over.
FILESET_OPTIONS = (("blocker", "tmp/backup_blocker"), ("lockfile", "/tmp/bareos_backup_cts"))
# The container the restore step makes: a name and UUID no sandbox container has.
RESTORED_NAME = "selftest-restored"
RESTORED_UUID = "5e1f7e57-7e57-4e57-8e57-5e1f7e575e1f"
# The Bareos the simulator plays: the version line of EL7 hosts' packages, whose
# stat fields hold times as unsigned 32-bit seconds (signed from 25).
BAREOS_VERSION = "23"
_UINT32_MAX = (1 << 32) - 1
# A simulator job that takes longer is killed (its process group) and fails its step.
JOB_TIMEOUT = 1800
# The directory holding this vz7native package, and the source checkout around
# it (where there is one: src/plugin and tests/fdsim beside src/vz7native).
_LIBRARY_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHECKOUT = os.path.dirname(_LIBRARY_PARENT)
_INSTALLED_SIMULATOR = "vz7native.fdsim"


def _find_plugin(given):
    """The plugin directory: ``given`` (--plugin-dir), else a source checkout's
    src/plugin, else where the RPM installs it."""
    entry = os.fsencode(PLUGIN_MODULE) + b".py"
    if given is not None:
        directory = os.path.abspath(os.fsencode(given))
        if not os.path.isfile(os.path.join(directory, entry)):
            raise NotInstalled("--plugin-dir %s holds no %s" % (show(directory), show(entry)))
        return directory
    source = os.path.join(os.fsencode(_CHECKOUT), b"src", b"plugin")
    for directory in (source, DEFAULT_PLUGIN_DIR):
        if os.path.isfile(os.path.join(directory, entry)):
            return directory
    raise NotInstalled("the Bareos plugin is not installed: no %s in %s (install the package "
                       "vz7native-bareos-plugin, or name its directory with --plugin-dir)"
                       % (show(entry), show(DEFAULT_PLUGIN_DIR)))


def _find_simulator():
    """(module name, directories its process needs on its path) of the FD simulator:
    vz7native.fdsim where vz7native is installed, else a source checkout's tests/fdsim."""
    if importlib.util.find_spec(_INSTALLED_SIMULATOR) is not None:
        return _INSTALLED_SIMULATOR, []
    tests = os.path.join(_CHECKOUT, "tests")
    if os.path.isfile(os.path.join(tests, "fdsim", "__main__.py")):
        return "fdsim", [tests]
    raise NotInstalled("the FD simulator %s is missing from vz7native in %s "
                       "(reinstall vz7native)" % (_INSTALLED_SIMULATOR, _LIBRARY_PARENT))


def _simulator_env(run, paths):
    """The simulator's environment: the sandbox's prlctl first in PATH, so that
    nothing the plugin runs reaches the host's; this vz7native (and ``paths``)
    on its Python path unless a site directory has it anyway (one would come
    before the standard library there)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.fsdecode(run.bin_dir)] + [
        p for p in env.get("PATH", "").split(os.pathsep) if p])
    sites = set(site.getsitepackages()) | {site.getusersitepackages()}
    ours = paths + ([] if _LIBRARY_PARENT in sites else [_LIBRARY_PARENT])
    env["PYTHONPATH"] = os.pathsep.join(ours + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _simulate(run, command, *args):
    """``python -m <simulator> <command> --json ...`` in the self-test's FD
    workdir, with the plugin's directory as the FD's plugin directory: what it
    printed, parsed. Killed with its FD after JOB_TIMEOUT, or when the self-test
    is interrupted."""
    from vz7native.host.register import kill_group

    argv = [sys.executable, "-m", run.simulator, command, "--json",
            "--workdir", os.fsdecode(run.fd_dir)] + list(args)
    if command in ("backup", "restore"):
        argv += ["--plugin-directory", os.fsdecode(run.plugin_dir),
                 "--bareos-version", BAREOS_VERSION]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=run.simulator_env, cwd=run.fd_dir,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise SelftestError("the simulator's %s did not finish within %d s and was killed"
                            % (command, JOB_TIMEOUT))
    except BaseException:
        kill_group(proc)
        raise
    try:
        return json.loads(out.decode("utf-8"))
    except ValueError:
        raise SelftestError("the simulator's %s exited %d without a report: %s" % (
            command, proc.returncode, (err or out).decode("utf-8", "replace").strip()[-2000:]))


def _job(run, command, *args):
    """One simulator job that must end T; the step's detail."""
    job = _simulate(run, command, *args)
    run.log("%s job %d: %s\n%s\n" % (command, job["jobid"], job["status"], "\n".join(
        "  %s %s" % (kind, text) for kind, text in job["log"])))
    if job["status"] != "T":
        raise SelftestError("Bareos %s job %d ended %s (%s); job log: %s" % (
            command, job["jobid"], job["status"], job["status_text"],
            " | ".join("%s %s" % (kind, text) for kind, text in job["log"]) or "empty"))
    return job, "Bareos %s job %d: %s, %d files, %d bytes" % (
        command, job["jobid"], job["status"], job["files"], job["bytes"])


def _plugin_line(run):
    """The FileSet's Plugin= string (a colon in a value written ``\\:``)."""
    options = [("module_path", os.fsdecode(run.plugin_dir)), ("module_name", PLUGIN_MODULE)]
    options += list(FILESET_OPTIONS) + [("host_root", os.fsdecode(run.sandbox.root))]
    return "python3:" + ":".join("%s=%s" % (key, value.replace(":", "\\:"))
                                 for key, value in options)


_NS = 1000000000
# What of describe()'s picture a catalog row's stat tells.
_STAT_KEYS = ("kind", "mode", "uid", "gid", "mtime", "size", "rdev")


class _CatalogStat(collections.namedtuple("_CatalogStat",
                                          "st_mode st_uid st_gid st_mtime_ns st_size st_rdev")):
    """A catalog row's stat fields, as :func:`stat_properties` reads them."""

    @classmethod
    def of(cls, row):
        return cls(row["mode"], row["uid"], row["gid"], row["mtime"] * _NS, row["size"],
                   row["rdev"])


def _backup(run):
    """A Full backup of a running sandbox container: the plugin through the
    simulator; the catalog compared with the container's tree."""
    from vz7native.host.sandbox import Sandbox

    run.plugin_dir = _find_plugin(run.plugin_given)
    run.simulator, paths = _find_simulator()
    sandbox = Sandbox.build(os.path.join(run.directory, b"host"), count=1, seed=7)
    run.stack.callback(sandbox.close)
    run.sandbox = sandbox
    ct = sandbox.containers[0]
    # What a killed FD leaves of the plugin's view (runs before the sandbox's close).
    run.stack.callback(mount.cleanup, ct.disk_descriptor)
    run.bin_dir = run.path(b"bin")
    sandbox.write_prlctl(run.bin_dir)
    run.fd_dir = run.path(b"fd")
    run.simulator_env = _simulator_env(run, paths)
    job, detail = _job(run, "backup", "--plugin", _plugin_line(run),
                       "--fd-plugin-options", "python3:name=%s:uuid=%s" % (ct.name, ct.uuid))
    run.backup_job = job["jobid"]
    rows = _simulate(run, "files", "--jobid", str(job["jobid"]))
    _fail_on(_saved_differences(sandbox, ct, rows), "from the container")
    return detail


def _saved_differences(sandbox, ct, rows):
    """What the catalog ``rows`` of a backup of ``ct`` miss or get wrong of its
    tree (kind, mode, owner, mtime, size, rdev; sockets are not saved) and of
    its private area (``ve.conf``). The catalog has what Bareos's stat fields
    hold: mtimes in whole seconds, clamped to an unsigned 32-bit number, and
    names that are not UTF-8 escaped by the plugin, which keeps the exact
    values in its own attribute stream; escaped names are matched by their
    properties here, and the restore step checks all of it exactly."""
    from vz7native.backup import DEFAULT_MOUNT_BASE
    from vz7native.host.tree import describe, picture_differences, stat_properties

    top = os.path.join(DEFAULT_MOUNT_BASE, ct.uuid.encode("ascii"))
    private = sandbox.host.view(ct.private)
    got, saved_private = {}, set()
    for row in rows:
        path = os.fsencode(row["path"]).rstrip(b"/")
        if path == top or path.startswith(top + b"/"):
            rel = path[len(top) + 1:] or b"."
            if rel.split(b"/")[0] != b"lost+found":
                got[rel] = stat_properties(_CatalogStat.of(row))
        elif path.startswith(private + b"/"):
            saved_private.add(path[len(private) + 1:])
    want = {}
    for rel, props in describe(sandbox.tree(ct)).items():
        if props["kind"] != stat.S_IFSOCK:
            want[rel] = {key: value for key, value in props.items() if key in _STAT_KEYS}
            seconds = want[rel]["mtime"] // _NS
            want[rel]["mtime"] = min(max(seconds, 0), _UINT32_MAX) * _NS
    unnamed = [rel for rel in want if rel not in got and not _is_utf8(rel)]
    renamed = [rel for rel in got if rel not in want]
    if sorted(_facts(want, unnamed)) == sorted(_facts(got, renamed)):
        for rel in unnamed:
            del want[rel]
        for rel in renamed:
            del got[rel]
    problems = picture_differences(want, got)
    if b"ve.conf" not in saved_private:
        problems.append("the private area's ve.conf was not saved")
    return problems


def _is_utf8(name):
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _facts(picture, names):
    return [sorted(picture[name].items()) for name in names]


def _restore(run):
    """restore=ct of the backup as a new container through the simulator; then
    compared with the original and removed."""
    sandbox = run.sandbox
    original = sandbox.containers[0]
    new = RESTORED_UUID.encode("ascii")
    private = os.path.join(os.path.dirname(original.private), new)
    root = os.path.join(os.path.dirname(original.root), new)
    taken = [path for path in sandbox.registration_links(RESTORED_UUID, RESTORED_NAME) +
             [private, root] if os.path.lexists(path)]
    if taken:
        raise SelftestError("refused: %s exist%s and the self-test did not make %s" % (
            ", ".join(show(path) for path in taken), "s" if len(taken) == 1 else "",
            "it" if len(taken) == 1 else "them"))
    with contextlib.ExitStack() as made:
        made.callback(_remove_new_container, sandbox, private, root)
        _, detail = _job(run, "restore", "--jobid", str(run.backup_job), "--plugin-options",
                         "python:restore=ct:new_name=%s:new_uuid=%s"
                         % (RESTORED_NAME, RESTORED_UUID))
        _fail_on(_compare_restored(run, original), "from the original container")
    return detail


def _remove_new_container(sandbox, private, root):
    """What a finished restore left (the plugin removes it itself when the
    restore fails): the registration, the private area, the root directory."""
    sandbox.unregister(RESTORED_UUID, RESTORED_NAME)
    left = _mounts_under(private) + _mounts_under(root)
    if left:
        raise SelftestError("still mounted in the restored container: %s" % ", ".join(
            show(p) for p in left))
    if os.path.lexists(private):
        shutil.rmtree(private)
    if os.path.lexists(root):
        os.rmdir(root)


def _compare_restored(run, original):
    """The restored container against ``original``: registered and stopped, its
    filesystem and private area entry by entry (``ve.conf`` by the lines a
    restore as a new container changes)."""
    from vz7native.host import STOPPED
    from vz7native.host.conf import read_conf
    from vz7native.host.tree import compare_trees, describe, picture_differences

    sandbox = run.sandbox
    host = sandbox.host
    problems = []
    ct = host.find(uuid=RESTORED_UUID)
    if ct.name != RESTORED_NAME:
        problems.append("registered as %r, not %r" % (ct.name, RESTORED_NAME))
    state = host.status(ct).state
    if state != STOPPED:
        problems.append("the restored container is %s, not stopped" % state)
    want = {rel: props for rel, props in describe(sandbox.tree(original)).items()
            if props["kind"] != stat.S_IFSOCK}
    with mount.mount_readonly(ct.disk_descriptor, run.path(b"ro-restored")) as m:
        problems += picture_differences(want, describe(m.target))
    problems += ["private area: %s" % p for p in compare_trees(
        original.private, ct.private, ignore=(b"root.hdd",)) if not p.startswith("ve.conf:")]
    config = read_conf(os.path.join(ct.private, b"ve.conf"))
    for key, value in (("NAME", RESTORED_NAME), ("VEID", RESTORED_UUID)):
        if config.get(key) != value.encode("ascii"):
            problems.append("ve.conf: %s is %r, expected %r" % (key, config.get(key), value))
    return problems


# -- the runner --------------------------------------------------------------------

def _steps(no_kernel):
    """(name, function, why it is skipped or None) in the order they run."""
    after_kernel = "the disk is made by the kernel steps" if not no_kernel else None
    no_tool = None if shutil.which("ploop") else "the ploop binary is not installed"
    return [
        ("reference-tree", _write_reference, None),
        ("create", _create, no_kernel),
        ("mount-rw", _mount_rw, no_kernel),
        ("write", _write, no_kernel),
        ("build-image", _build_image, after_kernel),
        ("snapshot", _snapshot, None),
        ("mount-kernel", _mount_snapshot("kernel"), no_kernel),
        ("mount-portable", _mount_snapshot("portable"), None),
        ("merge", _merge, None),
        ("umount", _umount, no_kernel),
        ("verify", _verify, None),
        ("ploop-check", _ploop_check, no_tool),
    ]


def _timed_step(report, name, func, run):
    start = time.monotonic()
    try:
        detail = func(run)
    except Exception as e:   # the step failed: reported, the run goes on to clean up
        run.log(traceback.format_exc())
        report.steps.append(Step(name, FAILED, time.monotonic() - start,
                                 "%s: %s" % (type(e).__name__, e)))
        return False
    report.steps.append(Step(name, OK, time.monotonic() - start, detail or ""))
    return True


def _container_paths(host):
    containers, _ = host.containers()
    for ct in containers:
        for path in (ct.private, ct.root):
            yield ct, os.path.realpath(path)


def _inside(path, top):
    return path == top or path.startswith(top.rstrip(b"/") + b"/")


def _mounts_under(directory):
    return [m.mount_point for m in procfs.mounts() if _inside(m.mount_point, directory)]


def _check_directory(directory, host):
    """Refuse a directory that is not ours or is near a container; True when it
    is to be made (it does not exist)."""
    if os.pathsep.encode() in directory:
        # The sandbox's prlctl in <dir>/bin goes on PATH, which cannot hold one.
        raise DirectoryRefused("%s has a %r in its path: choose another directory" % (
            show(directory), os.pathsep))
    for ct, path in _container_paths(host):
        if _inside(directory, path) or _inside(path, directory):
            raise DirectoryRefused("%s is on a path container %s uses (%s)" % (
                show(directory), ct.label, show(path)))
    if not os.path.lexists(directory):
        return True
    if os.path.islink(directory) or not os.path.isdir(directory):
        raise DirectoryRefused("%s is not a directory" % show(directory))
    names = os.listdir(directory)
    if names and MARKER not in names:
        raise DirectoryRefused("%s exists and is not empty, and no self-test made it (no %s "
                               "in it)" % (show(directory), show(MARKER)))
    left = _mounts_under(directory)
    if left:
        raise DirectoryRefused("%s: an earlier self-test left mounts: %s (vz7ploop cleanup, "
                               "umount)" % (show(directory), ", ".join(show(p) for p in left)))
    return False


def _empty(directory, remove):
    """Remove what the self-test left in ``directory`` (and it, if ``remove``),
    never crossing into a mount."""
    left = _mounts_under(directory)
    if left:
        raise SelftestError("still mounted under %s: %s" % (
            show(directory), ", ".join(show(p) for p in left)))
    if remove:
        shutil.rmtree(directory)
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def run(directory=DEFAULT_DIR, host=None, log=None, plugin_dir=None):
    """Run the self-test in ``directory`` (made and removed again; see the
    module docstring). ``host`` (a :class:`vz7native.host.Host`, default the
    root) has the containers whose paths ``directory`` must stay apart from;
    ``log(text)`` gets the tracebacks of failed steps and the simulator's job
    logs; ``plugin_dir`` is where the Bareos plugin is (default: a source
    checkout's ``src/plugin``, else :data:`DEFAULT_PLUGIN_DIR`). Returns a
    :class:`Report`; raises :class:`DirectoryRefused` before it touches anything."""
    from vz7native.host import Host

    directory = os.path.abspath(os.fsencode(directory))
    directory = os.path.join(os.path.realpath(os.path.dirname(directory)),
                             os.path.basename(directory))
    made = _check_directory(directory, host or Host(b"/"))
    report = Report(directory)
    stack = contextlib.ExitStack()
    try:
        if made:
            os.makedirs(directory, 0o700)
        stack.callback(_empty, directory, made)
        with open(os.path.join(directory, MARKER), "wb") as f:
            f.write(b"a scratch directory of vz7ploop selftest\n")
        one_run = _Run(directory, stack, log or (lambda text: None), plugin_dir)
        no_kernel = _kernel_driver()
        failed = None
        for name, func, skip in _steps(no_kernel):
            if skip is None and failed is not None:
                skip = "step %s failed" % failed
            if skip is not None:
                report.steps.append(Step(name, SKIPPED, detail=skip))
            elif not _timed_step(report, name, func, one_run):
                failed = name
        if _timed_step(report, "backup", _backup, one_run):
            _timed_step(report, "restore", _restore, one_run)
        else:
            report.steps.append(Step("restore", SKIPPED, detail="step backup failed"))
    finally:
        start = time.monotonic()
        try:
            stack.close()
        except Exception as e:   # reported as the last step; what is left is named
            report.steps.append(Step("clean-up", FAILED, time.monotonic() - start,
                                     "%s: %s" % (type(e).__name__, e)))
        else:
            report.steps.append(Step("clean-up", OK, time.monotonic() - start))
    return report
