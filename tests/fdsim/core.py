"""The simulated FD core of one job: job state and status, the job log and debug
output, event generation, the accurate list with its seen marks, the change check
of contract §5, and the services the ``bareosfd`` functions reach (§3.1, §3.2).

The job drivers (:mod:`fdsim.backup`, :mod:`fdsim.restore`) run on top of it.
"""
import json
import os
import stat as st

from . import constants as C
from . import native
from . import python_fd
from . import records
from . import standin
from . import structmember as sm
from .versions import BareosVersion

OK = C.BRC["bRC_OK"]
ERROR = C.BRC["bRC_Error"]
SEEN = C.BRC["bRC_Seen"]

STATUS_TEXT = {"T": "OK", "W": "OK -- with warnings", "E": "Error", "f": "Fatal error"}


class PluginCore(object):
    """One running job inside the FD process."""

    def __init__(self, spec, interpreter):
        self.spec = spec
        self.version = BareosVersion(spec["bareos_version"])
        self.interpreter = interpreter
        self.jobid = spec["jobid"]
        self.kind = spec["kind"]
        self.level = spec.get("level", " ")
        self.job_type = "I"  # JT_SYSTEM until the backup/restore command (§2.3)
        self.debug_level = spec.get("debug_level", 0)
        self.fatal = False
        self.error_terminated = False
        self.job_errors = 0
        self.files = 0
        self.bytes = 0
        self.crash = None
        self.fileset_calls = []
        self.where = _fd_where(spec)
        self.accurate = {}
        if spec.get("accurate_list_path"):
            self.accurate = _load_accurate(spec["accurate_list_path"])
        # The seen marks of accurate mode: catalog names only, like the FD's bitmap
        # over its accurate list (other names are never asked about).
        self.seen = set()
        self._instance_marker = None
        self.records_dir = spec.get("records_dir")
        if self.records_dir:  # lean mode: the records go to files as the job runs
            self._records = {name: records.RecordFile(records.record_path(
                self.records_dir, name)) for name in records.NAMES}
        else:
            self._records = {name: [] for name in records.NAMES}
        self.log = self._records["log"]
        self.debug = self._records["debug"]
        self.trace_entries = self._records["trace"]
        self.events = self._records["events"]
        self.warnings = self._records["warnings"]
        try:
            if self.records_dir:
                for record in self._records.values():
                    record.open()
            self.module = standin.build_module(self.version, self)
            self.types = {name: getattr(self.module, name) for name in (
                "StatPacket", "SavePacket", "RestorePacket", "IoPacket", "AclPacket",
                "XattrPacket", "RestoreObject")}
            self.plugin = python_fd.PythonFdPlugin(self)
        except BaseException:
            self.close_records()
            raise

    def close_records(self):
        """Close the record files of a lean job (nothing to do for lists)."""
        if self.records_dir:
            for record in self._records.values():
                record.close()

    # --- status ---------------------------------------------------------------------

    @property
    def canceled(self):
        """``jcr->IsJobCanceled()``: fatal errors count as cancelled (§3.1)."""
        return self.fatal or self.error_terminated

    def status(self):
        if self.fatal or self.crash:
            return "f"
        if self.error_terminated:
            return "E"
        return "W" if self.job_errors else "T"

    # --- messages and records ---------------------------------------------------------

    def job_message(self, mtype, text):
        """Jmsg: M_FATAL fails the job, M_ERROR counts a job error (§3.1, §13) --
        not in a restore, whose FD Errors stay 0 (§6 "Restore errors")."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        text = (text or "").rstrip("\n")
        name = C.M_NAMES.get(mtype, "M_%d" % mtype)
        self.log.append([name, text])
        if mtype == C.M["M_FATAL"]:
            self.fatal = True
            self.job_errors = max(self.job_errors, 1)
        elif mtype in (C.M["M_ERROR"], C.M["M_NOTSAVED"]) and self.kind != "restore":
            self.job_errors += 1
        elif mtype in (C.M["M_ABORT"], C.M["M_ERROR_TERM"]):
            # Bareos's message layer aborts/exits the daemon for these types
            # (the contract does not list them; this is the daemon's own rule).
            raise python_fd.FdCrash("JobMessage(%s): the FD's message layer terminates the "
                                    "daemon" % name)

    def dmsg(self, level, text):
        if self.debug_level >= level:
            self.debug.append([level, text.rstrip("\n")])

    def trace(self, call, rc, **extra):
        entry = [call, rc]
        if extra:
            entry.append(extra)
        self.trace_entries.append(entry)

    def event_log(self, name, delivered):
        self.events.append([name, bool(delivered)])

    def generate_event(self, name, value=None):
        """GeneratePluginEvent: nothing reaches a cancelled/failed job except
        End{Backup,Restore}Job (§2.3 step 10, verified §13)."""
        if self.canceled and name not in ("bEventEndBackupJob", "bEventEndRestoreJob",
                                          "bEventEndVerifyJob"):
            self.event_log(name, False)
            return C.BRC["bRC_Cancel"]
        return self.plugin.handle_event(C.EVENTS[name], value)

    def plugin_open(self, fname, flags, mode):
        """The core's bopen through the plugin (IO_OPEN, §4): returns ``(error,
        fd)`` -- ``error`` the reason the open failed, else None; ``fd`` the
        plugin's file descriptor under do_io_in_core, else None (classic I/O)."""
        io = native.IoPkt(C.IO["IO_OPEN"], fname=fname, flags=flags, mode=mode)
        rc = self.plugin.plugin_io(io)
        in_core = self.version.do_io_in_core and io.status == C.IOSTAT["iostat_do_in_core"]
        if rc == ERROR or io.status < 0 or (in_core and io.filedes == -1):
            return (os.strerror(io.io_errno) if io.io_errno else "plugin open failed"), None
        return None, (io.filedes if in_core else None)

    # --- services of the bareosfd functions (§3.1, §3.2) ------------------------------

    def get_value(self, var):
        spec = self.spec
        v = C.VARS
        if var == v["bVarJobId"]:
            return self.jobid
        if var == v["bVarFDName"]:
            return spec["fd_name"]
        if var == v["bVarLevel"]:
            return ord(self.level)
        if var == v["bVarType"]:
            return ord(self.job_type)
        if var == v["bVarClient"]:
            return spec.get("client")
        if var == v["bVarJobName"]:
            return spec["job"]
        if var == v["bVarJobStatus"]:
            return ord("R")
        if var == v["bVarSinceTime"]:
            # 22.1/23+: the C-private value from bEventSince or SetValue (§3.2)
            return self.plugin.since if self.version.since_api else spec.get("since", 0)
        if var == v["bVarAccurate"]:
            return 1 if spec.get("accurate") else 0
        if var == v["bVarWorkingDir"]:
            return spec["working_directory"]
        if var == v["bVarWhere"]:
            return self.where
        if var == v["bVarExePath"]:
            return spec["exe_path"]
        if var == v["bVarVersion"]:
            return str(self.version)
        if var == v["bVarPrevJobName"]:
            return spec.get("prev_job")
        if var == v["bVarPrefixLinks"]:
            return 1 if spec.get("prefix_links") else 0
        if var == v["bVarCheckChanges"] and self.version.since_api:
            return self.plugin.check_changes
        if var == v["bVarUsedConfig"] and self.version.used_config:
            return spec["used_config"]
        if var == v["bVarAccurateOptions"] and self.version.master_snapshot:
            return frozenset(C.ACCURATE_OPTIONS["bAccurateOption" + C.ACCURATE_LETTERS[letter]]
                             for letter in self.accurate_letters if letter in C.ACCURATE_LETTERS)
        # bVarFileSeen (write-only), bVarVssClient, bVarDistName, bVarRegexWhere
        # (never filled), bVarPluginPath (not exported) and unknown numbers: None.
        return None

    def set_value(self, var, value):
        v = C.VARS
        if var == v["bVarFileSeen"]:
            if not isinstance(value, str):
                raise TypeError("bad argument type for built-in operation")
            if not self.spec.get("accurate"):
                return ERROR
            self.mark_seen(value)
            return OK
        if self.version.since_api:
            if var == v["bVarSinceTime"]:
                if not isinstance(value, int):
                    raise TypeError("an integer is required")
                # 0 falls back to the job's since time (§5)
                self.plugin.since = value or self.plugin.event_since
                return OK
            if var == v["bVarCheckChanges"]:
                self.plugin.check_changes = value is True
                return OK
        elif var == v["bVarLevel"]:
            if not isinstance(value, int):
                raise TypeError("an integer is required")
            self.level = chr(value)
            return OK
        return ERROR

    def plugin_job_message(self, mtype, text):
        """bareosfd.JobMessage: the job log shows the text after python3-fd's
        ``python3-fd-mod: `` (§13)."""
        self.job_message(mtype, _module_text(text))

    def debug_message(self, level, text):
        self.dmsg(level, _module_text(text))

    def register_events(self, events, register):
        return self.plugin.register_events(events, register)

    def instance_count(self):
        directory = self.spec["instances_dir"]
        return len(os.listdir(directory)) if os.path.isdir(directory) else 0

    def fileset_call(self, name, args):
        """AddExclude & co. modify the native fileset, which the simulator does not
        walk: the call is recorded in the job result."""
        self.fileset_calls.append([name] + [a if not isinstance(a, bytes) else a.decode()
                                            for a in args])
        return OK

    def check_changes_packet(self, packet):
        """bareosfd.CheckChanges: the C code passes only type, fname, link and
        save_time -- not statp -- so the comparison runs on an all-zero stat (§3.1)."""
        sp = native.SavePkt(sm.c_get(packet, "cmd") or "", bytearray(C.FLAGS_BYTES))
        sp.type = sm.c_get(packet, "type")
        fname = sm.c_get(packet, "fname")
        link = sm.c_get(packet, "link")
        sp.fname = fname if isinstance(fname, str) else None
        sp.link = link if isinstance(link, str) else None
        sp.save_time = sm.c_get(packet, "save_time")
        sp.statp = native.Stat()
        rc = self.check_changes(sp)
        sm.c_set(packet, "delta_seq", sp.delta_seq)
        sm.c_set(packet, "accurate_found", sp.accurate_found)
        return rc

    def accept_file(self, packet):
        """AcceptFile: the simulated FileSet has no include/exclude options, so every
        file is accepted."""
        return OK

    def seen_bitmap(self, set_seen, all_files, fname):
        if not self.spec.get("accurate") or (all_files and fname is not None):
            return ERROR
        if all_files:
            if set_seen:
                self.seen.update(self.accurate)
            else:
                self.seen.clear()
        elif fname is not None:
            if set_seen:
                self.mark_seen(fname)
            else:
                self.seen.discard(fname)
        else:
            return ERROR
        return OK

    # --- change detection (§5) ------------------------------------------------------------

    @property
    def accurate_letters(self):
        return self.spec.get("accurate_options") or C.ACCURATE_DEFAULT

    def check_changes(self, sp):
        """The core's checkChanges for a native save packet: bRC_Seen = unchanged."""
        statp = sp.statp
        if self.spec.get("accurate"):
            name = sp.link if st.S_ISDIR(statp.mode & 0xFFFF) else sp.fname
            # A nameless catalog row never matches: a directory saved with an
            # empty link is sent again in every accurate job (§13).
            entry = self.accurate.get(name) if name else None
            if entry is None:
                sp.accurate_found = False
                return OK
            sp.accurate_found = True
            self.seen.add(name)
            return OK if self._accurate_changed(entry, statp) else SEEN
        unchanged = statp.mtime < sp.save_time and (
            self.spec.get("mtimeonly") or statp.ctime < sp.save_time)
        return SEEN if unchanged else OK

    def _accurate_changed(self, entry, statp):
        checks = {"i": "ino", "p": "mode", "n": "nlink", "u": "uid", "g": "gid",
                  "s": "size", "a": "atime", "m": "mtime", "c": "ctime"}
        for letter in self.accurate_letters:
            if letter == "A":
                return True
            if letter == "d" and statp.size < entry["size"]:
                return True
            field = checks.get(letter)
            if field is not None and getattr(statp, field) != entry[field]:
                return True
            # "5"/"1" (checksums) need digests the simulator does not keep.
        return False

    # --- plugin instance registry (GetInstanceCount) -----------------------------------------

    def new_plugin(self):
        directory = self.spec["instances_dir"]
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
        self._instance_marker = os.path.join(directory, "job-%d" % self.jobid)
        open(self._instance_marker, "w").close()

    def free_plugin(self):
        if self._instance_marker is not None:
            try:
                os.unlink(self._instance_marker)
            except FileNotFoundError:
                pass
            self._instance_marker = None
        if self.plugin.crash_at_job_end and not self.crash:
            self.crash = ("SIGSEGV in Py_EndInterpreter: " + self.plugin.crash_at_job_end)

    def result(self):
        """The job's outcome for the Director; a lean job's records are in their
        files, its lists here empty."""
        result = {
            "jobid": self.jobid, "kind": self.kind, "level": self.level,
            "status": self.status(), "files": self.files, "bytes": self.bytes,
            "errors": self.job_errors, "fileset_calls": self.fileset_calls,
            "crashed": self.crash, "bareos_version": str(self.version),
        }
        for name, record in self._records.items():
            result[name] = [] if self.records_dir else record
        return result

    def mark_seen(self, name):
        """accurate_mark_file_as_seen: a name outside the accurate list has no bit."""
        if name in self.accurate:
            self.seen.add(name)


def _module_text(text):
    """A JobMessage/DebugMessage text (the C string, or NULL) as the FD logs it."""
    return python_fd.MODULE_PREFIX + (text.decode("utf-8") if text else "")


def _fd_where(spec):
    """The where of the FD's restore command: ``where=/`` and an empty where mean
    no prefix and reach the plugin as '' (§6, verified); None for regexwhere
    restores and for backups."""
    if spec.get("kind") != "restore" or spec.get("regexwhere"):
        return None
    where = spec.get("where") or ""
    return "" if where == "/" else where


def _load_accurate(path):
    with open(path) as f:
        return {entry["path"]: entry for entry in json.load(f)}
