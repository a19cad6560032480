"""The backup of one container (one ``Plugin =`` line) as Bareos packets.

A :class:`ContainerBackup` opens a :class:`vz7native.backup.BackupSession`
(container, locks, snapshot, read-only mount) and turns what it streams into
``start_backup_file`` / ``plugin_io`` / ``get_acl`` / ``get_xattr`` answers:

* first a restore object with the container's record (what a restore needs
  with no option); sent in Full backups and whenever it changed;
* then every entry, directories after their contents (``link`` = name + ``/``),
  names escaped where they are not UTF-8 (:mod:`vz7bareos.names`), hard links
  as ``FT_LNKSAVED`` after their first name, devices and FIFOs as ``FT_SPEC``
  without data, sockets skipped;
* data through the core (``do_io_in_core``, Bareos 22+) or through IO_READ,
  from a file opened ``O_NOFOLLOW`` and checked with ``fstat`` against the walk;
* POSIX ACLs in the ACL stream, every other xattr plus the exact attributes
  (:mod:`vz7bareos.attrs`) in the XATTR stream.
"""
import errno
import json
import os
import stat
import time

from vz7native.backup import STATE_DIR, BackupSession
from vz7native.inodeflags import path_flags, read_flags
from vz7native.walk import DIR, FILE, SOCKET, SYMLINK

from vz7bareos import attrs, names

