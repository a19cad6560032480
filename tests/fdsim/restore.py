"""The restore job driver: pluginoptions and restore objects, then per file the
sequence of contract §2.5 (RestoreCommand, start_restore_file, create_file,
IO_OPEN/IO_WRITE/IO_SEEK, set_file_attributes before IO_CLOSE, delayed
ACL/XATTR, end_restore_file), where/regexwhere, and the core's CreateFile for
CF_CORE (§6).
"""
import errno
import os
import re
import stat as st

from . import constants as C
from . import native
from . import python_fd
from . import volume

FT = C.FT
CF = C.CF
OK = C.BRC["bRC_OK"]
#: IO_OPEN flags of a file the core has the plugin create (§4, §6).
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class WhereError(ValueError):
    """A regexwhere expression the FD cannot parse."""


def parse_regexwhere(text):
    """``!from!to!`` expressions (several separated by ``,``), the separator being
    the first character; trailing ``i``/``g`` flags.  ``$N`` and ``\\N`` are
    back-references."""
    rules = []
    for expression in _split_unescaped(text, ","):
        if len(expression) < 3:
            raise WhereError("regexwhere: %r is not !from!to!" % expression)
        sep = expression[0]
        parts = _split_unescaped(expression[1:], sep)
        if len(parts) != 3:
            raise WhereError("regexwhere: %r is not %sfrom%sto%s" % (expression, sep, sep, sep))
        pattern, replacement, flags = parts
        if set(flags) - set("ig"):
            raise WhereError("regexwhere: unknown flags %r in %r" % (flags, expression))
        try:
            compiled = re.compile(pattern, re.I if "i" in flags else 0)
        except re.error as exc:
            raise WhereError("regexwhere: %r: %s" % (expression, exc))
        rules.append((compiled, re.sub(r"\$(\d)", r"\\\1", replacement),
                      0 if "g" in flags else 1))
    return rules


def _split_unescaped(text, sep):
    parts = [""]
    escaped = False
    for ch in text:
        if escaped:
            parts[-1] += ("" if ch == sep else "\\") + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("")
        else:
            parts[-1] += ch
    return parts


def apply_where(name, where, rules):
    """The name the core builds before create_file (§6); ``where`` is the FD's
    (already '' for ``where=/``)."""
    if rules:
        for pattern, replacement, count in rules:
            name = pattern.sub(replacement, name, count=count)
        return name
    if not where:
        return name
    where = where.rstrip("/")
    return where + name if name.startswith("/") else where + "/" + name


def run(core):
    spec = core.spec
    rules = parse_regexwhere(spec["regexwhere"]) if spec.get("regexwhere") else None
    core.new_plugin()
    core.generate_event("bEventJobStart")
    # restore command pluginoptions first, then the restore Job's FD Plugin Options
    for options in spec.get("plugin_options", []):
        core.generate_event("bEventNewPluginOptions", options)
    for obj in spec.get("restore_objects", []):
        core.generate_event("bEventRestoreObject", native.RestoreObj(
            object_name=obj["object_name"], object=bytes.fromhex(obj["object"]),
            plugin_name=obj["plugin_name"], object_type=obj["object_type"],
            object_len=obj["object_len"], object_full_len=obj["object_len"],
            object_index=obj["object_index"], stream=C.STREAM_RESTORE_OBJECT,
            jobid=obj["jobid"]))
    if spec.get("restore_objects"):
        core.generate_event("bEventRestoreObject", None)
    core.job_type = "R"
    core.generate_event("bEventStartRestoreJob")
    restorer = _Restorer(core, rules)
    for ref in spec.get("files", []):
        if core.canceled:
            break
        for record in volume.read_file_group(ref["volume"], ref["offset"]):
            restorer.record(record)
            if core.canceled:
                break
    restorer.finish_file()
    if restorer.restore_file_started:
        restorer.end_restore_file()  # EndRestoreJob forces it (§2.5 step 6)
    core.generate_event("bEventEndRestoreJob")
    core.generate_event("bEventJobEnd")


