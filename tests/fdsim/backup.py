"""The backup job driver: the command and event order of contract §2.3, the
PluginSave loop with the return-code rules of §2.1, the core's post-processing
(change check, hardlinks, SaveFile by type), data reads (classic and
do_io_in_core, §4), ACL/XATTR collection and the accurate deleted-file pass (§5).
"""
import os
import stat as st

from . import constants as C
from . import native
from . import python_fd
from . import volume

FT = C.FT
OK, STOP, ERROR, MORE, SKIP = (C.BRC[n] for n in ("bRC_OK", "bRC_Stop", "bRC_Error",
                                                    "bRC_More", "bRC_Skip"))
#: Types SaveFile stores (§2.1 "Core post-processing" step 3).  FT_REGE is the
#: empty-file flavour of FT_REG and stored alike.
STORED_TYPES = frozenset(FT[n] for n in ("FT_REG", "FT_REGE", "FT_LNK", "FT_DIREND",
                                          "FT_SPEC", "FT_FIFO", "FT_RAW", "FT_LNKSAVED"))
#: st_mode types eligible for hardlink handling.
HARDLINK_MODES = (st.S_IFREG, st.S_IFCHR, st.S_IFBLK, st.S_IFIFO, st.S_IFSOCK)


def fileset_flags(spec, version):
    """The FileSet option bits copied into every save packet (§3.4)."""
    flags = bytearray(C.FLAGS_BYTES)
    options = spec.get("fileset_options", {})
    C.set_bit(flags, "FO_ACL", options.get("acl", True))
    C.set_bit(flags, "FO_XATTR", options.get("xattr", True))
    hardlinks = options.get("hardlinks", version.hardlinks_default)
    C.set_bit(flags, "FO_NO_HARDLINK", not hardlinks)
    C.set_bit(flags, "FO_SPARSE", options.get("sparse", False))
    C.set_bit(flags, "FO_MTIMEONLY", options.get("mtimeonly", False))
    C.set_bit(flags, "FO_NOATIME", options.get("noatime", False))
    return flags


def run(core):
    spec = core.spec
    lines = spec["fileset_plugins"]
    # 1-2: JobId, level/since: python3-fd is not loaded, Python sees none of these.
    core.new_plugin()
    core.generate_event("bEventJobStart")
    if core.level in ("I", "D"):
        core.generate_event("bEventSince", spec.get("since", 0))
    core.generate_event("bEventLevel", core.level)
    # 3: FileSet
    for line in lines:
        if not spec.get("plugin_directory"):
            core.job_message(C.M["M_FATAL"], "Plugin Directory not defined")
            break
        if python_fd.plugin_name_matches(python_fd.command_plugin_name(line)):
            core.generate_event("bEventPluginCommand", line)
    core.generate_event("bEventEndFileSet")
    # 4: run pluginoptions, then the Job's FD Plugin Options
    for options in spec.get("plugin_options", []):
        core.generate_event("bEventNewPluginOptions", options)
    # 6: the backup command
    core.job_type = "B"
    core.generate_event("bEventStartBackupJob")
    saver = _Saver(core, fileset_flags(spec, core.version))
    with volume.VolumeWriter(spec["volume"]) as writer:
        saver.writer = writer
        for line in lines:
            if core.canceled:
                break
            saver.plugin_save(line)
        if spec.get("accurate") and core.level in ("I", "D") and not core.canceled:
            saver.deleted_pass()
    saver.report_acl_xattr_errors()
    core.generate_event("bEventEndBackupJob")
    core.generate_event("bEventJobEnd")


