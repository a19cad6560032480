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
``/etc/vz`` or ``/vz`` is read or written) with one running container; a
:class:`vz7native.backup.BackupSession` of it, as the Bareos plugin opens it,
whose items are compared with the container's tree, entry by entry.

The restore part, ``restore``: that container restored as a new one
(:class:`vz7native.restore.ContainerRestore`, as the plugin's restore=ct with
``new_name`` and ``new_uuid``), from what a second backup session of it saves,
written entry by entry through the restore's writers as the plugin writes what
Bareos sends back (sockets left out: nothing restores them); registered in the
sandbox (its ``/etc/vz`` links, as ``prlctl register`` makes them: the host's
own prlctl is never run); then its filesystem (mounted read-only) and private
area are compared with the original's, entry by entry, and it is checked
registered and stopped. The new container (registration, private area, root
directory) is removed at the end of the step on every path, the restore's
staging directory and mount with it; if any of its paths exists before, the
step refuses and touches none of them.

Every step reports its time and ``ok``, ``failed`` (with the error) or
``skipped`` (with why). What a step makes is registered on one ``ExitStack``
the moment it exists and undone on every path (errors, Ctrl-C); then ``<dir>``
is removed. ``<dir>`` must not exist, be empty, or hold the marker file of an
earlier self-test with nothing mounted below it, and must lie apart from every
container's private area and root.
"""
import collections
import contextlib
import os
import shutil
import stat
import subprocess
import time
import traceback

from vz7native import mount, procfs
from vz7native.paths import show

__all__ = ["run", "Report", "Step", "SelftestError", "DirectoryRefused", "MARKER",
           "DEFAULT_DIR"]

DEFAULT_DIR = b"/vz/selftest"
MARKER = b".vz7ploop-selftest"
DISK_SIZE = 128 << 20
# The kernel steps' disk, expanded (sparse): mke2fs gives filesystems under 512 MiB
# ("small") 128-byte inodes, which cannot hold the tree's times past 2038.
KERNEL_DISK_SIZE = 1 << 30
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# What the locks of the backup and restore steps say about their holder.
_NOTE = "vz7ploop selftest"
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

    def __init__(self, directory, stack, log):
        self.directory = directory
        self.stack = stack
        self.log = log
        self.tree = os.path.join(directory, b"tree")
        self.disk_dir = os.path.join(directory, b"disk")
        self.dd = None
        self.rw_mount = None
        self.snapshot = None
        self.sandbox = None

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


# -- the backup part ---------------------------------------------------------------

# What of describe()'s picture an item's stat tells.
_STAT_KEYS = ("kind", "mode", "uid", "gid", "mtime", "size", "rdev")


def _backup(run):
    from vz7native.backup import BackupSession
    from vz7native.host.sandbox import Sandbox
    from vz7native.host.tree import describe, picture_differences, stat_properties

    sandbox = Sandbox.build(os.path.join(run.directory, b"host"), count=1, seed=7)
    run.stack.callback(sandbox.close)
    run.sandbox = sandbox
    ct = sandbox.containers[0]
    problems = []
    got = {}
    private = set()
    with BackupSession(sandbox.host, uuid=ct.uuid, note=_NOTE) as session:
        cut = len(session.catalog_root)
        for item in session.items(lambda path, exc: problems.append(
                "%s: %s" % (show(path), exc))):
            if item.area == "private":
                private.add(os.path.basename(item.catalog_path))
                continue
            rel = item.catalog_path[cut:].lstrip(b"/") or b"."
            if rel.split(b"/")[0] != b"lost+found":
                got[rel] = stat_properties(item.entry.stat)
    want = {rel: {key: value for key, value in props.items() if key in _STAT_KEYS}
            for rel, props in describe(sandbox.tree(ct)).items()}
    problems += picture_differences(want, got)
    if b"ve.conf" not in private:
        problems.append("the private area's ve.conf was not saved")
    _fail_on(problems, "from the container")


# -- the restore part --------------------------------------------------------------

# The container the restore step makes: a name and UUID no sandbox container has.
RESTORED_NAME = "selftest-restored"
RESTORED_UUID = "5e1f7e57-7e57-4e57-8e57-5e1f7e575e1f"
# What TreeWriter.set_attributes takes of an entry (flags -1: not known).
_Attributes = collections.namedtuple("_Attributes", "uid gid mode atime_ns mtime_ns flags")


def _restore(run):
    from vz7native.backup import BackupSession
    from vz7native.restore import ContainerRestore

    sandbox = run.sandbox
    original = sandbox.containers[0]
    with contextlib.ExitStack() as made:
        source = made.enter_context(BackupSession(sandbox.host, uuid=original.uuid, note=_NOTE))
        target = made.enter_context(ContainerRestore(
            sandbox.host, source.record(), name=RESTORED_NAME, uuid=RESTORED_UUID,
            note=_NOTE, register=sandbox.register))
        host = sandbox.host
        private, root = host.real(target.ve_private), host.real(target.ve_root)
        taken = [path for path in sandbox.registration_links(target.uuid, target.name) +
                 [private, root] if os.path.lexists(path)]
        if taken:
            raise SelftestError("refused: %s exist%s and the self-test did not make %s" % (
                ", ".join(show(path) for path in taken), "s" if len(taken) == 1 else "",
                "it" if len(taken) == 1 else "them"))
        # Runs first (the stack unwinds backwards): then the restore's own close
        # takes its staging directory and mount.
        made.callback(_remove_new_container, sandbox, target, private, root)
        problems = _copy_items(source, target)
        source.close()
        problems += ["%s %s: %s" % (area, show(path), message)
                     for area, path, message in target.finish()]
        problems += _compare_restored(run, original)
    _fail_on(problems, "from the original container")


def _remove_new_container(sandbox, target, private, root):
    """What a finished restore left (the restore removes it itself when it
    fails): the registration, the private area, the root directory."""
    sandbox.unregister(target.uuid, target.name)
    left = _mounts_under(private) + _mounts_under(root)
    if left:
        raise SelftestError("still mounted in the restored container: %s" % ", ".join(
            show(p) for p in left))
    if os.path.lexists(private):
        shutil.rmtree(private)
    if os.path.lexists(root):
        os.rmdir(root)


def _copy_items(source, target):
    """What the backup session ``source`` saves, written through the writers of
    the restore ``target``; returns what could not be read."""
    problems = []
    first_names = {}    # (area, st_dev, st_ino) -> the first path of a hard-linked inode
    for item in source.items(lambda path, exc: problems.append("%s: %s" % (show(path), exc))):
        entry = item.entry
        st = entry.stat
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFSOCK:
            continue
        writer = target.writer(item.area)
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            key = (item.area, st.st_dev, st.st_ino)
            if key in first_names:
                writer.place(entry.relpath, st.st_mode, link_to=first_names[key])
                continue
            first_names[key] = entry.relpath
        _write_entry(writer, entry)
    return problems


def _write_entry(writer, entry):
    """One entry (not a further name of a hard link): made, data, attributes."""
    from vz7native.inodeflags import path_flags, read_flags
    from vz7native.treecopy import copy_data
    from vz7native.treewrite import ACL_ACCESS, ACL_DEFAULT

    st = entry.stat
    kind = stat.S_IFMT(st.st_mode)
    placed = writer.place(entry.relpath, st.st_mode, rdev=st.st_rdev,
                          target=os.readlink(entry.path) if kind == stat.S_IFLNK else None)
    flags = -1
    if placed.fd is not None:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            copy_data(fd, placed.fd, st)
            flags = read_flags(fd)
        finally:
            os.close(fd)
    elif kind == stat.S_IFDIR:
        flags = path_flags(entry.path, True)
    xattrs, acls = [], {}
    for name in os.listxattr(entry.path, follow_symlinks=False):
        value = os.getxattr(entry.path, name, follow_symlinks=False)
        if name in (ACL_ACCESS, ACL_DEFAULT):
            acls[name] = value
        else:
            xattrs.append((os.fsencode(name), value))
    writer.set_attributes(placed, _Attributes(st.st_uid, st.st_gid, st.st_mode, st.st_atime_ns,
                                              st.st_mtime_ns, flags), xattrs, acls)


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
        func(run)
    except Exception as e:   # the step failed: reported, the run goes on to clean up
        run.log(traceback.format_exc())
        report.steps.append(Step(name, FAILED, time.monotonic() - start,
                                 "%s: %s" % (type(e).__name__, e)))
        return False
    report.steps.append(Step(name, OK, time.monotonic() - start))
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


def run(directory=DEFAULT_DIR, host=None, log=None):
    """Run the self-test in ``directory`` (made and removed again; see the
    module docstring). ``host`` (a :class:`vz7native.host.Host`, default the
    root) has the containers whose paths ``directory`` must stay apart from;
    ``log(text)`` gets the tracebacks of failed steps. Returns a :class:`Report`;
    raises :class:`DirectoryRefused` before it touches anything."""
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
        one_run = _Run(directory, stack, log or (lambda text: None))
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