class _Restorer(object):
    def __init__(self, core, rules):
        self.core = core
        self.plugin = core.plugin
        self.spec = core.spec
        self.rules = rules
        self.replace = C.REPLACE[self.spec.get("replace", "always")]
        self.restore_file_started = False
        self.create_file_called = False
        self.current = None
        self.opened_fd = None

    # --- the record stream ---------------------------------------------------------

    def record(self, record):
        if record.stream == C.STREAM_PLUGIN_NAME:
            cmd = record.plugin_name_start
            if cmd is not None:
                self.finish_file()
                self.plugin_name_start(cmd)
            else:
                self.finish_file()
                if self.restore_file_started:
                    self.end_restore_file()
                self.create_file_called = False
        elif record.stream == C.STREAM_UNIX_ATTRIBUTES:
            self.finish_file()
            self.attributes(record.attributes(), record.file_index)
        elif record.stream in (C.STREAM_FILE_DATA, C.STREAM_SPARSE_DATA):
            if self.current is not None and self.current.extracting:
                self.data(record)
        elif record.stream in (C.STREAM_ACL_PLUGIN, C.STREAM_XATTR_PLUGIN):
            if self.current is not None:
                self.current.delayed.append(record)

    def plugin_name_start(self, cmd):
        core = self.core
        if not python_fd.plugin_name_matches(python_fd.command_plugin_name(cmd)):
            core.job_message(C.M["M_WARNING"], "Plugin=%s not found." % cmd)
            return
        if core.generate_event("bEventRestoreCommand", cmd) != OK:
            core.dmsg(python_fd.DEBUG_LEVEL, "Handle event failed. Plugin=%s" % cmd)
            return
        if self.restore_file_started:
            core.job_message(C.M["M_FATAL"], "Second call to startRestoreFile. "
                             "plugin=python3-fd.so cmd=%s" % cmd)
            self.restore_file_started = False
            return
        if self.plugin.start_restore_file(cmd) == OK:
            self.restore_file_started = True

    def end_restore_file(self):
        rc = self.plugin.end_restore_file()
        if rc == C.PYTHON_UNDEFINED_RETURN_VALUE:
            self.core.job_message(C.M["M_FATAL"], "Return value of endRestoreFile invalid: "
                                  "%d, plugin=python3-fd.so" % rc)
        self.restore_file_started = False
        self.create_file_called = False

    def attributes(self, attrs, file_index):
        core = self.core
        fname = volume.stored_name(attrs)  # a directory's ends with "/" (§6)
        kind = attrs["type"]
        link = attrs["link"]
        ofname = apply_where(fname, core.where, self.rules)
        olname = link
        if link and (kind == FT["FT_LNKSAVED"] or (
                kind == FT["FT_LNK"] and self.spec.get("prefix_links") and link.startswith("/"))):
            olname = apply_where(link, core.where, self.rules)
        rp = native.RestorePkt(
            stream=C.STREAM_UNIX_ATTRIBUTES, data_stream=attrs["data_stream"], type=kind,
            file_index=file_index, linkFI=attrs["link_fi"],
            uid=attrs["stat"]["uid"], statp=native.Stat(**attrs["stat"]), attrEX=None,
            ofname=ofname, olname=olname if kind in (FT["FT_LNK"], FT["FT_LNKSAVED"]) else "",
            where=core.where,
            replace=ord(self.replace), original_file_name=fname,
            original_link_name=link if kind in (FT["FT_LNK"], FT["FT_LNKSAVED"]) else None)
        self.opened_fd = None
        status = self.create_file(rp)
        self.current = _File(rp, status)
        if status == CF["CF_ERROR"]:
            return
        core.files += 1  # CF_SKIP counts as restored too (§6)
        if status == CF["CF_EXTRACT"]:
            self.current.extracting = True
            self.current.in_core_fd = self.opened_fd
        elif status == CF["CF_CREATED"]:
            self.plugin.set_file_attributes(rp)

    def create_file(self, rp):
        """PluginCreateFile: the plugin's create_file and what the core does with
        its create_status (§6)."""
        core = self.core
        if core.canceled:
            return CF["CF_ERROR"]
        if not self.restore_file_started or self.create_file_called:
            core.job_message(C.M["M_FATAL"], "Unbalanced call to createFile=%d %d"
                             % (self.create_file_called, self.restore_file_started))
            self.create_file_called = False
            return CF["CF_ERROR"]
        self.create_file_called = True
        rp.create_status = CF["CF_ERROR"]
        rc = self.plugin.create_file(rp)
        if rc != OK:
            core.job_message(C.M["M_ERROR"], "Plugin createFile call failed. Stat=%d file=%s"
                             % (rc, rp.ofname))
            return CF["CF_ERROR"]
        status = rp.create_status
        if status == CF["CF_ERROR"]:
            core.job_message(C.M["M_ERROR"], "Plugin createFile call failed. Returned "
                             "CF_ERROR file=%s" % rp.ofname)
            return status
        if status == CF["CF_CORE"]:
            return _CoreCreate(self, rp).run()
        if status in (CF["CF_SKIP"], CF["CF_CREATED"]):
            return status
        # CF_EXTRACT and any other value: the core opens through the plugin
        return self.open_for_write(rp, 0o600)

    def open_for_write(self, rp, mode, flags=CREATE_FLAGS):
        error, self.opened_fd = self.core.plugin_open(rp.ofname, flags, mode)
        if error:
            self.core.job_message(C.M["M_ERROR"], "Could not create %s: ERR=%s"
                                  % (rp.ofname, error))
            return CF["CF_ERROR"]
        return CF["CF_EXTRACT"]

    def data(self, record):
        current = self.current
        if record.stream == C.STREAM_SPARSE_DATA:
            offset, data = record.sparse()
            if offset != current.file_addr:
                seek = native.IoPkt(C.IO["IO_SEEK"], offset=offset, whence=os.SEEK_SET)
                if self.plugin.plugin_io(seek) != OK:
                    self._write_error("Seek error")
                    return
                current.file_addr = offset
        else:
            data = record.payload
        if current.in_core_fd is not None:
            try:
                _write_fd(current.in_core_fd, data)
            except OSError as exc:
                self._write_error("Write error", exc.strerror)
                return
        else:
            io = native.IoPkt(C.IO["IO_WRITE"], count=len(data), buf=bytearray(data))
            self.plugin.plugin_io(io)
            if io.status != io.count:
                self._write_error("Write error", os.strerror(io.io_errno) if io.io_errno
                                  else "plugin wrote %d of %d bytes" % (io.status, io.count))
                return
        current.file_addr += len(data)
        self.core.bytes += len(data)

    def _write_error(self, what, detail=""):
        self.core.job_message(C.M["M_ERROR"], "%s on %s: %s" % (what, self.current.rp.ofname,
                                                                 detail))
        self.current.extracting = False
        self.current.write_failed = True

    def finish_file(self):
        """Close the file in progress: set_file_attributes, IO_CLOSE, then the delayed
        ACL/XATTR streams -- applied if the file was extracted or is a directory."""
        current = self.current
        if current is None:
            return
        self.current = None
        extracted = current.status == CF["CF_EXTRACT"]
        if extracted:
            self.plugin.set_file_attributes(current.rp)
            self.plugin.plugin_io(native.IoPkt(C.IO["IO_CLOSE"]))
        if extracted or current.rp.type == FT["FT_DIREND"]:
            for record in current.delayed:
                if record.stream == C.STREAM_ACL_PLUGIN:
                    if self.plugin.set_acl(current.rp.ofname, record.payload) != OK:
                        self.core.job_message(C.M["M_ERROR"], "ACL restore error on %s"
                                              % current.rp.ofname)
                else:
                    for name, value in record.xattrs():
                        if self.plugin.set_xattr(current.rp.ofname, name, value) != OK:
                            self.core.job_message(C.M["M_ERROR"], "XATTR restore error on %s"
                                                  % current.rp.ofname)
                            break


