"""One Bareos job of the plugin: events, options, messages, and the backup loop.

The file daemon runs each job in a Python interpreter of its own and calls the
module's entry points (see ``bareos-fd-vz7_ct_fs.py``), which all go to the
job's :class:`Job`. A backup runs one :class:`~vz7bareos.backup.ContainerBackup`
per ``Plugin =`` line, in FileSet order; a restore goes to
:class:`vz7bareos.restore.RestoreJob`.

Which ``parse_plugin_definition`` call brings what (bareos-fd-contract.md
§2.3, §12): before bEventEndFileSet the FileSet lines, between it and
bEventStartBackupJob the job-wide options (``run ... pluginoptions=``, then the
Job's ``FD Plugin Options``), after it the line whose files come next.
"""
import os

from vz7native.host import Host

from vz7bareos import names, options
from vz7bareos.backup import ContainerBackup

EVENTS = ("bEventJobEnd", "bEventEndBackupJob", "bEventStartBackupJob", "bEventEndFileSet",
          "bEventStartRestoreJob", "bEventEndRestoreJob")
MESSAGE_PREFIX = "vz7: "
DEBUG_LEVEL = 100


class Settings(object):
    """The options of one container, checked and converted (see options.KNOWN)."""

    def __init__(self, merged):
        unknown = sorted(k for k in merged if k not in options.KNOWN)
        if unknown:
            raise options.OptionError("unknown plugin option%s %s (known: %s)" % (
                "s" if len(unknown) > 1 else "", ", ".join(unknown), options.known_list()))
        self.options = merged
        self.name = options.value(merged, "name")
        uuid = options.value(merged, "uuid")
        self.uuid = options.strip_quotes(uuid) if uuid else None
        self.host_root = options.absolute_path(merged, "host_root")
        self.host = Host(self.host_root)
        self.blocker = options.value(merged, "blocker")
        self.lockfile = options.absolute_path(merged, "lockfile")
        self.lock_timeout = options.seconds(merged, "lock_timeout")
        self.ct_lock_timeout = options.seconds(merged, "ct_lock_timeout")
        self.excluded_paths = [p.encode("utf-8") for p in
                               options.comma_list(merged, "excluded_backup_paths")]
        self.excludes = [p.encode("utf-8") for p in options.comma_list(merged, "exclude")]
        self.excludes_shown = self.excluded_paths + self.excludes
        self.mount_backend = options.choice(merged, "mount_backend",
                                            ("auto", "kernel", "portable"))
        self.mount_base = options.absolute_path(merged, "mount_base").encode("utf-8")
        self.restore = options.choice(merged, "restore", ("ct", "files"), {"file": "files"})

    def check_backup(self):
        missing = [k for k in ("name", "uuid") if not getattr(self, k)]
        if missing:
            raise options.OptionError(
                "option%s %s missing: a backup needs the container's name and uuid (in the "
                "Plugin = line, the Job's FD Plugin Options or run ... pluginoptions=)"
                % ("s" if len(missing) > 1 else "", " and ".join(missing)))


