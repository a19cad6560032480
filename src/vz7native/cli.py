"""``vz7ploop``: ploop's command line, in-process, with ``--json`` for scripts.

Sub-commands mirror ploop(8) so ploop users feel at home. Errors print one line,
``vz7ploop: <what failed>: <libploop message> (SYSEXIT_NAME)``, and the command
exits with the SYSEXIT code (usage errors exit with SYSEXIT_PARAM, 38).
"""
import argparse
import json
import os
import re
import sys

SIZE_SUFFIXES = {"": 512, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Exit code of usage errors, as ploop's SYSEXIT_PARAM (no libploop import needed).
EXIT_USAGE = 38
# Exit codes for vz7native.image's findings: the SYSEXIT code ploop gives for the same
# trouble (PLOOPFMT, DISKDESCR, NOSNAP).
EXIT_FORMAT, EXIT_DESCRIPTOR, EXIT_NO_SNAPSHOT = 11, 39, 43
# Exit codes for the refusals of the container commands, in the same spirit:
# something in the way (EBUSY), a lock not had in time (LOCK), nothing mounted
# (DEV_NOT_MOUNTED), no such container (PARAM).
EXIT_BUSY, EXIT_LOCK, EXIT_NOT_MOUNTED = 17, 23, 40


def parse_size(text):
    """Bytes for ``SIZE``: a number of 512-byte sectors, or a number with K/M/G/T."""
    match = re.match(r"^(\d+)([KMGT]?)B?$", text.strip(), re.I)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            "invalid size %r (sectors, or a number with K, M, G or T)" % text)
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2).upper()]


