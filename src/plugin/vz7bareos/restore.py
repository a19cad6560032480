"""Restores as Bareos callbacks, on top of :mod:`vz7native.restore`.

restore=ct (the default) rebuilds each container whose files come: the record
the backup sent as a restore object (the latest per container) says who it
was, the options ``new_name``, ``new_uuid`` and ``diskspace``/``disk`` override
it; the files go into a fresh private area and disk whatever the job's
``where`` (said once, as an info message), the container is registered and left
stopped at bEventEndRestoreJob. restore=files writes into the running
container whose root the rewritten paths land in.

Either way the plugin creates every entry itself (nothing through CF_CORE,
whose file creation follows symlinks) and answers CF_EXTRACT, so that the core
sends the XATTR stream -- with the exact attributes, :mod:`vz7bareos.attrs` --
for every type; IO_OPEN then comes for each entry, and only regular files get
data: through the core (do_io_in_core, Bareos 22+) unless the file is sparse,
whose data the plugin writes itself leaving runs of zeros unwritten (Bareos
sends a block that is partly zeros whole). Attributes are set at
``end_restore_file``, once the data is written (IO_CLOSE) and the ACL and XATTR
streams are in, through the data fd, which is closed then; directory times and
inode flags at the end of the job.
"""
import errno
import json
import os
import stat
import time

from vz7native.restore import (ContainerRestore, FilesRestore, OutsideContainers, RestoreError,
                               RestoreRefused, describe_size)

from vz7bareos import attrs, names, options
from vz7bareos.backup import RECORD_OBJECT_PREFIX

_REPLACE = {"a": "always", "w": "ifnewer", "o": "ifolder", "n": "never"}
_ZERO_BLOCK_SIZE = 4096
_ZERO_BLOCK = bytes(_ZERO_BLOCK_SIZE)
_CT_ONLY = ("diskspace", "disk", "new_name", "new_uuid")


class _Entry(object):
    """The entry being restored: where it goes and what arrived for it."""

    __slots__ = ("shown", "writer", "rel", "placed", "mode", "size", "sparse", "position",
                 "attrs", "xattrs", "acls", "progress", "statp")

    def __init__(self, shown, writer, rel, statp, progress):
        self.shown = shown
        self.writer = writer
        self.rel = rel
        self.statp = statp
        self.mode = statp.st_mode
        self.size = statp.st_size
        self.progress = progress        # the _CtProgress of restore=ct, else None
        self.placed = None
        self.sparse = False
        self.position = 0
        self.attrs = None
        self.xattrs = []
        self.acls = {}


class _CtProgress(object):
    """One container of a restore=ct job: its session and counts."""

    def __init__(self, session):
        self.session = session
        self.entries = 0
        self.bytes = 0
        self.started = time.monotonic()