class _Saver(object):
    def __init__(self, core, flags):
        self.core = core
        self.plugin = core.plugin
        self.flags = flags
        self.writer = None
        self.linkhash = {}
        self.read_buffer = bytearray(core.version.io_read_count)
        self.errors = {"acl": 0, "xattr": 0}  # failed get_acl / get_xattr calls

    def plugin_save(self, cmd):
        """PluginSave for one Plugin= line."""
        core = self.core
        version = core.version
        if not python_fd.plugin_name_matches(python_fd.command_plugin_name(cmd)):
            core.job_message(C.M["M_FATAL"], 'Command plugin "%s" not found.' % cmd)
            return
        if core.generate_event("bEventBackupCommand", cmd) != OK:
            if version.backup_command_error_fails_job:
                core.error_terminated = True  # FindFiles fails: JS_ErrorTerminated
            return
        while not core.canceled:
            sp = native.SavePkt(cmd, self.flags)
            rc = self.plugin.start_backup_file(sp)
            if version.start_backup_file_codes:
                if rc == STOP:
                    return
                if rc == SKIP:
                    continue
                if rc == ERROR:
                    core.job_message(C.M["M_FATAL"], 'Command plugin "%s": startBackupFile '
                                     'failed.' % cmd)
                    return
                if rc != OK:
                    core.job_message(C.M["M_ERROR"], 'Command plugin "%s": unhandled '
                                     'returncode from startBackupFile.' % cmd)
                    return
            elif rc != OK:
                return  # 20-22: any other code silently ends the loop (§2.1)
            if sp.type == 0:
                core.job_message(C.M["M_FATAL"], 'Command plugin "%s": no type in '
                                 'startBackupFile packet.' % cmd)
                return
            if sp.type in C.FT_OBJECTS:
                self.save_object(sp)
                name = None
            else:
                if sp.fname is None:
                    core.job_message(C.M["M_FATAL"], 'Command plugin "%s": no fname in '
                                     'startBackupFile packet.' % cmd)
                    return
                name = sp.fname
                self.save_plugin_file(sp)
            rc = self.plugin.end_backup_file()
            if rc in (MORE, OK) and name is not None:
                core.mark_seen(name)
            if rc != MORE:
                return

    def save_plugin_file(self, sp):
        flags = bytearray(self.flags)
        for bit in C.FO_FROM_PLUGIN:
            C.set_bit(flags, bit, C.bit_is_set(sp.flags, bit))
        C.set_bit(flags, "FO_PLUGIN")
        link_fi = 0
        linked = None
        mode = sp.statp.mode & 0xFFFF
        nlink = sp.statp.nlink & native.MASK64  # nlink_t is unsigned
        if (not C.bit_is_set(self.flags, "FO_NO_HARDLINK") and nlink > 1
                and st.S_IFMT(mode) in HARDLINK_MODES):
            entry = self.linkhash.setdefault((sp.statp.dev, sp.statp.ino),
                                             {"name": sp.fname, "file_index": 0})
            if entry["file_index"] == 0:
                linked = entry
            elif entry["name"] == sp.fname:
                sp.no_read = True
            else:
                sp.link = entry["name"]
                sp.type = FT["FT_LNKSAVED"]
                link_fi = entry["file_index"]
                sp.no_read = True
        file_index = self.save_file(sp, flags, link_fi)
        if linked is not None:
            linked["file_index"] = file_index

    def save_file(self, sp, flags, link_fi):
        """SaveFile: returns the FileIndex, 0 when nothing was stored."""
        core = self.core
        kind = sp.type
        mode = sp.statp.mode & 0xFFFF
        if core.canceled:
            return 0
        if kind in (FT["FT_NOCHG"], FT["FT_DIRNOCHG"]):
            core.job_message(C.M["M_SKIPPED"], "     Unchanged file skipped: %s" % sp.fname)
            return 0
        if kind == FT["FT_DIRBEGIN"]:
            return 0
        if kind == FT["FT_SPEC"] and st.S_ISSOCK(mode):
            core.job_message(C.M["M_SKIPPED"], "     Socket file skipped: %s" % sp.fname)
            return 0
        if kind not in STORED_TYPES and kind != FT["FT_DELETED"]:
            core.job_message(C.M["M_NOTSAVED"], "     Unknown file type %d: %s"
                             % (kind, sp.fname))
            return 0
        core.files += 1
        file_index = core.files
        sparse = (C.bit_is_set(flags, "FO_SPARSE") or C.bit_is_set(flags, "FO_OFFSETS"))
        data_stream = 0 if sp.no_read or kind in (FT["FT_DELETED"], FT["FT_LNKSAVED"]) else (
            C.STREAM_SPARSE_DATA if sparse else C.STREAM_FILE_DATA)
        self.writer.plugin_name(file_index, sp.cmd)
        self.writer.write(C.STREAM_UNIX_ATTRIBUTES, file_index, volume.encode_attributes({
            "type": kind, "fname": sp.fname, "link": sp.link, "stat": sp.statp.as_dict(),
            "link_fi": link_fi, "delta_seq": sp.delta_seq, "data_stream": data_stream,
        }))
        try:
            if kind == FT["FT_DELETED"]:
                return file_index
            if data_stream and not self.send_data(sp, flags, file_index, sparse):
                return file_index
            if C.bit_is_set(self.flags, "FO_ACL") and kind != FT["FT_LNK"]:
                self.send_acl(sp.fname, file_index)
            if C.bit_is_set(self.flags, "FO_XATTR"):
                self.send_xattrs(sp.fname, file_index)
            return file_index
        finally:
            self.writer.plugin_name(file_index, None)

    def send_data(self, sp, flags, file_index, sparse):
        """Open, read and close through the plugin, or read the plugin's fd in the
        core (do_io_in_core).  Returns False if the file could not be opened."""
        core = self.core
        open_flags = os.O_RDONLY | (getattr(os, "O_NOATIME", 0)
                                    if C.bit_is_set(flags, "FO_NOATIME") else 0)
        error, in_core_fd = core.plugin_open(sp.fname, open_flags, 0)
        if error:
            core.job_message(C.M["M_NOTSAVED"], '     Cannot open "%s": ERR=%s.'
                             % (sp.fname, error))
            return False
        count = core.version.io_read_count - (C.OFFSET_HEADER if sparse else 0)
        size = sp.statp.size & native.MASK64
        file_addr = 0
        while True:
            if in_core_fd is not None:
                try:
                    data = _read_fd(in_core_fd, self.read_buffer, count)
                except OSError as exc:
                    core.job_message(C.M["M_ERROR"], "Read error on file %s. ERR=%s"
                                     % (sp.fname, exc.strerror))
                    break
            else:
                read = native.IoPkt(C.IO["IO_READ"], count=count, buf=self.read_buffer)
                self.plugin.plugin_io(read)
                if read.status < 0:
                    core.job_message(C.M["M_ERROR"], "Read error on file %s. ERR=%s"
                                     % (sp.fname, os.strerror(read.io_errno)
                                        if read.io_errno else "plugin read failed"))
                    break
                data = bytes(self.read_buffer[:read.status])
            if not data:
                break
            if (C.bit_is_set(flags, "FO_SPARSE") and len(data) == count
                    and file_addr + len(data) < size and not bytes(data).strip(b"\0")):
                file_addr += len(data)  # a hole: not stored, restored by IO_SEEK
                continue
            if sparse:
                self.send(C.STREAM_SPARSE_DATA, file_index, volume.encode_sparse(file_addr, data))
            else:
                self.send(C.STREAM_FILE_DATA, file_index, data)
            file_addr += len(data)
        self.plugin.plugin_io(native.IoPkt(C.IO["IO_CLOSE"]))
        return True

    def send(self, stream, file_index, payload):
        """A data, ACL or XATTR record to the SD: "FD Bytes Written" counts all of
        it, the offset headers of sparse data included (§13)."""
        self.writer.write(stream, file_index, payload)
        self.core.bytes += len(payload)

    def failed(self, what):
        """A failed get_acl/get_xattr (missing entry points included): the FD logs
        an empty error line per call and the total at the end (§13)."""
        self.errors[what] += 1
        self.core.job_message(C.M["M_ERROR"], "")

    def send_acl(self, fname, file_index):
        rc, content = self.plugin.get_acl(fname)
        if rc != OK:
            self.failed("acl")
            return
        if content:
            # The FD stores content_length + 1 bytes: a trailing NUL (§3.5).
            self.send(C.STREAM_ACL_PLUGIN, file_index, content + b"\0")

    def send_xattrs(self, fname, file_index):
        pairs = []
        while True:
            rc, pair = self.plugin.get_xattr(fname)
            if rc not in (OK, MORE):
                self.failed("xattr")
                return
            if pair is not None:
                pairs.append(pair)
            if rc == OK:
                break
        if pairs:
            self.send(C.STREAM_XATTR_PLUGIN, file_index, volume.encode_xattrs(pairs))

    def report_acl_xattr_errors(self):
        for what in ("acl", "xattr"):
            if self.errors[what]:
                self.core.job_message(C.M["M_WARNING"], "Encountered %d %s errors while doing "
                                      "backup" % (self.errors[what], what))

    def save_object(self, sp):
        core = self.core
        if core.canceled:
            return
        if not sp.object_name:
            core.job_message(C.M["M_FATAL"], 'Command plugin "%s": no object_name in '
                             'startBackupFile packet.' % sp.cmd)
            return
        core.files += 1
        self.writer.write(C.STREAM_RESTORE_OBJECT, core.files, volume.encode_attributes({
            "object_name": sp.object_name, "object": sp.object.hex(),
            "object_len": sp.object_len, "object_index": sp.object_index,
            "object_type": sp.type, "plugin_name": sp.cmd,
        }))

    def deleted_pass(self):
        """Accurate Incremental/Differential: every catalog entry not seen goes to
        check_file; unless it answers bRC_Seen an FT_DELETED record is written with
        the catalog's mtime/ctime (§5, §13)."""
        core = self.core
        for path in sorted(core.accurate):
            if core.canceled:
                return
            if path in core.seen:
                continue
            if self.plugin.check_file(path) == C.BRC["bRC_Seen"]:
                continue
            entry = core.accurate[path]
            core.files += 1
            self.writer.plugin_name(core.files, entry["cmd"])
            self.writer.write(C.STREAM_UNIX_ATTRIBUTES, core.files, volume.encode_attributes({
                "type": FT["FT_DELETED"], "fname": path, "link": path, "link_fi": 0,
                "stat": native.Stat(mtime=entry["mtime"], ctime=entry["ctime"]).as_dict(),
                "delta_seq": 0, "data_stream": 0,
            }))
            self.writer.plugin_name(core.files, None)


def _read_fd(fd, buffer, count):
    """The core's read(2) loop on the plugin's fd into its one buffer, as the FD
    reads into its own: a view of up to ``count`` bytes of it, empty at EOF.
    (A new bytes object per read would make the run time depend on when glibc
    moves its mmap threshold, that is on what the process allocated before.)"""
    view = memoryview(buffer)
    filled = 0
    while filled < count:
        got = os.readv(fd, [view[filled:count]])
        if not got:
            break
        filled += got
    return view[:filled]
