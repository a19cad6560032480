#!/usr/bin/env python3
"""The end-to-end demo (``make demo``): the Bareos plugin on a sandbox VZ7 host.

1. A sandbox VZ7 host with two containers with real ploop images, one running,
   one stopped, each holding a few thousand files of every kind (names that
   are not UTF-8, xattrs, ACLs, hard links, a sparse file, device nodes, ...).
2. A Full backup of each through the Bareos FD simulator, with the real plugin
   entry module and the older plugin's FileSet line and Job options verbatim.
3. The running container changes (edits, a new file, a deletion, a chmod),
   written into its ploop image; an Incremental backup stores just that.
4. The stopped container is restored as a new container (new name, new UUID,
   another disk size); its image passes ``ploop check`` and holds exactly what
   was backed up.
5. Files are restored into the running container with the older plugin's
   ``regexwhere``; they come back exact.
6. Nothing is left: no mount, loop device, helper process or snapshot.

Everything lives under a fresh temporary directory, removed at the end, also
after Ctrl-C (``--keep`` leaves it for a look).
"""
import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests"))  # fdsim and the tests' tree pictures

from fdsim import Director  # noqa: E402
from restore_helpers import (differences, edit_image, exact, image_view,  # noqa: E402
                             stand_in_prlctl)
from vz7native import mount, procfs  # noqa: E402
from vz7native.host import sandbox as sandboxes  # noqa: E402
from vz7native.host.sandbox import Sandbox  # noqa: E402
from vz7native.host.tree import write_file, write_tree  # noqa: E402

PLUGIN_DIR = os.path.join(TOP, "src", "plugin")
# The older plugin's README, verbatim but for where the plugin lives and the
# sandbox host it is pointed at.
FILESET_PLUGIN = ("python3:module_path=%s:module_name=bareos-fd-vz7_ct_fs:"
                  "blocker=tmp/backup_blocker:lockfile=/tmp/bareos_backup_cts:host_root=%s")
JOB_OPTIONS = "python3:name=%s:uuid=%s:excluded_backup_paths='/home/admin'"
REGEXWHERE = "!^/mnt/bareos/%s/!/vz/root/%s/tmp/bareos-restore/!"
EXTRA_FILES = 3000


def step(title):
    print("\n== %s" % title, flush=True)