class RestoreJob(object):
    """The restore part of a job (:class:`vz7bareos.plugin.Job` forwards to it)."""

    def __init__(self, job):
        self.job = job
        self.bareosfd = job.bareosfd
        self.records = {}          # uuid -> (jobid, record)
        self.settings = None
        self.cts = {}              # uuid -> _CtProgress (restore=ct)
        self.refused = set()       # uuids whose restore=ct was refused or failed
        self.files = None          # FilesRestore (restore=files)
        self.entry = None
        self.where_noted = set()
        self.ended = False

    # -- options ---------------------------------------------------------------------

    def _ready(self):
        """The restore's settings, checked once; False after a FATAL."""
        if self.job.failed:
            return False
        if self.settings is None:
            from vz7bareos.plugin import Settings
            try:
                settings = Settings(options.merge(*self.job.option_strings))
                merged = settings.options
                if merged.get("diskspace") and merged.get("disk") and \
                        merged["diskspace"] != merged["disk"]:
                    raise options.OptionError(
                        "options diskspace=%s and disk=%s disagree (disk is an alias of "
                        "diskspace: give one)" % (merged["diskspace"], merged["disk"]))
                settings.disk_size = options.size(
                    merged, "diskspace" if merged.get("diskspace") else "disk")
                settings.new_name = options.value(merged, "new_name")
                settings.new_uuid = options.value(merged, "new_uuid")
                settings.register_timeout = options.seconds(merged, "register_timeout")
                if settings.restore == "files":
                    given = [k for k in _CT_ONLY if merged.get(k)]
                    if given:
                        raise options.OptionError(
                            "option%s %s only apply to restore=ct, not restore=files"
                            % ("s" if len(given) > 1 else "", ", ".join(given)))
            except (options.OptionError, OSError) as e:
                self.job.fatal(str(e))
                return False
            self.settings = settings
        return True

    # -- callbacks before the files ------------------------------------------------------

    def start_restore_job(self):
        self._ready()

    def restore_object_data(self, rop):
        name = rop.object_name or ""
        if not name.startswith(RECORD_OBJECT_PREFIX):
            return self.bareosfd.bRC_OK
        try:
            record = json.loads(bytes(rop.object).decode("utf-8"))
            uuid = record.get("uuid") or record["ctid"]
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            self.job.error("restore object %s cannot be read: %s" % (name, e))
            return self.bareosfd.bRC_OK
        jobid = rop.jobid or 0
        if uuid not in self.records or self.records[uuid][0] <= jobid:
            self.records[uuid] = (jobid, record)
        return self.bareosfd.bRC_OK

    def start_restore_file(self, cmd):
        self._ready()
        return self.bareosfd.bRC_OK

    # -- create_file --------------------------------------------------------------------

    def create_file(self, rp):
        self._drop_entry()
        rp.create_status = self._create(rp)     # one assignment: each costs a conversion
        return self.bareosfd.bRC_OK

    def _create(self, rp):
        """The create_status for ``rp``: CF_EXTRACT once the entry exists."""
        b = self.bareosfd
        if not self._ready():
            return b.CF_SKIP
        try:
            if self.settings.restore == "ct":
                entry = self._ct_entry(rp)
            else:
                entry = self._files_entry(rp)
            if entry is None or not self._place(rp, entry):
                return b.CF_SKIP
        except RestoreRefused as e:
            self.job.fatal(str(e))
            return b.CF_SKIP
        except (OSError, RestoreError, names.EscapeError) as e:
            if self._disk_full(e):
                return b.CF_SKIP
            self.job.error("cannot restore %s: %s" % (names.shown(rp.ofname), _reason(e)))
            # not counted as restored: the Director's file count then warns (job W)
            return b.CF_ERROR
        self.entry = entry
        return b.CF_EXTRACT

    def _ct_entry(self, rp):
        original = self._original_name(rp.ofname, rp.where,
                                       getattr(rp, "original_file_name", None))
        found = self._area_of(original)
        if found is None:
            self.job.error("%s belongs to no container of the restored backups (no container "
                           "record for it): not restored" % names.shown(original))
            return None
        uuid, area, rel = found
        if uuid in self.refused:
            return None
        progress = self.cts.get(uuid)
        if progress is None:
            progress = self._open_ct(uuid)
            if progress is None:
                return None
        if uuid not in self.where_noted and (rp.where is None or rp.where.strip("/")):
            self.where_noted.add(uuid)
            self.job.info("restore=ct: %s is ignored: container %s is restored into its own "
                          "private area and a new disk" % (
                              "where=%s" % rp.where if rp.where is not None else "regexwhere",
                              progress.session.label))
        progress.entries += 1
        return _Entry(names.shown(original), progress.session.writer(area),
                      names.decode_path(rel) if rel else b"", rp.statp, progress)

    def _open_ct(self, uuid):
        settings = self.settings
        record = self.records[uuid][1]
        session = ContainerRestore(
            settings.host, record, name=settings.new_name, uuid=settings.new_uuid,
            disk_size=settings.disk_size, register_timeout=settings.register_timeout,
            backend=settings.mount_backend, lock_timeout=settings.ct_lock_timeout,
            note="Bareos restore job %s" % self.job.job_label, log=self.job.debug)
        try:
            session.open()
        except Exception as e:      # lock timeouts, tools, libploop: all end this container
            self.refused.add(uuid)
            self.job.fatal("restore=ct of container %s: %s" % (
                record.get("name") or uuid, _reason(e)))
            return None
        for sentence in session.cleaned:
            self.job.info(sentence)
        self.job.debug("restoring container %s into %s, disk %s" % (
            session.label, names.shown(session.ve_private), describe_size(session.disk_size)))
        progress = self.cts[uuid] = _CtProgress(session)
        return progress

    def _original_name(self, ofname, where, original):
        """The catalogued name of an entry restored as ``ofname`` (the job's
        where/regexwhere undone; ``original`` is what Bareos 26 tells)."""
        if original:
            return _strip_slash(original)
        ofname = _strip_slash(ofname)
        if where is not None:
            prefix = where.rstrip("/")
            if prefix and (ofname == prefix or ofname.startswith(prefix + "/")):
                return ofname[len(prefix):] or "/"
            return ofname
        # regexwhere: find the container's catalogued prefix in the rewritten name
        for prefix in self._prefixes():
            at = ofname.find(prefix)
            while at >= 0:
                end = at + len(prefix)
                if end == len(ofname) or ofname[end] == "/":
                    return ofname[at:]
                at = ofname.find(prefix, at + 1)
        return ofname

    def _prefixes(self):
        for _, record in self.records.values():
            for key in ("private", "catalog_root"):
                if record.get(key):
                    yield record[key].rstrip("/")

    def _area_of(self, original):
        """(uuid, area, relative catalogued name) of a catalogued name, or None."""
        for uuid, (_, record) in self.records.items():
            for area, key in (("private", "private"), ("root", "catalog_root")):
                prefix = (record.get(key) or "").rstrip("/")
                if prefix and original == prefix:
                    return uuid, area, ""
                if prefix and original.startswith(prefix + "/"):
                    return uuid, area, original[len(prefix) + 1:]
        return None

    def _files_entry(self, rp):
        if self.files is None:
            settings = self.settings
            self.files = FilesRestore(settings.host, _REPLACE.get(chr(rp.replace), "always"),
                                      name=settings.name, uuid=settings.uuid)
        ofname = _strip_slash(rp.ofname)
        path = names.decode_path(ofname)
        try:
            ct, writer, rel = self.files.target(path)
        except OutsideContainers as e:
            if self._not_rewritten(ofname, rp.type == self.bareosfd.FT_DIREND):
                return None
            raise RestoreRefused("restore=files: %s; %s" % (e, self._files_hint(rp)))
        except RestoreRefused as e:
            raise RestoreRefused("restore=files: %s" % e)
        return _Entry(names.shown(path), writer, rel, rp.statp, None)

    def _not_rewritten(self, ofname, is_dir):
        """True (and said once) for an entry restore=files leaves out: one of a
        private area the job's where/regexwhere did not move (the configuration is
        restore=ct's), or the top directory of a container's filesystem that a
        regexwhere written with its trailing slash did not catch."""
        for _, record in self.records.values():
            private = (record.get("private") or "").rstrip("/")
            if private and (ofname == private or ofname.startswith(private + "/")):
                if private not in self.where_noted:
                    self.where_noted.add(private)
                    self.job.info("restore=files: the private area %s is not restored into a "
                                  "container (restore=ct restores it)" % private)
                return True
            if is_dir and ofname == (record.get("catalog_root") or "").rstrip("/"):
                self.job.debug("%s: the top directory, not rewritten: left out" % ofname)
                return True
        return False

    def _files_hint(self, rp):
        original = _strip_slash(getattr(rp, "original_file_name", None) or rp.ofname)
        for _, record in self.records.values():
            root = (record.get("catalog_root") or "").rstrip("/")
            uuid = record.get("uuid") or record.get("ctid")
            if root and uuid:
                return ("to restore into container %s give e.g. regexwhere=!^%s/!%s/tmp/bareos-"
                        "restore/! and select files below %s" % (
                            record.get("name") or uuid, root,
                            (record.get("ve_root") or "/vz/root/" + uuid).rstrip("/"), root))
        return ("give a where= or regexwhere= that puts %s below /vz/root/<uuid>/ of a "
                "running container" % names.shown(original))

    def _place(self, rp, entry):
        """Create the entry (devices wait for their exact rdev); False if skipped."""
        b = self.bareosfd
        statp = entry.statp
        kind = rp.type
        mode = entry.mode
        link_to = target = None
        if kind == b.FT_LNKSAVED:
            link_to = self._link_source(rp, entry)
        elif kind == b.FT_LNK:
            target = names.decode_target(rp.olname)
            mode = stat.S_IFLNK | 0o777
        elif kind == b.FT_DIREND:
            mode = stat.S_IFDIR | stat.S_IMODE(mode)
        elif kind in (b.FT_REG, b.FT_REGE):
            mode = stat.S_IFREG | stat.S_IMODE(mode)
        elif kind == b.FT_SPEC:
            if stat.S_ISSOCK(mode):
                self.job.info("%s is a socket: not restored" % entry.shown)
                return False
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                entry.mode = mode
                return True     # made at end_restore_file, with the exact rdev
        else:
            self.job.error("%s: file type %d is not restored by this plugin"
                           % (entry.shown, kind))
            return False
        entry.mode = mode
        placed = entry.writer.place(entry.rel, mode, target=target, link_to=link_to,
                                    mtime=statp.st_mtime)
        if isinstance(placed, str):
            self._skipped(entry, placed)
            return False
        entry.placed = placed
        entry.sparse = (placed.fd is not None and statp.st_blocks * 512 < entry.size)
        if placed.fd is not None and entry.progress is not None:
            entry.progress.bytes += entry.size
        return True

    def _link_source(self, rp, entry):
        """The relative path of a hard link's first name, in the entry's tree."""
        if self.settings.restore == "ct":
            found = self._area_of(self._original_name(
                rp.olname, rp.where, getattr(rp, "original_link_name", None)))
            if found is None:
                raise RestoreError("its first link %s is not in the restore"
                                   % names.shown(rp.olname))
            return names.decode_path(found[2])
        _, writer, rel = self.files.target(names.decode_path(_strip_slash(rp.olname)))
        if writer is not entry.writer:
            raise RestoreError("its first link %s is in another container"
                               % names.shown(rp.olname))
        return rel

    def _skipped(self, entry, reason):
        kind = getattr(self.bareosfd, "M_SKIPPED", self.bareosfd.M_INFO)
        self.bareosfd.JobMessage(kind, "vz7: File skipped. %s: %s\n" % (reason, entry.shown))

    def _disk_full(self, exc):
        """In restore=ct a full disk ends the container's restore (FATAL); True then."""
        if getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) or \
                self.settings is None or self.settings.restore != "ct":
            return False
        self.job.fatal("the new disk is full: the data does not fit; restore with a larger "
                       "diskspace=")
        return True

    # -- data ------------------------------------------------------------------------------

    def plugin_io(self, iop):
        b = self.bareosfd
        entry = self.entry
        func = iop.func
        fd = entry.placed.fd if entry is not None and entry.placed is not None else None
        try:
            if func == b.IO_OPEN:
                if fd is not None and self.job.io_in_core and not entry.sparse:
                    iop.filedes = fd
                    iop.status = b.iostat_do_in_core
                    return b.bRC_OK
                iop.status = 0
                if fd is not None:
                    self.job.debug("%s: data written by the plugin (%s)" % (
                        entry.shown, "sparse" if entry.sparse else "no do_io_in_core"))
                return b.bRC_OK
            if func == b.IO_CLOSE:
                # The fd stays open: end_restore_file sets the attributes through it.
                iop.status = 0
                if fd is not None:
                    self._check_size(entry, fd)
                return b.bRC_OK
            if fd is None:
                raise OSError(errno.EBADF, "no data expected for this entry")
            if func == b.IO_WRITE:
                self._write(entry, fd, iop.buf)
                iop.status = iop.count
                return b.bRC_OK
            if func == b.IO_SEEK:
                entry.position = os.lseek(fd, iop.offset, iop.whence)
                iop.status = 0
                return b.bRC_OK
        except OSError as e:
            if not self._disk_full(e):
                self.job.error("cannot write %s: %s" % (entry.shown if entry else "?",
                                                        _reason(e)))
            iop.status = -1
            iop.io_errno = e.errno or errno.EIO
            return b.bRC_Error
        iop.status = -1
        iop.io_errno = errno.EINVAL
        return b.bRC_Error

    def _write(self, entry, fd, buf):
        data = memoryview(buf)
        position = entry.position
        if not entry.sparse:
            _write_all(fd, data, position)
        else:
            # Leave whole zero blocks unwritten (holes), aligned on the file's offsets.
            start = 0
            end = len(data)
            run = None
            while start < end:
                stop = min(end, (position + start) // _ZERO_BLOCK_SIZE * _ZERO_BLOCK_SIZE +
                           _ZERO_BLOCK_SIZE - position)
                zero = stop - start == _ZERO_BLOCK_SIZE and data[start:stop] == _ZERO_BLOCK
                if zero and run is not None:
                    _write_all(fd, data[run:start], position + run)
                    run = None
                elif not zero and run is None:
                    run = start
                start = stop
            if run is not None:
                _write_all(fd, data[run:end], position + run)
        entry.position = position + len(data)

    def _check_size(self, entry, fd):
        st = os.fstat(fd)
        if st.st_size < entry.size:
            if entry.sparse or not self.job.io_in_core:
                os.ftruncate(fd, entry.size)          # a hole at the end
            elif entry.progress is not None and os.fstatvfs(fd).f_bfree == 0:
                self._disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
            else:
                self.job.error("%s is incomplete: %d of %d bytes" % (
                    entry.shown, st.st_size, entry.size))

    # -- ACL and xattrs -------------------------------------------------------------------

    def set_acl(self, aclpkt):
        entry = self.entry
        if entry is not None and aclpkt.content:
            try:
                entry.acls = attrs.decode_acls(aclpkt.content)
            except attrs.AttrsError as e:
                self.job.error("%s: %s" % (entry.shown, e))
        return self.bareosfd.bRC_OK

    def set_xattr(self, xattrpkt):
        entry = self.entry
        if entry is None or xattrpkt.name is None:
            return self.bareosfd.bRC_OK
        name = bytes(xattrpkt.name)
        value = bytes(xattrpkt.value) if xattrpkt.value is not None else b""
        if name == attrs.ATTRS_NAME.encode("ascii"):
            try:
                entry.attrs = attrs.Attrs.decode(value)
            except attrs.AttrsError as e:
                self.job.error("%s: %s" % (entry.shown, e))
        else:
            entry.xattrs.append((name, value))
        return self.bareosfd.bRC_OK

    def set_file_attributes(self, restorepkt):
        # Attributes wait for end_restore_file: the ACL and XATTR streams (with
        # the exact attributes) come after this.
        return self.bareosfd.bRC_OK

    # -- end of a file, end of the job ---------------------------------------------------------

    def _drop_entry(self):
        """Forget an entry that end_restore_file never ended, closing its data fd."""
        entry, self.entry = self.entry, None
        if entry is not None and entry.placed is not None:
            entry.writer.close_data(entry.placed)

    def end_restore_file(self):
        entry, self.entry = self.entry, None
        if entry is None:
            return self.bareosfd.bRC_OK
        exact = entry.attrs or _attrs_of_statp(entry.statp)
        try:
            if entry.placed is None:
                placed = entry.writer.place(entry.rel, entry.mode, rdev=exact.rdev,
                                            mtime=entry.statp.st_mtime)
                if isinstance(placed, str):
                    self._skipped(entry, placed)
                    return self.bareosfd.bRC_OK
                entry.placed = placed
            entry.writer.set_attributes(entry.placed, exact, entry.xattrs, entry.acls)
        except (OSError, RestoreError) as e:
            if not self._disk_full(e):
                self.job.error("cannot restore %s: %s" % (entry.shown, _reason(e)))
        finally:
            if entry.placed is not None:
                entry.writer.close_data(entry.placed)
        return self.bareosfd.bRC_OK

    def end_restore_job(self):
        """bEventEndRestoreJob: finish (or, after a FATAL, undo) every container."""
        if self.ended:
            return
        self.ended = True
        if self.entry is not None:
            self.end_restore_file()
        for uuid, progress in sorted(self.cts.items()):
            session = progress.session
            try:
                if self.job.failed:
                    self.job.info("restore=ct of container %s stopped: nothing of it is left "
                                  "on this host" % session.label)
                else:
                    self._finish_ct(progress)
            except Exception as e:
                self.job.fatal("restore=ct of container %s failed, nothing of it is left on "
                               "this host: %s" % (session.label, _reason(e)))
            finally:
                session.close()
        if self.files is not None:
            try:
                for ct, path, message in self.files.finish():
                    self.job.error("%s%s: %s" % (names.shown(ct.ve_root), "/" + names.shown(
                        path) if path else "", message))
            finally:
                self.files.close()

    def _finish_ct(self, progress):
        session = progress.session
        for area, path, message in session.finish():
            base = session.ve_private if area == "private" else b"(its filesystem)"
            self.job.error("container %s: %s/%s: %s" % (
                session.label, names.shown(base), names.shown(path), message))
        t = session.timings

        def secs(name):
            return "%.2f s" % t[name] if name in t else "-"
        self.job.info(
            "container %s restored: %d entries, %d bytes; private area %s, disk %s; "
            "registered, stopped; disk %s, unmount %s, seal %s, register %s; "
            "%.1f s in all" % (
                session.label, progress.entries, progress.bytes,
                names.shown(session.ve_private), describe_size(session.disk_size),
                secs("disk"), secs("umount"), secs("seal"), secs("register"),
                time.monotonic() - progress.started))


def _strip_slash(name):
    return name.rstrip("/") or "/"


def _write_all(fd, data, offset):
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _attrs_of_statp(statp):
    """What the StatPacket has, for a backup made without the XATTR stream."""
    return attrs.Attrs(statp.st_atime * 1000000000, statp.st_mtime * 1000000000,
                       statp.st_ctime * 1000000000, statp.st_uid, statp.st_gid, statp.st_mode,
                       statp.st_rdev, -1, statp.st_nlink)


def _reason(exc):
    from vz7bareos.plugin import _describe_error
    return _describe_error(exc)