class Job(object):
    """The plugin's state for one job (one interpreter)."""

    def __init__(self, bareosfd):
        self.bareosfd = bareosfd
        self.phase = "fileset"
        self.fileset_lines = []
        self.job_options = []
        self.option_strings = []
        self._parsed = {}           # text -> its items, each text once in option_strings
        self.pending_line = None
        self.current = None
        self.failed = False
        self.skipped = set()
        self.objects = 0
        self.restore = None
        version = str(bareosfd.GetValue(bareosfd.bVarVersion) or "0")
        digits = version.split(".")[0].strip()
        self.version = int(digits) if digits.isdigit() else 0
        self.io_in_core = hasattr(bareosfd, "iostat_do_in_core")
        self.signed_times = self.version >= 25
        jobid = bareosfd.GetValue(bareosfd.bVarJobId)
        self.job_label = "%s (jobid %s)" % (bareosfd.GetValue(bareosfd.bVarJobName), jobid)
        bareosfd.RegisterEvents([getattr(bareosfd, e) for e in EVENTS])

    # -- messages -------------------------------------------------------------------

    def _message(self, kind, text):
        self.bareosfd.JobMessage(kind, MESSAGE_PREFIX + names.shown(text) + "\n")

    def fatal(self, text):
        self.failed = True
        self._message(self.bareosfd.M_FATAL, text)

    def error(self, text):
        self._message(self.bareosfd.M_ERROR, text)

    def warning(self, text):
        self._message(self.bareosfd.M_WARNING, text)

    def info(self, text):
        self._message(self.bareosfd.M_INFO, text)

    def debug(self, text):
        self.bareosfd.DebugMessage(DEBUG_LEVEL, MESSAGE_PREFIX + names.shown(text) + "\n")

    @property
    def level(self):
        return chr(self.bareosfd.GetValue(self.bareosfd.bVarLevel) or 32)

    def next_object_index(self):
        self.objects += 1
        return self.objects

    # -- packets ----------------------------------------------------------------------

    def stat_packet(self, st):
        """A StatPacket of ``st``: whole seconds, clamped where Bareos cannot hold
        the value (the exact values travel in the attribute record).

        Members are set one by one, to values that fit them: what the keyword
        constructor would store, at less than half its cost in the FD simulator,
        whose argument parsing is Python (C in the FD)."""
        atime, mtime, ctime = (st.st_atime_ns // 1000000000, st.st_mtime_ns // 1000000000,
                               st.st_ctime_ns // 1000000000)
        if not self.signed_times:
            atime, mtime, ctime = (_clamp(atime), _clamp(mtime), _clamp(ctime))
        statp = self.bareosfd.StatPacket()
        statp.st_dev = st.st_dev & 0xFFFFFFFF
        statp.st_ino = st.st_ino
        statp.st_mode = st.st_mode & 0xFFFF
        statp.st_nlink = min(st.st_nlink, 0x7FFF)
        statp.st_uid = st.st_uid & 0xFFFFFFFF
        statp.st_gid = st.st_gid & 0xFFFFFFFF
        statp.st_rdev = st.st_rdev & 0xFFFFFFFF
        statp.st_size = st.st_size
        statp.st_atime = atime
        statp.st_mtime = mtime
        statp.st_ctime = ctime
        statp.st_blksize = st.st_blksize & 0xFFFFFFFF
        statp.st_blocks = st.st_blocks
        return statp

    # -- options and events -----------------------------------------------------------------

    def parse_plugin_definition(self, text):
        # A restore sends the backup's Plugin= line again with every file: parsed
        # once, kept once (the first value of a key wins, so a repeat adds nothing).
        items = self._parsed.get(text)
        if items is None:
            try:
                items = options.parse(text)
            except options.OptionError as e:
                self.fatal(str(e))
                return self.bareosfd.bRC_Error
            self._parsed[text] = items
            self.option_strings.append(items)
        if self.phase == "fileset":
            self.fileset_lines.append(items)
        elif self.phase == "job-options":
            self.job_options.append(items)
        elif self.phase == "backup":
            self.pending_line = items
        return self.bareosfd.bRC_OK

    def settings(self, line):
        return Settings(options.merge(line, *self.job_options))

    def handle_plugin_event(self, event):
        b = self.bareosfd
        if event == b.bEventEndFileSet:
            self.phase = "job-options"
        elif event == b.bEventStartBackupJob:
            self.phase = "backup"
            self._check_lines()
        elif event == b.bEventEndBackupJob:
            self.end_backup_job()
        elif event == b.bEventStartRestoreJob:
            self.phase = "restore"
            self._restore_job().start_restore_job()
        elif event == b.bEventEndRestoreJob:
            if self.restore is not None:
                self.restore.end_restore_job()
        elif event == b.bEventJobEnd:
            self.end_backup_job()
        return b.bRC_OK

    def _check_lines(self):
        """Every line's options, checked before anything is touched."""
        if self.failed:
            return
        try:
            for line in self.fileset_lines:
                self.settings(line).check_backup()
        except (options.OptionError, OSError) as e:
            self.fatal(str(e))

    # -- backup ------------------------------------------------------------------------------

    def start_backup_file(self, savepkt):
        b = self.bareosfd
        if self.failed:
            return b.bRC_Error
        if self.pending_line is not None:
            line, self.pending_line = self.pending_line, None
            self._close_current()
            try:
                settings = self.settings(line)
                settings.check_backup()
                if not _bit(savepkt.flags, 27):
                    self.warning("the FileSet turns xattr support off: xattrs, nanosecond "
                                 "times and inode flags of container %s are not saved"
                                 % settings.name)
                self.current = ContainerBackup(self, settings)
                self.current.open()
            except Exception as e:
                self._close_current()
                self.fatal(_describe_error(e))
                return b.bRC_Error
        if self.current is None or self.current.done:
            return b.bRC_Stop
        return self.current.start_backup_file(savepkt)

    def end_backup_file(self):
        b = self.bareosfd
        if self.current is None:
            return b.bRC_OK
        if self.current.end_backup_file():
            return b.bRC_More
        self._close_current()
        return b.bRC_OK

    def _close_current(self):
        current, self.current = self.current, None
        if current is not None:
            try:
                current.close()
            except Exception as e:
                self.fatal("container %s: %s" % (current.settings.name, _describe_error(e)))

    def end_backup_job(self):
        self._close_current()

    def check_file(self, fname):
        return self.bareosfd.bRC_Seen if fname in self.skipped else self.bareosfd.bRC_OK

    # -- forwarded per file ------------------------------------------------------------------

    def _restore_job(self):
        if self.restore is None:
            from vz7bareos.restore import RestoreJob
            self.restore = RestoreJob(self)
        return self.restore

    def plugin_io(self, iop):
        if self.current is not None:
            return self.current.plugin_io(iop)
        return self._restore_job().plugin_io(iop)

    def get_acl(self, aclpkt):
        return self.current.get_acl(aclpkt)

    def get_xattr(self, xattrpkt):
        return self.current.get_xattr(xattrpkt)

    def restore_object_data(self, rop):
        return self._restore_job().restore_object_data(rop)

    def start_restore_file(self, cmd):
        return self._restore_job().start_restore_file(cmd)

    def create_file(self, restorepkt):
        return self._restore_job().create_file(restorepkt)

    def set_file_attributes(self, restorepkt):
        return self._restore_job().set_file_attributes(restorepkt)

    def end_restore_file(self):
        return self._restore_job().end_restore_file()

    def set_acl(self, aclpkt):
        return self._restore_job().set_acl(aclpkt)

    def set_xattr(self, xattrpkt):
        return self._restore_job().set_xattr(xattrpkt)


def _clamp(seconds):
    return 0 if seconds < 0 else min(seconds, 0xFFFFFFFF)


def _bit(flags, bit):
    return bool(flags[bit >> 3] & (1 << (bit & 7)))


def _describe_error(exc):
    """An exception as one sentence for a job message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename
        return "%s%s" % (exc.strerror, ": %s" % names.shown(os.fsencode(where))
                         if where is not None else "")
    text = str(exc) or type(exc).__name__
    return text