class _File(object):
    """The file being restored."""

    def __init__(self, rp, status):
        self.rp = rp
        self.status = status
        self.extracting = False
        self.write_failed = False
        self.file_addr = 0
        self.delayed = []
        self.in_core_fd = None


def _write_fd(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _CoreCreate(object):
    """The core's CreateFile for CF_CORE (§6): replace policy, parent directories,
    per-type creation.  Never restores times; owner and mode only for directories."""

    def __init__(self, restorer, rp):
        self.restorer = restorer
        self.core = restorer.core
        self.rp = rp
        # The core's own calls take a directory's name without its trailing "/".
        path = rp.ofname.encode("utf-8")
        self.path = path.rstrip(b"/") or path

    def run(self):
        rp = self.rp
        kind = rp.type
        mode = rp.statp.mode & 0xFFFF
        try:
            existing = os.lstat(self.path)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            skip = self._replace_skip(existing)
            if skip:
                self.core.job_message(C.M["M_SKIPPED"], "File skipped. %s: %s"
                                      % (skip, rp.ofname))
                return CF["CF_SKIP"]
            if not st.S_ISDIR(existing.st_mode):
                os.unlink(self.path)
                existing = None
        try:
            if kind in (FT["FT_REG"], FT["FT_REGE"]):
                self._make_parents()
                return self._open_through_plugin()
            if kind == FT["FT_FIFO"]:
                self._make_parents()
                os.mkfifo(self.path, mode & 0o7777)
                # the FIFO exists: opened for writing only (§6, verified)
                return self._open_through_plugin(os.O_WRONLY)
            if kind == FT["FT_SPEC"]:
                return self._special(mode)
            if kind == FT["FT_LNK"]:
                self._make_parents()
                os.symlink(rp.olname.encode("utf-8"), self.path)
                return CF["CF_CREATED"]
            if kind == FT["FT_LNKSAVED"]:
                self._make_parents()
                os.link(rp.olname.encode("utf-8"), self.path)
                return CF["CF_CREATED"]
            if kind == FT["FT_DIREND"]:
                self._make_directory(existing)
                return CF["CF_CREATED"]
        except OSError as exc:
            self.core.job_message(C.M["M_ERROR"], "Could not create %s: ERR=%s"
                                  % (rp.ofname, exc.strerror))
            return CF["CF_ERROR"]
        self.core.job_message(C.M["M_ERROR"], "Unknown file type %d; not restored: %s"
                              % (kind, rp.ofname))
        return CF["CF_ERROR"]

    def _replace_skip(self, existing):
        replace = chr(self.rp.replace)
        mtime = self.rp.statp.mtime
        if replace == "w" and mtime <= int(existing.st_mtime):
            return "Not newer"
        if replace == "o" and mtime >= int(existing.st_mtime):
            return "Not older"
        if replace == "n":
            return "Already exists"
        return None

    def _make_parents(self):
        """Missing parents of a file: plain mkdir (0777 minus umask), no chown."""
        parent = os.path.dirname(self.path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, 0o777)

    def _open_through_plugin(self, flags=CREATE_FLAGS):
        return self.restorer.open_for_write(self.rp, 0, flags)  # IO_OPEN has mode 0 (§13)

    def _special(self, mode):
        rp = self.rp
        if st.S_ISFIFO(mode):
            self._make_parents()
            os.mkfifo(self.path, mode & 0o7777)
            return CF["CF_CREATED"]
        if st.S_ISSOCK(mode):
            return CF["CF_SKIP"]
        if st.S_ISCHR(mode) or st.S_ISBLK(mode):
            # "restoring a device as a file" creates nothing; in place with the node
            # missing it fails (§6, §13).
            if rp.ofname == rp.original_file_name and not os.path.lexists(self.path):
                self.core.job_message(C.M["M_ERROR"], "Device restore on root failed: %s"
                                      % rp.ofname)
                return CF["CF_ERROR"]
            return CF["CF_CREATED"]
        self._make_parents()
        os.mknod(self.path, mode, rp.statp.rdev)
        return CF["CF_CREATED"]

    def _make_directory(self, existing):
        """makepath with the entry's mode and owner: new parents get the mode plus
        u+wx and the owner; the entry itself gets both, new or not (§6, §13)."""
        statp = self.rp.statp
        mode = statp.mode & 0o7777
        missing = []
        path = self.path
        while path and path != b"/" and not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for directory in reversed(missing):
            final = directory == self.path
            try:
                os.mkdir(directory, mode if final else mode | 0o300)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
            os.chown(directory, statp.uid, statp.gid)
            os.chmod(directory, mode if final else mode | 0o300)
        if existing is not None:
            os.chown(self.path, statp.uid, statp.gid)
            os.chmod(self.path, mode)
