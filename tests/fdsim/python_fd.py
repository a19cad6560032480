"""The C layer of ``python3-fd.so`` for one job (contract §1 "Plugin selection",
§2, §2.1, §3.5): plugin-definition parsing and option merging, module loading,
calling the entry points with the FD's error semantics, and the conversion of
packets between the core's native structs and the Python packet types (the
"copy-back" rules).

The simulated core (:mod:`fdsim.core`) calls the methods named like the C plugin
functions (``handle_event``, ``start_backup_file``, ``plugin_io`` ...), passing
native structs from :mod:`fdsim.native`.
"""
import os
import sys
import threading
import traceback

from . import constants as C
from . import native
from . import standin
from . import structmember as sm

OK, ERROR, SEEN = (C.BRC[n] for n in ("bRC_OK", "bRC_Error", "bRC_Seen"))
UNDEFINED = C.PYTHON_UNDEFINED_RETURN_VALUE
PLUGIN_NAME = "python3"
#: python3-fd's own debug messages (Dmsg at level 150, prefix "python3-fd: ").
DEBUG_LEVEL = 150
LOGPREFIX = "python3-fd: "
#: What python3-fd puts before the texts of bareosfd.JobMessage and DebugMessage
#: (and of its own messages about the module).
MODULE_PREFIX = "python3-fd-mod: "

_SIMULATED_C_FILES = {os.path.abspath(f) for f in (
    __file__, standin.__file__, sm.__file__, native.__file__)}
sm.register_simulated_c(__file__)

# Fresh imports in a shared interpreter must not interleave (fresh-import mode).
_import_lock = threading.RLock()


class FdCrash(BaseException):
    """The real FD would crash here (segfault / abort); the job ends Fatal and the
    FD process counts as wedged (contract §7, §12.3).  A BaseException, so that
    plugin code cannot catch it with ``except Exception``."""


def plugin_name_matches(name):
    """Since 20.0 a name equal to a loaded plugin's name minus its last character
    also matches: ``python:`` reaches python3-fd (python-fd assumed not loaded, §1)."""
    return name in (PLUGIN_NAME, PLUGIN_NAME[:-1])


def command_plugin_name(cmd):
    """The FD's plugin name of a ``Plugin=`` string: text before the first ``:``."""
    return cmd.split(":", 1)[0]


def _strip_backslashes(text):
    out = []
    escaped = False
    for ch in text:
        if ch == "\\" and not escaped:
            escaped = True
            continue
        out.append(ch)
        escaped = False
    return "".join(out)