RECORD_OBJECT_PREFIX = "vz7native-ct:"
_UINT32_MAX = (1 << 32) - 1
_NLINK_MAX = 0x7FFF  # the catalog's st_nlink is a signed 16-bit field
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Fields of the record that change with every job (or with every write to the
# container); the rest decides whether an Incremental sends the record again.
_VOLATILE = ("snapshot", "snapshot_time", "state", "used_bytes", "used_inodes")


class ContainerBackup(object):
    """One container's part of a backup job. ``fd`` is the job's glue
    (:class:`vz7bareos.plugin.Job`): messages, Bareos constants and features."""

    def __init__(self, fd, settings):
        self.fd = fd
        self.settings = settings
        self.session = BackupSession(
            settings.host, name=settings.name, uuid=settings.uuid, lockfile=settings.lockfile,
            lock_timeout=settings.lock_timeout, ct_lock_timeout=settings.ct_lock_timeout,
            blocker=settings.blocker, excluded_paths=settings.excluded_paths,
            excludes=settings.excludes,
            mount_base=settings.mount_base, backend=settings.mount_backend,
            note="Bareos job %s" % fd.job_label, log=fd.debug)
        self.items = None
        self.item = None
        self.record_pending = None
        self.links = {}
        self.io_fd = None
        self.flags = -1
        self.xattrs = None
        self.listed = None
        self.list_error = None
        self.files = self.bytes = self.sockets = self.errors = 0
        self.started = time.monotonic()
        self.closed = False

    # -- lifetime ----------------------------------------------------------------

    def open(self):
        session = self.session
        session.open()
        for sentence in session.cleaned:
            self.fd.info("container %s: %s" % (session.ct.label, sentence))
        record = session.record()
        if self.fd.level == "F" or self._record_changed(record):
            self.record_pending = record
        self.items = session.items(self._walk_error)
        self._advance()

    def _record_path(self):
        ct = self.session.ct
        return self.session.host.real(os.path.join(
            STATE_DIR, (ct.uuid or ct.ctid).encode("ascii") + b".record"))

    def _record_changed(self, record):
        try:
            with open(self._record_path(), "rb") as f:
                last = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            return True
        return _stable(last) != _stable(record)

    def _remember_record(self, record):
        path = self._record_path()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path + b".new", "wb") as f:
            f.write(json.dumps(record, sort_keys=True).encode("utf-8"))
        os.rename(path + b".new", path)

    def close(self):
        """Unmount, merge, release (idempotent); the summary message once."""
        if self.closed:
            return
        self.closed = True
        self._close_io()
        if self.items is not None:
            self.items.close()
        session = self.session
        try:
            session.close()
        finally:
            if session.ct is not None and self.items is not None:
                self._summary()

    def _summary(self):
        session = self.session
        t = session.timings

        def secs(value):
            return "-" if value is None else "%.2f s" % value
        excluded = ", ".join(names.shown(p) for p in self.settings.excludes_shown) or "none"
        self.fd.info(
            "container %s (%s, %s): %d entries, %d bytes saved, %d skipped (%d sockets, "
            "%d errors), excluded: %s; snapshot %s, mount %s, umount %s, merge %s; %.1f s in all"
            % (session.ct.label, session.state, "snapshot %s" % session.snapshot
               if session.snapshot else "no snapshot", self.files, self.bytes,
               self.sockets + self.errors, self.sockets, self.errors, excluded,
               secs(t.snapshot), secs(t.mount), secs(t.umount), secs(t.merge),
               time.monotonic() - self.started))

    # -- the walk ----------------------------------------------------------------------

    def _walk_error(self, catalog_path, exc):
        self.errors += 1
        name = names.encode_path(catalog_path)
        self.fd.skipped.add(name)
        self.fd.error("cannot read %s: %s" % (names.shown(catalog_path),
                                              exc.strerror or exc))

    def _advance(self):
        """The next item to save (None at the end); sockets are left out here."""
        for item in self.items:
            if item.entry.type == SOCKET:
                self.sockets += 1
                self.fd.info("socket %s not saved (a socket cannot be restored)"
                             % names.shown(item.catalog_path))
                continue
            self.item = item
            return
        self.item = None

    @property
    def done(self):
        return self.item is None and self.record_pending is None

    # -- start_backup_file / end_backup_file ------------------------------------------------

    def start_backup_file(self, savepkt):
        bareosfd = self.fd.bareosfd
        if self.record_pending is not None:
            record = self.record_pending
            data = json.dumps(record, sort_keys=True).encode("utf-8")
            savepkt.type = bareosfd.FT_RESTORE_FIRST
            savepkt.statp = bareosfd.StatPacket()
            savepkt.fname = names.encode_path(os.path.join(
                self.session.ct.ve_private, b".vz7native-record.json"))
            savepkt.object_name = RECORD_OBJECT_PREFIX + (record["uuid"] or record["ctid"])
            savepkt.object = bytearray(data)
            savepkt.object_len = len(data)
            savepkt.object_index = self.fd.next_object_index()
            return bareosfd.bRC_OK
        while self.item is not None:
            if self._describe(savepkt, self.item):
                return bareosfd.bRC_OK
            self._advance()
        return bareosfd.bRC_Stop

    def _describe(self, savepkt, item):
        """Fill ``savepkt`` for ``item``; False if it cannot be saved (reported)."""
        bareosfd = self.fd.bareosfd
        entry = item.entry
        st = entry.stat
        kind = entry.type
        fname = names.encode_path(item.catalog_path)
        target = None
        if kind == SYMLINK:
            try:
                target = names.encode_target(os.readlink(entry.path))
            except OSError as e:
                self._walk_error(item.catalog_path, e)
                return False
        savepkt.fname = fname
        savepkt.statp = self.fd.stat_packet(st)
        self.xattrs = self.listed = self.list_error = None
        self.flags = -1
        if kind == DIR:
            savepkt.type = bareosfd.FT_DIREND
            savepkt.link = fname + "/"
            savepkt.no_read = True
            return True
        first = None
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is None:
                self.links[key] = fname
        if first is not None:
            savepkt.type = bareosfd.FT_LNKSAVED
            savepkt.link = first
            savepkt.no_read = True
        elif kind == FILE:
            savepkt.type = bareosfd.FT_REG  # no_read: False in every new packet
            self.bytes += st.st_size
        elif kind == SYMLINK:
            savepkt.type = bareosfd.FT_LNK
            savepkt.link = target
            savepkt.no_read = True
        else:  # FIFO, character and block devices: no data
            savepkt.type = bareosfd.FT_SPEC
            savepkt.no_read = True
        return True

    def end_backup_file(self):
        """True while there is more to save."""
        if self.record_pending is not None:
            self._remember_record(self.record_pending)
            self.record_pending = None
        else:
            self.files += 1
            self._close_io()
            self._advance()
        return not self.done

    # -- data -------------------------------------------------------------------------------

    def plugin_io(self, iop):
        bareosfd = self.fd.bareosfd
        func = iop.func
        if func == bareosfd.IO_OPEN:
            return self._open_data(iop)
        if func == bareosfd.IO_READ:
            try:
                data = os.read(self.io_fd, iop.count)
            except OSError as e:
                return self._io_failed(iop, e, "read")
            iop.buf = bytearray(data)
            iop.status = len(data)
            return bareosfd.bRC_OK
        if func == bareosfd.IO_CLOSE:
            self._close_io()
            iop.status = 0
            return bareosfd.bRC_OK
        if func == bareosfd.IO_SEEK:
            try:
                os.lseek(self.io_fd, iop.offset, iop.whence)
            except OSError as e:
                return self._io_failed(iop, e, "seek in")
            iop.status = 0
            return bareosfd.bRC_OK
        iop.status = -1
        iop.io_errno = errno.EINVAL
        return bareosfd.bRC_Error

    def _open_data(self, iop):
        bareosfd = self.fd.bareosfd
        entry = self.item.entry
        try:
            fd = os.open(entry.path, _OPEN_FLAGS)
        except OSError as e:
            return self._io_failed(iop, e, "open")
        try:
            st = os.fstat(fd)
            walked = entry.stat
            if (not stat.S_ISREG(st.st_mode) or st.st_ino != walked.st_ino
                    or st.st_dev != walked.st_dev):
                raise OSError(errno.ESTALE, "it changed since it was listed")
        except OSError as e:
            os.close(fd)
            return self._io_failed(iop, e, "open")
        self.io_fd = fd
        self.flags = read_flags(fd)
        if self.fd.io_in_core:
            iop.filedes = fd
            iop.status = bareosfd.iostat_do_in_core
        else:
            iop.status = 0
        return bareosfd.bRC_OK

    def _io_failed(self, iop, exc, what):
        self.errors += 1
        self.fd.skipped.add(names.encode_path(self.item.catalog_path))
        self.fd.error("cannot %s %s: %s" % (what, names.shown(self.item.catalog_path),
                                            exc.strerror or exc))
        iop.status = -1
        iop.io_errno = exc.errno or errno.EIO
        return self.fd.bareosfd.bRC_Error

    def _close_io(self):
        fd, self.io_fd = self.io_fd, None
        if fd is not None:
            os.close(fd)

    # -- ACLs and xattrs ----------------------------------------------------------------------

    def get_acl(self, aclpkt):
        entry = self.item.entry
        if entry.type == SYMLINK:
            return self.fd.bareosfd.bRC_OK
        values = {}
        for name in self._listed():
            if name in attrs.ACL_NAMES:
                try:
                    values[name] = os.getxattr(entry.path, name, follow_symlinks=False)
                except OSError:
                    pass
        if values:
            aclpkt.content = bytearray(attrs.encode_acls(values))
        return self.fd.bareosfd.bRC_OK

    def _listed(self):
        """The xattr names of the current entry, listed once for its ACL and XATTR
        streams (one system call where reading both ACL names took two, most
        often failing); a listing error is kept for ``_xattrs`` to report."""
        if self.listed is None:
            try:
                self.listed = os.listxattr(self.item.entry.path, follow_symlinks=False)
            except OSError as e:
                self.listed = ()
                self.list_error = e
        return self.listed

    def get_xattr(self, xattrpkt):
        bareosfd = self.fd.bareosfd
        if self.xattrs is None:
            self.xattrs = self._xattrs()
        name, value = self.xattrs.pop()
        xattrpkt.name = bytearray(name)
        xattrpkt.value = bytearray(value)
        return bareosfd.bRC_More if self.xattrs else bareosfd.bRC_OK

    def _xattrs(self):
        """(name, value) pairs, the attribute record first to be popped last."""
        entry = self.item.entry
        path = entry.path
        if entry.type == DIR:
            self.flags = path_flags(path, True)
        found = [(attrs.ATTRS_NAME.encode("ascii"),
                  attrs.Attrs.of_stat(entry.stat, self.flags).encode())]
        listed = self._listed()
        error = self.list_error
        if error is not None and error.errno not in (errno.ENOTSUP, errno.ENODATA):
            self._walk_error(self.item.catalog_path, error)
        for name in listed:
            if name in attrs.ACL_NAMES:
                continue
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError as e:
                self._walk_error(self.item.catalog_path, e)
                continue
            found.append((os.fsencode(name), value))
        return found


def _stable(record):
    return {k: v for k, v in record.items() if k not in _VOLATILE}