def realistic_tree(root, seed):
    """The sandbox's tree with every kind of entry, and a few thousand more files."""
    write_tree(root, seed)
    root = os.fsencode(root)
    docs = os.path.join(root, b"usr/share/doc")
    os.makedirs(docs)
    for n in range(EXTRA_FILES):
        package = os.path.join(docs, b"package-%03d" % (n // 30))
        if not os.path.isdir(package):
            os.mkdir(package)
        write_file(os.path.join(package, b"file-%02d.txt" % (n % 30)),
                   b"documentation %d\n" % n * (1 + n % 17), mode=0o644)
    for path in (docs, os.path.join(root, b"usr/share"), os.path.join(root, b"usr")):
        os.utime(path, (1000000000, 1000000000))


def report(job, what):
    """Print one job's summary and the plugin's own lines; stop the demo if it failed."""
    result, took = job
    print("%s: job %d, status %s (%s), %d files, %d bytes, %.1f s" % (
        what, result.jobid, result.status, result.status_text, result.files, result.bytes,
        took))
    for text in result.plugin_messages("M_INFO", "M_WARNING", "M_ERROR", "M_FATAL"):
        if "socket" in text and "not saved" in text:
            continue
        print("    " + text.rstrip())
    if not result.ok:
        print(result.report())
        raise SystemExit("demo: the %s failed" % what)


def timed(label, call):
    """(the job's result, seconds it took), saying that it runs."""
    print("%s ..." % label, flush=True)
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def demo(work):
    step("1. A sandbox VZ7 host: two containers with real ploop images")
    box = Sandbox.build(os.path.join(work, "host"), count=2, seed=7, running=(0,),
                        tree_builder=realistic_tree, disk_size=256 << 20)
    try:
        run_jobs(work, box)
    finally:
        box.close()


def run_jobs(work, box):
    host = box.host
    running, stopped = box.containers
    for ct in box.containers:
        print("  %s  %-6s %s  disk %d MiB, %s" % (ct.uuid, ct.name, host.status(ct).state,
                                                  ct.disk_size >> 20, os.fsdecode(ct.ve_private)))
    director = Director(os.path.join(work, "fdsim"), bareos_version=23)
    line = FILESET_PLUGIN % (PLUGIN_DIR, os.fsdecode(box.root))
    print("FileSet: Plugin = \"%s\"" % line)

    step("2. Full backups")
    # One Job and one FileSet per container: Bareos builds the accurate list from
    # the last Full of the same Client + FileSet, whatever the Job.
    fulls = {}
    for ct in box.containers:
        fulls[ct.uuid] = timed("backup of %s" % ct.name, lambda: backup(director, line, ct, "F"))
        report(fulls[ct.uuid], "Full backup of %s" % ct.name)
    with image_view(stopped.disk_descriptor, os.path.join(work, "view")) as view:
        stopped_picture = without_sockets(exact(view, atime=False))

    step("3. %s changes; an Incremental backup" % running.name)

    def change(root):
        with open(os.path.join(root, b"etc/hostname"), "wb") as f:
            f.write(b"web01-renamed\n")
        write_file(os.path.join(root, b"root/report.txt"), b"written after the Full\n" * 50)
        os.unlink(os.path.join(root, b"root/.bash_history"))
        os.chmod(os.path.join(root, b"etc/os-release"), 0o600)
    edit_image(running.disk_descriptor, os.path.join(work, "edit"), change)
    print("  etc/hostname edited, root/report.txt added, root/.bash_history deleted, "
          "etc/os-release chmod 600")
    incr = timed("backup of %s" % running.name, lambda: backup(director, line, running, "I"))
    report(incr, "Incremental backup of %s" % running.name)
    for row in sorted(director.files(incr[0].jobid), key=lambda r: r["path"]):
        if not row["path"].endswith("/"):
            print("    %-8s %s" % ("deleted" if row["deleted"] else "stored", row["path"]))
    with image_view(running.disk_descriptor, os.path.join(work, "view")) as view:
        running_picture = without_sockets(exact(view, atime=False))

    step("4. %s restored as a new container with a 192 MiB disk" % stopped.name)
    new_name, new_uuid = stopped.name + "-copy", "0badc0de-1111-4222-8333-444455556666"
    restore = timed("restore=ct of %s" % stopped.name, lambda: director.restore(
        jobid=fulls[stopped.uuid][0].jobid, fileset_name=fileset(stopped),
        plugin_options="python:restore=ct:disk=192M:new_name=%s:new_uuid=%s" % (
            new_name, new_uuid)))
    report(restore, "restore=ct")
    copy = host.find(name=new_name, uuid=new_uuid)
    print("  registered: %s, %s, disk %d MiB" % (copy.label, host.status(copy).state,
                                                 copy.disk_size >> 20))
    check = subprocess.run(["ploop", "check", "-r", "-f", "-c",
                            os.fsdecode(copy.disk_descriptor)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
    print("  ploop check: %s" % ("clean" if check.returncode == 0 else check.stdout))
    with image_view(copy.disk_descriptor, os.path.join(work, "view")) as view:
        compare("the new container against %s as backed up" % stopped.name,
                stopped_picture, exact(view, atime=False))

    step("5. Files restored into the running %s with the seed's regexwhere" % running.name)
    regexwhere = REGEXWHERE % (running.uuid, running.uuid)
    print("  regexwhere=%s" % regexwhere)
    files = timed("restore=files", lambda: director.restore(
        jobid=[fulls[running.uuid][0].jobid, incr[0].jobid], regexwhere=regexwhere,
        plugin_options="python:name=%s:uuid=%s:restore=files" % (running.name, running.uuid),
        mark=["/mnt/bareos/%s/" % running.uuid], fileset_name=fileset(running)))
    report(files, "restore=files")
    compare("the files restored under /tmp/bareos-restore against the backed-up ones",
            running_picture, exact(os.path.join(running.root, b"tmp/bareos-restore"),
                                   atime=False))

def fileset(ct):
    return "v7_ct-" + ct.name


def backup(director, line, ct, level):
    return director.backup(line, fd_plugin_options=[JOB_OPTIONS % (ct.name, ct.uuid)],
                           level=level, accurate=True, job_name="backup-" + ct.name,
                           fileset_name=fileset(ct))


def without_sockets(picture):
    """A picture without the sockets: no backup keeps them (nothing can restore one)."""
    return {rel: props for rel, props in picture.items() if props["kind"] != stat.S_IFSOCK}


def compare(what, want, got):
    problems = differences(want, got)
    print("  %s: %s (%d entries)" % (what, "identical" if not problems else "DIFFERENT",
                                     len(want)))
    if problems:
        print("\n".join("    " + p for p in problems[:40]))
        raise SystemExit("demo: %s differ" % what)


def leftovers(work):
    """What the demo might have left: mounts under ``work``, our mount records,
    loop devices of files under ``work``."""
    prefix = os.fsencode(os.path.realpath(work)) + b"/"
    found = [m.mount_point for m in procfs.mounts() if m.mount_point.startswith(prefix)]
    found += [r["target"] for r in mount.cleanup()]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout.split()
    found += [b for b in loops if b.startswith(os.path.realpath(work))]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (loop devices, FUSE, mounts, device nodes)")
    work = tempfile.mkdtemp(prefix="vz7native-demo-")
    print("scratch directory: %s" % work)
    bin_dir = os.path.join(work, "bin")
    stand_in_prlctl(bin_dir, os.path.join(work, "host"))
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    started = time.monotonic()
    try:
        demo(work)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up")
        raise SystemExit(130)
    finally:
        sandboxes.cleanup(os.path.join(work, "host"))
        left = leftovers(work)
        print("\n== 6. Left behind: %s" % (", ".join(map(str, left)) or "nothing"))
        if args.keep:
            print("kept: %s" % work)
        elif not left:
            shutil.rmtree(work)
    print("\ndemo finished in %.0f s" % (time.monotonic() - started))


if __name__ == "__main__":
    main()