def _format_exception(exc):
    """Traceback text as PyErrorHandler builds it, without the simulator's frames."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) not in _SIMULATED_C_FILES:
            frames.append(tb)
        tb = tb.tb_next
    lines = ["Traceback (most recent call last):\n"]
    for tb in frames:
        lines.extend(traceback.format_list(traceback.extract_tb(tb, limit=1)))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    text = "".join(lines)
    cause = exc.__cause__
    if cause is not None:
        text = ("".join(traceback.format_exception_only(type(cause), cause))
                + "\nThe above exception was the direct cause of the following exception:\n\n"
                + text)
    return text


class PythonFdPlugin(object):
    """One python3-fd plugin instance (``newPlugin`` .. ``freePlugin``) of one job."""

    def __init__(self, core):
        self.core = core
        self.version = core.version
        self.python_loaded = False
        self.python_path_set = False
        self.module = None
        self.module_path = None
        self.module_name = None
        self.plugin_options = None  # the saved NewPluginOptions string
        self.events = set(C.C_REGISTERED_EVENTS)  # core-side event mask of this instance
        self.python_events = set()                # registered from Python (§2.2)
        self.pending_exception = None
        self.previous_fname = None                # PySavePacketToNative's saved fname
        self.crash_at_job_end = None
        self.event_since = 0                      # the value of bEventSince
        self.since = 0                            # C-private since (bEventSince / SetValue)
        self.backup_level = None                  # C-private level (bEventLevel)
        self.check_changes = True                 # SetValue(bVarCheckChanges)

    # --- entry-point calls -----------------------------------------------------

    def _lookup(self, name):
        function = self.module.__dict__.get(name) if self.module is not None else None
        if function is None or not callable(function):
            self.core.dmsg(DEBUG_LEVEL, MODULE_PREFIX + "Failed to find function named %s()"
                           % name)
            return None
        return function

    def call(self, name, *args, **options):
        """Call entry point ``name``: missing -> bRC_Error, exception -> M_FATAL
        traceback and bRC_Error, non-int return -> -1 with the TypeError left
        pending for the next callback (§2).  Returns ``(rc, raised)``."""
        trace = options.get("trace", name)
        function = self._lookup(name)
        if function is None:
            self.core.trace(trace, ERROR, missing=True)
            return ERROR, None
        try:
            with _PendingException(self):
                result = function(*args)
            rc = self._retval(result)
        except FdCrash:
            raise
        except BaseException as exc:  # the FD logs every Python exception, SystemExit too
            self.core.job_message(C.M["M_FATAL"], "bareosfd: " + _format_exception(exc))
            self.core.trace(trace, ERROR, exception=type(exc).__name__)
            return ERROR, exc
        self.core.trace(trace, rc)
        return rc, None

    def _retval(self, result):
        """``PyLong_AsLong`` of the return value (ConvertPythonRetvalTobRCRetval)."""
        try:
            if isinstance(result, int):
                value = int(result)
                if not -2 ** 63 <= value < 2 ** 63:
                    raise OverflowError("Python int too large to convert to C long")
                return value
            return sm.as_long(result)
        except (TypeError, OverflowError) as exc:
            self.pending_exception = exc
            return UNDEFINED

    # --- plugin definitions and loading (§1, §2.3, §2.5) --------------------------

    def parse_definition(self, value):
        """The C ``parse_plugin_definition``: consume module_path/module_name and
        re-join every other ``k=v`` as ``"k1=v1:k2=v2:"``.  Returns (rc, options)."""
        if value is None:
            return ERROR, ""
        if value == "*all*":
            self.core.dmsg(DEBUG_LEVEL, LOGPREFIX + "Got plugin definition %s, skipping to "
                           "ignore" % value)
            return C.BRC["bRC_Skip"], ""
        keep_existing = self.plugin_options is not None
        if not self.python_loaded and self.plugin_options is not None:
            # Saved NewPluginOptions are prepended to a definition that arrives
            # before the module could be loaded (restore, §2.5 step 5a).
            if ":" not in value:
                return self._illegal_definition(value)
            rest = value[value.index(":"):]
            definition = self.plugin_options + (rest[1:] if self.plugin_options.endswith(":")
                                                 else rest)
        else:
            definition = value
        if ":" not in definition:
            return self._illegal_definition(definition)
        arguments = _split_arguments(definition[definition.index(":") + 1:])
        passed = []
        for argument in arguments:
            if "=" not in argument:
                self.core.job_message(C.M["M_FATAL"], LOGPREFIX + "Illegal argument %s without "
                                      "value" % argument)
                return ERROR, ""
            key, val = argument.split("=", 1)
            attribute = {"module_path": "module_path",
                         "module_name": "module_name"}.get(key.lower())
            if attribute is None:
                passed.append("%s=%s" % (key, val))
            elif not keep_existing or getattr(self, attribute) is None:
                setattr(self, attribute, _strip_backslashes(val))
        return OK, "".join(p + ":" for p in passed)

    def _illegal_definition(self, text):
        self.core.job_message(C.M["M_FATAL"], LOGPREFIX + "Illegal plugin definition %s" % text)
        return ERROR, ""

    def load_module(self, options):
        """``PyLoadModule``: extend sys.path, import ``module_name`` and call
        ``load_bareos_plugin(options)``."""
        if not self.python_path_set and self.module_path:
            self.core.interpreter.add_module_path(self.module_path)
            self.python_path_set = True
        if not self.module_name:
            return ERROR  # nothing to load yet: fails silently (§2.5 step 2)
        self.core.dmsg(DEBUG_LEVEL, LOGPREFIX + "Trying to load module with name %s"
                       % self.module_name)
        try:
            with _import_lock:
                self.module = self.core.interpreter.import_plugin(self.module_name,
                                                                  self.module_path)
        except FdCrash:
            raise
        except BaseException as exc:
            self.core.dmsg(DEBUG_LEVEL, LOGPREFIX + "Failed to load module with name %s"
                           % self.module_name)
            self.core.job_message(C.M["M_FATAL"], "bareosfd: " + _format_exception(exc))
            return ERROR
        self.core.dmsg(DEBUG_LEVEL, LOGPREFIX + "Successfully loaded module with name %s"
                       % self.module_name)
        function = self._lookup("load_bareos_plugin")
        if function is None:
            self.core.trace("load_bareos_plugin", ERROR, missing=True)
            return ERROR
        rc, raised = self.call("load_bareos_plugin", options,
                               trace="load_bareos_plugin(%r)" % options)
        if raised is not None:
            return ERROR  # an exception leaves the module "not loaded" (retried later)
        self.python_loaded = True  # set even for a non-OK return (§2 table)
        return rc

    def handle_event(self, event, value=None):
        """``handlePluginEvent`` of python3-fd for one event the core delivers."""
        name = C.EVENT_NAMES[event]
        if event not in self.events:  # not in this instance's event mask
            self.core.event_log(name, False)
            return OK
        rc = ERROR
        dispatched = False
        options = ""
        if event == C.EVENTS["bEventLevel"]:
            self.backup_level = value
        elif event == C.EVENTS["bEventSince"]:
            self.since = self.event_since = value
        elif event in (C.EVENTS["bEventBackupCommand"], C.EVENTS["bEventRestoreCommand"],
                       C.EVENTS["bEventEstimateCommand"], C.EVENTS["bEventPluginCommand"]):
            dispatched = True
            rc, options = self.parse_definition(value)
        elif event == C.EVENTS["bEventNewPluginOptions"]:
            self.plugin_options = None
            dispatched = True
            rc, options = self.parse_definition(value)
            self.plugin_options = value  # each NewPluginOptions replaces the saved string
        elif event == C.EVENTS["bEventRestoreObject"]:
            if not self.python_loaded and value is not None and value.plugin_name:
                dispatched = True
                rc, options = self.parse_definition(value.plugin_name)
        if dispatched and rc != OK:
            self.core.event_log(name, False)
            return rc
        if event in C.COMMAND_EVENTS:
            if not self.python_loaded:
                rc = self.load_module(options)
            if rc == OK:
                rc, _ = self.call("parse_plugin_definition", options,
                                  trace="parse_plugin_definition(%r)" % options)
            self.core.event_log(name, self.python_loaded)
            return rc
        if event == C.EVENTS["bEventRestoreObject"]:
            if value is None:
                return OK  # the final NULL object is not passed to Python
            if not self.python_loaded and value.plugin_name:
                rc = self.load_module(options)
                if rc == OK:
                    rc, _ = self.call("parse_plugin_definition", options,
                                      trace="parse_plugin_definition(%r)" % options)
                if rc != OK:
                    return rc
            rc = self.restore_object_data(value)
            self.core.event_log(name, self.python_loaded)
            return rc
        delivered = self.python_loaded and event in self.python_events
        self.core.event_log(name, delivered)
        if not self.python_loaded:
            return OK  # "pretend the call succeeded" until the module is loaded
        if event not in self.python_events:
            return OK
        rc, _ = self.call("handle_plugin_event", event, trace="handle_plugin_event(%d)" % event)
        return rc

    def register_events(self, events, register):
        """RegisterEvents/UnRegisterEvents: values outside 1..31 are ignored (§3.1)."""
        valid = [e for e in events if 1 <= e <= 31]
        for event in valid:
            if register:
                self.python_events.add(event)
                self.events.add(event)
            else:
                self.python_events.discard(event)
        return OK if valid else ERROR

    # --- backup ------------------------------------------------------------------

    def start_backup_file(self, sp):
        """Call start_backup_file; copy the packet back only for bRC_OK (§2.1) and
        run the automatic I/D change check (§5).  ``sp`` is a native.SavePkt."""
        pkt = self.core.types["SavePacket"]()
        sm.c_set(pkt, "fname", "")
        sm.c_set(pkt, "link", "")
        sm.c_set(pkt, "statp", sm.NULL)
        sm.c_set(pkt, "type", 0)
        sm.c_set(pkt, "flags", bytearray(sp.flags))
        sm.c_set(pkt, "no_read", False)
        sm.c_set(pkt, "portable", True)
        sm.c_set(pkt, "accurate_found", False)
        sm.c_set(pkt, "cmd", sp.cmd.encode("utf-8"))
        rc, raised = self.call("start_backup_file", pkt)
        if raised is not None or rc != OK:
            return rc
        try:
            self._save_packet_to_native(pkt, sp)
        except Exception as exc:
            self.core.job_message(C.M["M_FATAL"], "bareosfd: " + _format_exception(exc))
            return ERROR
        if (self.backup_level in ("I", "D") and self.check_changes
                and sp.type not in C.FT_OBJECTS):
            if sp.save_time == 0 and self.since:
                sp.save_time = self.since
            if self.core.check_changes(sp) == SEEN:
                sp.type = (C.FT["FT_DIRNOCHG"] if sp.type == C.FT["FT_DIRBEGIN"]
                           else C.FT["FT_NOCHG"])
        return rc

    def _save_packet_to_native(self, pkt, sp):
        """PySavePacketToNative (§2.1, §7.1, §12.3)."""
        fname = sm.c_get(pkt, "fname")
        if isinstance(fname, str):
            try:
                encoded = fname.encode("utf-8")
            except UnicodeEncodeError:
                if self.version.fname_utf8_crash:
                    raise FdCrash("strdup(NULL) on a fname that is not UTF-8 (%r): the "
                                  "20.0 FD segfaults" % fname)
                if self.previous_fname is not None:
                    # The old fname was freed before the failed conversion and is
                    # freed again at job end (§12.3).
                    self.crash_at_job_end = ("double free of the previous fname after a "
                                             "failed UTF-8 conversion of %r" % fname)
                raise
            self.previous_fname = encoded
            sp.fname = fname
        elif self.version.non_str_fname_ignored:
            sp.fname = None  # core: "no fname in startBackupFile packet"
        else:
            raise TypeError("fname needs to be of type string")
        link = sm.c_get(pkt, "link")
        if link is not sm.NULL:
            if isinstance(link, str):
                try:
                    link.encode("utf-8")
                except UnicodeEncodeError:
                    raise FdCrash("strdup(NULL) on a link that is not UTF-8 (%r): the FD "
                                  "segfaults (unchecked in every version)" % link)
                sp.link = link
            elif not self.version.non_str_fname_ignored:
                raise TypeError("link needs to be of type string")
        statp = sm.c_get(pkt, "statp")
        if statp is sm.NULL:
            raise RuntimeError("PyStatPacketToNative() failed")
        if type(statp) is not self.core.types["StatPacket"]:
            raise FdCrash("statp is a %s, not a StatPacket: the C code casts it blindly "
                          "(undefined behaviour, §2.1)" % type(statp).__name__)
        sp.statp = native.stat_from_packet(statp, self.version)
        sp.type = sm.c_get(pkt, "type")
        flags = sm.c_get(pkt, "flags")
        if not isinstance(flags, bytearray):
            raise TypeError("flags need to be of type bytearray")
        if len(flags) != C.FLAGS_BYTES:
            raise RuntimeError("flags need to be a bytearray of %d bytes" % C.FLAGS_BYTES)
        sp.flags = bytearray(flags)
        if sp.type in C.FT_OBJECTS:
            object_len = sm.c_get(pkt, "object_len")
            object_name = sm.c_get(pkt, "object_name")
            data = sm.c_get(pkt, "object")
            if object_len <= 0:
                raise RuntimeError("object_len needs to be > 0")
            if not isinstance(object_name, str):
                raise TypeError("object_name needs to be of type string")
            if not isinstance(data, bytearray) or len(data) < object_len:
                raise TypeError("object needs to be a bytearray of at least object_len bytes")
            sp.object_name = object_name
            sp.object = bytes(data[:object_len])
            sp.object_len = object_len
            sp.object_index = sm.c_get(pkt, "object_index")
        else:
            sp.no_read = sm.c_get(pkt, "no_read")
            sp.delta_seq = sm.c_get(pkt, "delta_seq")
            if self.version.since_api:
                sp.save_time = sm.c_get(pkt, "save_time")

    def end_backup_file(self):
        rc, _ = self.call("end_backup_file")
        return rc

    def check_file(self, fname):
        if not self.python_loaded:
            return OK
        rc, _ = self.call("check_file", fname, trace="check_file(%r)" % fname)
        return rc

    def _named_packet(self, type_name, fname):
        """An Acl/XattrPacket for ``fname`` (the core's char*, T_STRING)."""
        pkt = self.core.types[type_name]()
        sm.c_set(pkt, "fname", fname.encode("utf-8"))
        return pkt

    def get_acl(self, fname):
        """Returns (rc, content bytes or None)."""
        pkt = self._named_packet("AclPacket", fname)
        rc, raised = self.call("get_acl", pkt)
        if raised is not None:
            return ERROR, None
        content = sm.c_get(pkt, "content")
        if isinstance(content, bytearray):
            if not content:
                return rc, None  # PyAclPacketToNative fails: nothing stored
            return rc, bytes(content)
        return rc, None

    def get_xattr(self, fname):
        """One get_xattr call: returns (rc, (name, value) or None)."""
        pkt = self._named_packet("XattrPacket", fname)
        rc, raised = self.call("get_xattr", pkt)
        if raised is not None:
            return ERROR, None
        name = sm.c_get(pkt, "name")
        value = sm.c_get(pkt, "value")
        if not isinstance(name, bytearray) or not name:
            return rc, None
        return rc, (bytes(name), bytes(value) if isinstance(value, bytearray) else b"")

    # --- I/O -----------------------------------------------------------------------

    def plugin_io(self, io):
        """pluginIO for a native.IoPkt; results land in ``io`` (§3.5, §4)."""
        if not self.python_loaded:
            io.status = -1
            return ERROR
        pkt = self.core.types["IoPacket"]()
        for name in ("func", "count", "flags", "mode", "whence", "offset"):
            sm.c_set(pkt, name, getattr(io, name))
        sm.c_set(pkt, "fname", io.fname.encode("utf-8") if io.func == C.IO["IO_OPEN"] else None)
        sm.c_set(pkt, "buf", bytearray(io.buf[:io.count])
                 if io.func == C.IO["IO_WRITE"] and io.count > 0 else sm.NULL)
        if self.version.do_io_in_core:
            sm.c_set(pkt, "filedes", io.filedes)
        rc, raised = self.call("plugin_io", pkt, trace="plugin_io(%s)" % C.IO_NAMES[io.func])
        if raised is not None:
            io.status = -1
            return rc
        io.io_errno = sm.c_get(pkt, "io_errno")
        io.lerror = sm.c_get(pkt, "lerror")
        io.win32 = sm.c_get(pkt, "win32")
        io.status = sm.c_get(pkt, "status")
        if self.version.do_io_in_core:
            io.filedes = sm.c_get(pkt, "filedes")
        if io.func == C.IO["IO_READ"] and io.status > 0:
            buf = sm.c_get(pkt, "buf")
            if isinstance(buf, bytearray) or (isinstance(buf, bytes)
                                               and self.version.io_read_accepts_bytes):
                if len(buf) > io.count or io.status > io.count:
                    io.status = -1  # PyIoPacketToNative rejects it
                    return rc
                io.buf[:io.status] = buf[:io.status]
            # else: not copied, the core sends whatever its buffer holds (§1, 23.0.1)
        return rc

    # --- restore -------------------------------------------------------------------

    def start_restore_file(self, cmd):
        rc, _ = self.call("start_restore_file", cmd)
        return rc

    def end_restore_file(self):
        rc, _ = self.call("end_restore_file")
        return rc

    def _restore_packet(self, rp):
        pkt = self.core.types["RestorePacket"]()
        for name in ("stream", "data_stream", "type", "file_index", "linkFI", "uid",
                     "replace"):
            sm.c_set(pkt, name, getattr(rp, name))
        sm.c_set(pkt, "statp", native.stat_to_packet(rp.statp, self.core.types["StatPacket"]))
        for name in ("attrEX", "ofname", "olname", "where"):
            value = getattr(rp, name)
            sm.c_set(pkt, name, value.encode("utf-8") if isinstance(value, str) else value)
        sm.c_set(pkt, "regexwhere", None)  # the FD never fills it (§3.2, §3.5)
        sm.c_set(pkt, "create_status", C.CF["CF_ERROR"])
        if self.version.do_io_in_core:
            sm.c_set(pkt, "filedes", -1)
        if self.version.master_snapshot:
            sm.c_set(pkt, "original_file_name", rp.original_file_name.encode("utf-8"))
            sm.c_set(pkt, "original_link_name", rp.original_link_name.encode("utf-8")
                     if rp.original_link_name is not None else None)
        return pkt

    def create_file(self, rp):
        """Returns rc; copies back only create_status and filedes (§3.5)."""
        pkt = self._restore_packet(rp)
        rc, raised = self.call("create_file", pkt)
        if raised is None:
            rp.create_status = sm.c_get(pkt, "create_status")
            if self.version.do_io_in_core:
                rp.filedes = sm.c_get(pkt, "filedes")
        return rc

    def set_file_attributes(self, rp):
        """Return value ignored; nothing is copied back (§6)."""
        self.call("set_file_attributes", self._restore_packet(rp))

    def set_acl(self, fname, content):
        pkt = self._named_packet("AclPacket", fname)
        sm.c_set(pkt, "content", bytearray(content) if content else sm.NULL)
        rc, _ = self.call("set_acl", pkt)
        return rc

    def set_xattr(self, fname, name, value):
        pkt = self._named_packet("XattrPacket", fname)
        sm.c_set(pkt, "name", bytearray(name) if name else sm.NULL)
        sm.c_set(pkt, "value", bytearray(value) if value else sm.NULL)
        rc, _ = self.call("set_xattr", pkt)
        return rc

    def restore_object_data(self, rop):
        pkt = self.core.types["RestoreObject"]()
        sm.c_set(pkt, "object_name", rop.object_name)
        sm.c_set(pkt, "object", bytearray(rop.object))
        sm.c_set(pkt, "plugin_name", rop.plugin_name.encode("utf-8"))
        for name in ("object_type", "object_len", "object_full_len", "object_index",
                     "object_compression", "stream", "jobid"):
            sm.c_set(pkt, name, getattr(rop, name))
        rc, _ = self.call("restore_object_data", pkt)
        return rc


def _split_arguments(text):
    """Split at every ``:`` not preceded by a backslash; ``\\:`` stays in the value."""
    arguments = []
    current = []
    previous = ""
    for ch in text:
        if ch == ":" and previous != "\\":
            arguments.append("".join(current))
            current = []
        else:
            current.append(ch)
        previous = ch
    if current:
        arguments.append("".join(current))
    return [a for a in arguments if a]


class _PendingException(object):
    """A non-int return left a TypeError pending in the interpreter: the next
    callback fails at its first C-level call with SystemError (§2, verified)."""

    def __init__(self, plugin):
        self.plugin = plugin
        self.previous = None

    def __enter__(self):
        if self.plugin.pending_exception is not None:
            self.previous = sys.getprofile()
            sys.setprofile(self._profile)
        return self

    def _profile(self, frame, event, arg):
        if event == "c_call":
            if _is_simulator_frame(frame):
                return
            name = getattr(arg, "__name__", "?")
        elif event == "call" and frame.f_code in standin.C_FUNCTION_CODES:
            name = frame.f_code.co_name
        else:
            return
        pending = self.plugin.pending_exception
        self.plugin.pending_exception = None
        sys.setprofile(self.previous)
        raise SystemError("<built-in function %s> returned a result with an exception set"
                          % name) from pending

    def __exit__(self, *exc_info):
        if sys.getprofile() == self._profile:
            sys.setprofile(self.previous)
        return False


def _is_simulator_frame(frame):
    return os.path.abspath(frame.f_code.co_filename) in _SIMULATED_C_FILES