def _write(text):
    """Print text that may hold undecodable path bytes (as surrogate escapes)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    out.write(text.encode(sys.getfilesystemencoding(), "surrogateescape") + b"\n")
    out.flush()


def _human(size):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "bytes" else ("%.1f %s" % (size, unit))
        size /= 1024.0


def _fs(path):
    return None if path is None else os.fsdecode(path)


def _snapshot_dict(snapshot):
    return {"guid": snapshot.guid, "parent_guid": snapshot.parent_guid,
            "temporary": snapshot.temporary, "file": _fs(snapshot.file),
            "current": snapshot.current}


# -- commands ------------------------------------------------------------------

def cmd_init(args, ploop):
    fstype = None if args.type == "none" else args.type
    dd = ploop.create_image(args.image, args.size, fmt=args.format, fstype=fstype,
                            version=args.version, cluster_size=args.blocksize)
    _write(os.fsdecode(dd))


def cmd_snapshot(args, ploop):
    with ploop.Disk.open(args.dd) as disk:
        _write(disk.create_snapshot(args.uuid))


def cmd_snapshot_list(args, ploop):
    with ploop.Disk.open(args.dd) as disk:
        snapshots = disk.snapshots
    if args.json:
        _write(json.dumps([_snapshot_dict(s) for s in snapshots], indent=2))
        return
    _write("%-38s %s %-38s %s" % ("PARENT_UUID", "C", "UUID", "FNAME"))
    for s in snapshots:
        flags = "*" if s.current else ("T" if s.temporary else " ")
        _write("%-38s %s %-38s %s" % (s.parent_guid, flags, s.guid, _fs(s.file)))


def cmd_snapshot_delete(args, ploop):
    with ploop.Disk.open(args.dd) as disk:
        disk.delete_snapshot(args.uuid)


def cmd_snapshot_merge(args, ploop):
    with ploop.Disk.open(args.dd) as disk:
        disk.merge_snapshot(args.uuid, merge_all=args.all)


def cmd_snapshot_switch(args, ploop):
    with ploop.Disk.open(args.dd) as disk:
        disk.switch_snapshot(args.uuid)


def cmd_info(args, ploop):
    """Read through vz7native.image (descriptor and delta headers) and look the
    device up in sysfs: nothing here locks or writes the image (libploop 7.x
    rewrites v1 deltas as v2 when it mounts a disk to tell about it)."""
    from vz7native import image

    with image.open_virtual_disk(args.dd) as vdisk:
        descriptor = vdisk.descriptor
        top = vdisk.deltas[0]
        base = vdisk.deltas[-1]
    snapshots = []
    for shot in descriptor.snapshots:
        guid = descriptor.resolve_guid(shot.guid)
        snapshots.append(_snapshot_dict(ploop.Snapshot(
            shot.guid, shot.parent_guid, shot.temporary, descriptor.images[guid].file,
            guid == descriptor.top_guid)))
    device = ploop.device_of_base_delta(base.file)
    info = {
        "descriptor": _fs(descriptor.path),
        "size": descriptor.size,
        "cluster_size": descriptor.cluster_size,
        "format_version": top.version or 0,
        "mode": descriptor.mode,
        "top_guid": descriptor.top_guid,
        "top_delta": _fs(top.file),
        "base_delta": _fs(base.file),
        "images": {g: _fs(e.file) for g, e in descriptor.images.items()},
        "snapshots": snapshots,
        "device": _fs(device),
        "mount_point": _fs(ploop.mount_point_of_device(device)) if device else None,
    }
    if args.json:
        _write(json.dumps(info, indent=2))
        return
    _write("descriptor:   %s" % info["descriptor"])
    _write("size:         %s (%d bytes)" % (_human(info["size"]), info["size"]))
    _write("cluster:      %s" % _human(info["cluster_size"]))
    _write("format:       ploop1 v%d, %s" % (info["format_version"], info["mode"]))
    _write("top delta:    %s" % info["top_delta"])
    _write("base delta:   %s" % info["base_delta"])
    _write("snapshots:    %d" % len(info["snapshots"]))
    _write("device:       %s" % (info["device"] or "none (not mounted)"))
    if info["mount_point"]:
        _write("mounted at:   %s" % info["mount_point"])


def cmd_mount(args, ploop):
    from vz7native import mount

    if mount.choose_backend(args.backend) == "portable":
        # Persistent: the mount stays after this command, until `vz7ploop umount`.
        portable = mount.mount_readonly(args.dd, args.mount_point, guid=args.uuid,
                                        backend="portable", persistent=True)
        _write(os.fsdecode(portable.device))
        return
    with ploop.Disk.open(args.dd) as disk:
        kernel = disk.mount(args.mount_point, readonly=args.readonly, guid=args.uuid,
                            component=args.component)
        _write(os.fsdecode(kernel.partition))


def _umount_portable(target=None, dd=None):
    """Stop our portable mounts at ``target`` or of ``dd``; False when there is none."""
    from vz7native.mount import MountError, state, teardown

    done = teardown.stop_live(state.run_dir(), target=target, dd=dd)
    problems = [p for _, found in done for p in found]
    if problems:
        raise MountError("; ".join(problems))
    return bool(done)


def cmd_umount(args, ploop):
    if args.mount_point:
        if not _umount_portable(target=args.mount_point):
            ploop.umount_mount_point(args.mount_point)
    elif not _umount_portable(dd=args.dd):
        with ploop.Disk.open(args.dd) as disk:
            disk.umount()


def _delta_dict(delta):
    return {"guid": delta.guid, "file": _fs(delta.file), "kind": delta.kind,
            "version": delta.version, "cluster_size": delta.cluster_size, "size": delta.size,
            "file_size": delta.file_size, "clusters": delta.clusters, "in_use": delta.in_use,
            "real_file": _fs(delta.real_file), "outside": delta.outside}


def cmd_check(args, _ploop):
    """The native read-only check; exits with SYSEXIT_PLOOPFMT when it finds problems."""
    from vz7native import image

    report = image.verify(args.dd)
    if args.json:
        _write(json.dumps({"descriptor": _fs(report.path), "ok": report.ok,
                           "problems": report.problems,
                           "deltas": [_delta_dict(d) for d in report.deltas]}, indent=2))
    else:
        _write("descriptor:   %s" % _fs(report.path))
        for d in report.deltas:
            kind = "raw" if d.kind == "Plain" else (
                "ploop1 v%d" % d.version if d.version else "unreadable")
            unit = " of %s" % _human(d.cluster_size) if d.cluster_size else ""
            where = " (outside the image directory: %s)" % _fs(d.real_file) if d.outside else (
                " (at %s)" % _fs(d.real_file) if d.real_file != d.file else "")
            _write("delta:        %s %s: %s, %d cluster(s)%s%s" % (
                d.guid, _fs(d.file), kind, d.clusters, unit, where))
        if report.ok:
            _write("result:       no problems found")
        else:
            _write("result:       %d problem(s):" % len(report.problems))
            for problem in report.problems:
                _write("  " + problem)
    return 0 if report.ok else EXIT_FORMAT


def cmd_import_raw(args, _ploop):
    from vz7native import image

    _write(os.fsdecode(image.import_raw(args.raw, args.dir, version=args.version,
                                        cluster_size=args.blocksize,
                                        image_name=os.fsencode(args.name))))


def cmd_cleanup(args, ploop):
    from vz7native.mount import MountError, state, teardown

    base = state.run_dir()
    with state.locked(base):
        done = teardown.remove_leftovers(base, dd=args.dd)
    report = [{"id": r.id, "backend": r.backend, "target": _fs(r.target), "dd": _fs(r.dd),
               "problems": problems} for r, problems in done]
    containers = [] if args.dd else _cleanup_containers(args)
    if args.json:
        _write(json.dumps(report + containers, indent=2))
    else:
        for entry in report:
            _write("%s %s mount %s of %s at %s%s" % (
                "left" if entry["problems"] else "removed", entry["backend"], entry["id"],
                entry["dd"] or "(unknown image)", entry["target"] or "(not mounted)",
                "".join("\n  " + p for p in entry["problems"])))
        for entry in containers:
            _write("container %s:%s" % (entry["container"],
                                        "".join("\n  " + s for s in entry["cleaned"])))
    if any(entry["problems"] for entry in report):
        raise MountError("some leftovers could not be removed")


def _cleanup_containers(args):
    """What crashed backups and snapshot views whose mount is gone left in the
    containers of the host (snapshots, state files): [{"container", "cleaned"}]."""
    try:
        from vz7native import backup
    except ImportError as e:    # no libploop here: no container to merge a snapshot of
        sys.stderr.write("vz7ploop: containers not checked: %s\n" % e)
        return []
    return [{"container": label, "cleaned": sentences}
            for label, sentences in backup.cleanup_leftovers(_host(args))]


def _host(args):
    from vz7native.host import Host
    return Host(os.fsencode(args.host_root))


def _container(text):
    """``find()`` arguments for CT given as a UUID (braces optional) or a name."""
    from vz7native.host import conf
    return {"uuid": text} if conf.normalize_uuid(text) else {"name": text}


def cmd_ct_mount_snapshot(args, _ploop):
    from vz7native.backup import BackupSession

    session = BackupSession(
        _host(args), lockfile=args.lockfile, lock_timeout=args.lock_timeout,
        ct_lock_timeout=args.ct_lock_timeout, blocker=args.blocker, backend=args.backend,
        note="vz7ploop ct-mount-snapshot", mount_point=args.dir, detached=True,
        **_container(args.ct))
    session.open()
    for sentence in session.cleaned:
        sys.stderr.write("vz7ploop: %s\n" % sentence)
    view = session.detach()
    if args.json:
        _write(json.dumps(view, indent=2, sort_keys=True))
    else:
        _write("mounted snapshot %s of container %s (%s) read-only at %s" % (
            view["snapshot"], view["name"] or view["uuid"], view["state"], view["target"]))


def cmd_ct_umount_snapshot(args, _ploop):
    from vz7native.backup import close_view

    done = close_view(_host(args), lockfile=args.lockfile, lock_timeout=args.lock_timeout,
                      ct_lock_timeout=args.ct_lock_timeout, note="vz7ploop ct-umount-snapshot",
                      **_container(args.ct))
    if args.json:
        _write(json.dumps(done, indent=2))
    else:
        for sentence in done:
            _write(sentence)


def cmd_selftest(args, _ploop):
    """Exit 0 when no step failed (skipped steps are listed, they do not fail it)."""
    import signal
    from vz7native import selftest

    def stop(signum, frame):   # SIGTERM unwinds like Ctrl-C: everything made is removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log = (lambda text: sys.stderr.write(text)) if args.debug else None
    report = selftest.run(args.dir, log=log, plugin_dir=args.plugin_dir)
    if args.json:
        _write(json.dumps(report.as_dict(), indent=2))
    else:
        _write("self-test in %s" % _fs(report.directory))
        for step in report.steps:
            took = "%7.2fs" % step.seconds if step.seconds is not None else " " * 8
            _write(("%-16s %s %-7s  %s" % (step.name, took, step.status, step.detail)).rstrip())
        _write("result: %s" % ("every step that could run passed" if report.ok
                               else "some steps failed"))
    return 0 if report.ok else 1


def _host_exit_code(e):
    from vz7native import backup, host

    for cls, code in ((backup.NoView, EXIT_NOT_MOUNTED), (backup.ViewInUse, EXIT_BUSY),
                      (host.BlockerError, EXIT_BUSY), (host.PcompactRunning, EXIT_BUSY),
                      (host.LockTimeout, EXIT_LOCK), (host.ContainerNotFound, EXIT_USAGE),
                      (host.ContainerMismatch, EXIT_USAGE)):
        if isinstance(e, cls):
            return code
    return 1


def _what(args):
    """'<what failed>' of the error line."""
    target = getattr(args, "dd", None) or getattr(args, "image", None) or \
        getattr(args, "mount_point", None) or getattr(args, "dir", None)
    what = {
        "init": "cannot create image %s",
        "snapshot": "cannot create a snapshot of %s",
        "snapshot-list": "cannot list the snapshots of %s",
        "snapshot-delete": "cannot delete snapshot %s of %%s" % getattr(args, "uuid", ""),
        "snapshot-merge": "cannot merge snapshots of %s",
        "snapshot-switch": "cannot switch %%s to snapshot %s" % getattr(args, "uuid", ""),
        "info": "cannot read %s",
        "mount": "cannot mount %s",
        "umount": "cannot unmount %s",
        "check": "cannot check %s",
        "import-raw": "cannot import %s into %%s" % getattr(args, "raw", ""),
        "cleanup": "cannot clean up leftover mounts" + (" of %s" if target else "%s"),
        "ct-mount-snapshot": "cannot mount a snapshot of container %s at %%s"
                             % getattr(args, "ct", ""),
        "ct-umount-snapshot": "cannot unmount the snapshot of container %s%%s"
                              % getattr(args, "ct", ""),
        "selftest": "cannot run the self-test in %s",
    }.get(args.command, args.command + " %s")
    return what % (target if target is not None else "")


# -- parser --------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: %s\n" % (self.prog, message))


def build_parser():
    parser = _Parser(prog="vz7ploop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-file", help="append libploop's own log to this file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "create a ploop image and its DiskDescriptor.xml")
    p.add_argument("-s", "--size", type=parse_size, required=True,
                   help="virtual size: sectors, or a number with K/M/G/T")
    p.add_argument("-f", "--format", choices=("expanded", "preallocated", "raw"),
                   default="expanded")
    p.add_argument("-t", "--type", choices=("none", "ext4"), default="ext4",
                   help="filesystem to create (ext4 needs the ploop kernel driver)")
    p.add_argument("-v", "--version", type=int, choices=(1, 2), help="ploop1 format version")
    p.add_argument("-b", "--blocksize", type=parse_size, help="cluster size (default 1M)")
    p.add_argument("image", help="image file to create, e.g. /vz/private/ID/root.hdd/root.hds")

    p = command("snapshot", cmd_snapshot, "take a snapshot; prints its GUID")
    p.add_argument("-u", "--uuid", help="GUID for the snapshot (default: generated)")
    p.add_argument("dd", help="DiskDescriptor.xml")

    p = command("snapshot-list", cmd_snapshot_list, "list the snapshot tree")
    p.add_argument("--json", action="store_true")
    p.add_argument("dd")

    p = command("snapshot-delete", cmd_snapshot_delete,
                "delete a snapshot (its child is merged into it)")
    p.add_argument("-u", "--uuid", required=True)
    p.add_argument("dd")

    p = command("snapshot-merge", cmd_snapshot_merge,
                "merge a snapshot (default: the top) into its parent")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-u", "--uuid")
    group.add_argument("-A", "--all", action="store_true", help="merge everything into the base")
    p.add_argument("dd")

    p = command("snapshot-switch", cmd_snapshot_switch, "switch the top to a snapshot")
    p.add_argument("-u", "--uuid", required=True)
    p.add_argument("dd")

    p = command("info", cmd_info, "show the disk's geometry, deltas and state")
    p.add_argument("--json", action="store_true")
    p.add_argument("dd")

    p = command("mount", cmd_mount, "mount the disk (or a snapshot of it)")
    p.add_argument("-r", "--readonly", action="store_true")
    p.add_argument("-u", "--uuid", help="snapshot to mount (default: the top)")
    p.add_argument("-c", "--component", help="component name for the device (kernel backend)")
    p.add_argument("--backend", choices=("auto", "kernel", "portable"), default="auto",
                   help="kernel: the ploop driver; portable: FUSE + loop device, read-only, "
                        "stays mounted until `umount`; auto (default): kernel where the "
                        "driver is loaded")
    p.add_argument("-m", "--mount-point", required=True)
    p.add_argument("dd")

    p = command("umount", cmd_umount, "unmount by mount point or by DiskDescriptor.xml")
    p.add_argument("-m", "--mount-point")
    p.add_argument("dd", nargs="?")

    p = command("check", cmd_check, "check a disk read-only, without libploop "
                "(descriptor, every delta's header and BAT, file lengths, holes)")
    p.set_defaults(libploop=False)
    p.add_argument("--json", action="store_true")
    p.add_argument("dd", help="DiskDescriptor.xml or its directory")

    p = command("import-raw", cmd_import_raw, "make a ploop image of a raw disk file "
                "(only non-zero clusters are stored), without libploop")
    p.set_defaults(libploop=False)
    p.add_argument("-v", "--version", type=int, choices=(1, 2), default=1,
                   help="ploop1 format version (default 1)")
    p.add_argument("-b", "--blocksize", type=parse_size, default=1 << 20,
                   help="cluster size: sectors, or a number with K/M (default 1M)")
    p.add_argument("-n", "--name", default="root.hds", help="image file name (default root.hds)")
    p.add_argument("raw", help="raw disk file")
    p.add_argument("dir", help="directory for the image and DiskDescriptor.xml")

    p = command("cleanup", cmd_cleanup,
                "remove what killed processes left of read-only mounts (live ones stay) and "
                "the snapshots of backups and snapshot views they left")
    p.set_defaults(libploop=False)      # loaded only for a kernel mount left behind
    p.add_argument("--json", action="store_true")
    p.add_argument("--host-root", default="/", help="where the host's containers are, for "
                   "the leftovers of backups and snapshot views (default /)")
    p.add_argument("dd", nargs="?", help="only the leftovers of this DiskDescriptor.xml")

    def container_command(name, func, help_text):
        p = command(name, func, help_text)
        p.add_argument("--host-root", default="/",
                       help="the VZ7 host's root directory (default /; a sandbox host for tests)")
        p.add_argument("--lockfile", help="a lock file on the host to hold meanwhile, as the "
                       "plugin's lockfile option (absolute host path)")
        p.add_argument("--lock-timeout", type=float, default=3600,
                       help="seconds to wait for --lockfile (default 3600)")
        p.add_argument("--ct-lock-timeout", type=float, default=10,
                       help="seconds to wait for a backup of the same container (default 10)")
        p.add_argument("--json", action="store_true")
        p.add_argument("ct", metavar="CT", help="the container's name or UUID")
        return p

    p = container_command(
        "ct-mount-snapshot", cmd_ct_mount_snapshot,
        "mount a consistent read-only view of a running or stopped container (a snapshot) "
        "at DIR, for rsync, restic or borg; it stays until ct-umount-snapshot")
    p.add_argument("--blocker", help="a glob inside the container: a match refuses the view, "
                   "as the plugin's blocker option")
    p.add_argument("--backend", choices=("auto", "kernel", "portable"), default="auto",
                   help="auto (default) and portable: FUSE + loop device, a mount that "
                        "outlives this command; kernel is refused (a ploop kernel mount "
                        "goes with the process that made it)")
    p.add_argument("dir", metavar="DIR", help="an existing directory to mount at")

    container_command("ct-umount-snapshot", cmd_ct_umount_snapshot,
                      "unmount the view of ct-mount-snapshot and merge its snapshot back")

    p = command("selftest", cmd_selftest,
                "run every path of vz7native on a scratch image and a scratch sandbox "
                "container in DIR (made and removed again): kernel mounts, snapshots, "
                "merges, portable mounts, checks, and a backup and a restore as a new "
                "container by the Bareos plugin through the FD simulator")
    p.add_argument("--dir", default="/vz/selftest",
                   help="scratch directory: must not exist or be empty (default /vz/selftest)")
    p.add_argument("--plugin-dir", metavar="DIR",
                   help="where the Bareos plugin is (default: src/plugin of a source "
                        "checkout, else /usr/lib64/bareos/plugins, where the RPM puts it)")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "umount" and bool(args.mount_point) == bool(args.dd):
        parser.error("umount takes -m DIR or a DiskDescriptor.xml")
    if args.command == "mount":
        from vz7native.mount import choose_backend

        if choose_backend(args.backend) == "portable":
            if not args.readonly:
                parser.error("the portable backend mounts read-only: add -r "
                             "(read-write needs the ploop kernel driver)")
            if args.component:
                parser.error("-c/--component names a ploop device: kernel backend only")
    if args.command == "ct-mount-snapshot" and args.backend == "kernel":
        parser.error("the view must outlive this command: a ploop kernel mount goes with the "
                     "process that made it; use --backend portable (or auto)")
    from vz7native import image
    from vz7native.host import HostError
    from vz7native.mount import MountError
    from vz7native.selftest import DirectoryRefused, SelftestError

    # Commands that do not need libploop must work where it is absent.
    ploop = None
    if getattr(args, "libploop", True):
        from vz7native import ploop
    ploop_error = ploop.PloopError if ploop is not None else ()
    try:
        if args.log_file and ploop is not None:
            ploop.set_log_file(args.log_file)
        return args.func(args, ploop) or 0
    except ploop_error as e:
        if args.debug:
            raise
        sys.stderr.write("vz7ploop: %s: %s (%s)\n" % (_what(args), e.detail, e.name))
        return (e.code & 0xff) or 1
    except image.ImageError as e:
        if args.debug:
            raise
        sys.stderr.write("vz7ploop: %s: %s\n" % (_what(args), e))
        for cls, code in ((image.FormatError, EXIT_FORMAT),
                          (image.DescriptorError, EXIT_DESCRIPTOR),
                          (image.SnapshotNotFound, EXIT_NO_SNAPSHOT)):
            if isinstance(e, cls):
                return code
        return 1
    except HostError as e:
        if args.debug:
            raise
        sys.stderr.write("vz7ploop: %s: %s\n" % (_what(args), e))
        return _host_exit_code(e)
    except SelftestError as e:
        if args.debug:
            raise
        sys.stderr.write("vz7ploop: %s: %s\n" % (_what(args), e))
        return EXIT_BUSY if isinstance(e, DirectoryRefused) else 1
    except KeyboardInterrupt:
        sys.stderr.write("vz7ploop: %s: interrupted\n" % args.command)
        return 130
    except (OSError, ValueError, MountError) as e:
        if args.debug:
            raise
        sys.stderr.write("vz7ploop: %s: %s\n" % (_what(args), e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
