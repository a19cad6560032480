"""The ``bareosfd`` stand-in: constants, the seven packet types and the module
functions, as contract §3 describes them for one Bareos version.

:func:`build_module` makes the module object one job's plugin imports as
``bareosfd``.  Its functions talk to that job's simulated core (the ``context``
argument, see :class:`fdsim.core.PluginCore`) and, like the real module with its
thread-local ``plugin_ctx``, refuse to work on a thread that is not running the
job.  In a shared interpreter (no sub-interpreters), :class:`SharedBareosfd` is
installed in ``sys.modules`` instead and forwards every attribute to the module
of the job the current thread runs.
"""
import sys
import threading
import time
import types

from . import constants as C
from . import structmember as sm

PY = sys.version_info[:2]

# The thread-local "plugin_ctx" of the C module (21+): which job's core the
# current thread serves.
_current = threading.local()


def activate(context):
    """Bind the calling thread to ``context`` (the job's core); None unbinds."""
    _current.context = context


def current_context():
    return getattr(_current, "context", None)


class _Capsule(object):
    """Placeholder for the module's ``_C_API`` capsule (§3.3); a real capsule
    needs ctypes, which must stay out of the FD process (§12.1)."""
    __slots__ = ()

    def __repr__(self):
        return '<capsule object "bareosfd._C_API" at 0x%x>' % id(self)


# --- PyArg_ParseTuple units ---------------------------------------------------

def _float_error():
    if PY >= (3, 10):
        return TypeError("'float' object cannot be interpreted as an integer")
    return TypeError("integer argument expected, got float")


def _unit_int(value, bits, masked):
    """Format units ``i`` (range-checked C int) and ``I``/``H`` (masked):
    floats are rejected in every version (contract §3.5)."""
    if isinstance(value, float):
        raise _float_error()
    if isinstance(value, int):
        number = int(value)
    elif PY >= (3, 10) or hasattr(type(value), "__index__"):
        import operator
        number = operator.index(value)
    elif hasattr(type(value), "__int__"):
        number = int(value)
    else:
        raise TypeError("an integer is required (got type %s)" % type(value).__name__)
    if masked:
        return number & ((1 << bits) - 1)
    if not -2 ** 63 <= number < 2 ** 63:
        raise OverflowError("Python int too large to convert to C long")
    if number > 2 ** 31 - 1:
        raise OverflowError("signed integer is greater than maximum")
    if number < -2 ** 31:
        raise OverflowError("signed integer is less than minimum")
    return number


def _unit_K(value, position):
    """Format unit ``K``: int only, masked to 64 bits."""
    if not isinstance(value, int):
        raise TypeError("argument %d must be int, not %s" % (position, type(value).__name__))
    return int(value) & (2 ** 64 - 1)


def _unit_signed64(value, overflow_text):
    """Format units ``L`` and ``l``: range-checked, floats rejected."""
    if isinstance(value, float):
        raise _float_error()
    number = sm.as_long(value) if not isinstance(value, int) else int(value)
    if not -2 ** 63 <= number < 2 ** 63:
        raise OverflowError(overflow_text)
    return number


def _unit_z(value, position):
    """Format unit ``z``: str or None, encoded strictly as UTF-8."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("argument %d must be str or None, not %s"
                        % (position, type(value).__name__))
    return value.encode("utf-8")  # surrogates -> UnicodeEncodeError (verified, §3.1)


def _bind_arguments(function, names, args, kwargs):
    """Positional-or-keyword binding as PyArg_ParseTupleAndKeywords does it."""
    if len(args) > len(names):
        raise TypeError("%s takes at most %d arguments (%d given)"
                        % (function, len(names), len(args)))
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TypeError("'%s' is an invalid keyword argument for %s" % (key, function))
        if key in bound:
            raise TypeError("argument for %s given by name ('%s') and position (%d)"
                            % (function, key, names.index(key) + 1))
        bound[key] = value
    return bound


# --- packet types ---------------------------------------------------------------

STAT_FIELDS = ("dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size",
               "atime", "mtime", "ctime", "blksize", "blocks")


def _stat_type(version):
    time_kind = sm.Long if version.stat_times_signed else sm.UInt
    kinds = {"dev": sm.UInt, "ino": sm.ULongLong, "mode": sm.UShort, "nlink": sm.UShort,
             "uid": sm.UInt, "gid": sm.UInt, "rdev": sm.UInt, "size": sm.ULongLong,
             "atime": time_kind, "mtime": time_kind, "ctime": time_kind,
             "blksize": sm.UInt, "blocks": sm.ULongLong}
    defaults = {"mode": 0o100700, "size": 2 ** 64 - 1, "blksize": 4096, "blocks": 1}
    members = [("st_" + f, kinds[f], defaults.get(f, 0)) for f in STAT_FIELDS]

    # Constructor format 20-24 "I K H H I I I L I I I I K", 25+ "... l l l ..." (§3.5).
    def convert(field, value, position):
        if field in ("ino", "blocks"):
            return _unit_K(value, position)
        if field == "size":
            return _unit_signed64(value, "int too big to convert") & (2 ** 64 - 1)
        if field in ("atime", "mtime", "ctime") and version.stat_times_signed:
            return _unit_signed64(value, "Python int too large to convert to C long")
        return _unit_int(value, 16 if field in ("mode", "nlink") else 32, masked=True)

    def init(self, *args, **kwargs):
        bound = _bind_arguments("this function", STAT_FIELDS, args, kwargs)
        now = int(time.time())
        for field in ("atime", "mtime", "ctime"):
            sm.c_set(self, "st_" + field, now)
        for position, field in enumerate(STAT_FIELDS, 1):
            if field in bound:
                sm.c_set(self, "st_" + field, convert(field, bound[field], position))

    def __repr__(self):
        c = {f: sm.c_get(self, "st_" + f) for f in STAT_FIELDS}
        return ("StatPacket(dev=%d, ino=%d, mode=%04o, nlink=%d, uid=%d, gid=%d, rdev=%d, "
                "size=%d, atime=%d, mtime=%d, ctime=%d, blksize=%d, blocks=%d)"
                % (c["dev"], c["ino"], c["mode"] & 0o7777, c["nlink"], c["uid"], c["gid"],
                   c["rdev"], sm.signed(c["size"], 64), c["atime"], c["mtime"], c["ctime"],
                   c["blksize"], sm.signed(c["blocks"], 64)))

    return sm.make_type("stat_pkt", "StatPacket", members, init, __repr__)


def _kwarg_init(function, spec):
    """Constructor for the packet types whose C format string the contract does not
    give: keywords are applied as member assignments, T_STRING keywords take a str
    (stored as UTF-8) and T_BOOL keywords a truth value."""
    names = [name for name, _ in spec]
    kinds = dict(spec)

    def init(self, *args, **kwargs):
        for name, value in _bind_arguments(function, names, args, kwargs).items():
            if kinds[name] == "str":
                sm.c_set(self, name, _unit_z(value, names.index(name) + 1))
            elif kinds[name] == "bool":
                sm.c_set(self, name, bool(value))
            else:
                setattr(self, name, value)
    return init


def _repr_of(exported, fields):
    def render(self, name):
        value = getattr(self, name) if not isinstance(
            getattr(type(self), name), sm.String) else sm.c_get(self, name)
        if value is None or value is sm.NULL:
            return '"<NULL>"'
        if isinstance(value, bytes):
            return '"%s"' % value.decode("utf-8", "backslashreplace")
        if isinstance(value, str):
            return '"%s"' % value
        if isinstance(value, bool):
            return str(int(value))
        return repr(value)

    def __repr__(self):
        return "%s(%s)" % (exported, ", ".join("%s=%s" % (f, render(self, f)) for f in fields))
    return __repr__


def _save_type(version):
    members = [("fname", sm.Object, sm.NULL), ("link", sm.Object, sm.NULL),
               ("statp", sm.Object, sm.NULL), ("type", sm.Int, 0),
               ("flags", sm.Object, sm.NULL), ("no_read", sm.Bool, False),
               ("portable", sm.Bool, False), ("accurate_found", sm.Bool, False),
               ("cmd", sm.String, None), ("save_time", sm.UInt, 0), ("delta_seq", sm.UInt, 0),
               ("object_name", sm.Object, sm.NULL), ("object", sm.Object, sm.NULL),
               ("object_len", sm.Int, 0), ("object_index", sm.Int, 0)]
    spec = [("fname", "obj"), ("link", "obj"), ("type", "obj"), ("flags", "obj"),
            ("no_read", "bool"), ("portable", "bool"), ("accurate_found", "bool"),
            ("cmd", "str"), ("save_time", "obj"), ("delta_seq", "obj"),
            ("object_name", "obj"), ("object", "obj"), ("object_len", "obj"),
            ("object_index", "obj")]
    fields = [name for name, _ in spec]
    return sm.make_type("save_pkt", "SavePacket", members, _kwarg_init("save_pkt()", spec),
                        _repr_of("SavePacket", fields))


def _restore_type(version):
    members = [("stream", sm.Int, 0), ("data_stream", sm.Int, 0), ("type", sm.Int, 0),
               ("file_index", sm.Int, 0), ("linkFI", sm.Int, 0), ("uid", sm.UInt, 0),
               ("statp", sm.Object, sm.NULL), ("attrEX", sm.String, None),
               ("ofname", sm.String, None), ("olname", sm.String, None),
               ("where", sm.String, None), ("regexwhere", sm.String, None),
               ("replace", sm.Int, 0), ("create_status", sm.Int, 0)]
    if version.do_io_in_core:
        members.append(("filedes", sm.Int, -1))
    if version.master_snapshot:
        members += [("original_file_name", sm.String, None),
                    ("original_link_name", sm.String, None)]
    # Only the first keywords of the real format string work (§3.5).
    spec = [("stream", "obj"), ("data_stream", "obj"), ("type", "obj"),
            ("file_index", "obj"), ("linkFI", "obj"), ("uid", "obj"), ("statp", "obj")]
    fields = [name for name, _, _ in members]
    return sm.make_type("restore_pkt", "RestorePacket", members,
                        _kwarg_init("restore_pkt()", spec), _repr_of("RestorePacket", fields))


def _io_type(version):
    members = [("func", sm.UShort, 0), ("count", sm.Int, 0), ("flags", sm.Int, 0),
               ("mode", sm.Int, 0), ("buf", sm.Object, sm.NULL), ("fname", sm.String, None),
               ("status", sm.Int, 0), ("io_errno", sm.Int, 0), ("lerror", sm.Int, 0),
               ("whence", sm.Int, 0), ("offset", sm.LongLong, 0), ("win32", sm.Bool, False)]
    if version.do_io_in_core:
        members.append(("filedes", sm.Int, -1))
    spec = [(name, "str" if name == "fname" else "obj") for name, _, _ in members]
    fields = [name for name, _ in spec]
    return sm.make_type("io_pkt", "IoPacket", members, _kwarg_init("io_pkt()", spec),
                        _repr_of("IoPacket", fields))


def _acl_type(version):
    members = [("fname", sm.String, None), ("content", sm.Object, sm.NULL)]
    spec = [("fname", "str"), ("content", "obj")]
    return sm.make_type("acl_pkt", "AclPacket", members, _kwarg_init("acl_pkt()", spec),
                        _repr_of("AclPacket", ["fname", "content"]))


def _xattr_type(version):
    members = [("fname", sm.String, None), ("name", sm.Object, sm.NULL),
               ("value", sm.Object, sm.NULL)]
    spec = [("fname", "str"), ("name", "obj"), ("value", "obj")]
    return sm.make_type("xattr_pkt", "XattrPacket", members, _kwarg_init("xattr_pkt()", spec),
                        _repr_of("XattrPacket", ["fname", "name", "value"]))


def _restore_object_type(version):
    members = [("object_name", sm.Object, sm.NULL), ("object", sm.Object, sm.NULL),
               ("plugin_name", sm.String, None), ("object_type", sm.Int, 0),
               ("object_len", sm.Int, 0), ("object_full_len", sm.Int, 0),
               ("object_index", sm.Int, 0), ("object_compression", sm.Int, 0),
               ("stream", sm.Int, 0), ("jobid", sm.UInt, 0)]
    spec = [(name, "str" if name == "plugin_name" else "obj") for name, _, _ in members]
    fields = [name for name, _ in spec]
    return sm.make_type("restore_object", "RestoreObject", members,
                        _kwarg_init("restore_object()", spec), _repr_of("RestoreObject", fields))


PACKET_BUILDERS = (_stat_type, _save_type, _restore_type, _io_type, _acl_type, _xattr_type,
                   _restore_object_type)


def packet_types(version):
    """The seven packet classes for ``version``, by exported name."""
    return {cls._fdsim_exported_name: cls
            for cls in (build(version) for build in PACKET_BUILDERS)}


# --- constants ------------------------------------------------------------------

def exported_variables(version):
    """``bVar*`` names the module exports for ``version`` (§3.2)."""
    names = [n for n in C.VARS if n not in ("bVarCheckChanges", "bVarUsedConfig",
                                            "bVarPluginPath", "bVarAccurateOptions")]
    if version.since_api:
        names.append("bVarCheckChanges")
    if version.used_config:
        names.append("bVarUsedConfig")
    if version.master_snapshot:
        names.append("bVarAccurateOptions")
    return names


def _constants(version):
    """Module attributes and bytes-keyed dicts (§3.3): name -> value."""
    attributes = {}
    dicts = {}

    def export(dict_name, table):
        dicts[dict_name] = {name.encode(): value for name, value in table.items()}
        attributes.update(table)

    export("bRCs", C.BRC)
    export("bJobMessageType", C.M)
    export("bEventType", C.EVENTS)
    export("bFileType", C.FT)
    export("bCFs", C.CF)
    export("bIOPS", C.IO)
    if version.do_io_in_core:
        export("bIOPstatus", C.IOSTAT)
    export("bVariable", {name: C.VARS[name] for name in exported_variables(version)})
    if version.master_snapshot:
        export("bAccurateOption", C.ACCURATE_OPTIONS)
    # Levels: module attributes are str, dict values bytes (§3.3).
    dicts["bLevels"] = {name.encode(): value.encode() for name, value in C.LEVELS.items()}
    attributes.update(C.LEVELS)
    attributes.update(dicts)
    return attributes


# --- the module -------------------------------------------------------------------

FUNCTION_NAMES = ("GetValue", "SetValue", "DebugMessage", "JobMessage", "RegisterEvents",
                  "UnRegisterEvents", "GetInstanceCount", "AddExclude", "AddInclude",
                  "AddOptions", "AddRegex", "AddWild", "NewOptions", "NewInclude",
                  "NewPreInclude", "CheckChanges", "AcceptFile", "SetSeenBitmap",
                  "ClearSeenBitmap")

#: Code objects of the stand-in's "C functions": the simulated core treats a call
#: of one of them like a C-level call (pending-exception emulation, §2).
C_FUNCTION_CODES = set()


def _c_function(function):
    C_FUNCTION_CODES.add(function.__code__)
    return function


def build_module(version, context):
    """A fresh ``bareosfd`` module for ``version`` whose functions reach ``context``."""
    module = types.ModuleType("bareosfd", "bareosfd stand-in (fdsim) for Bareos %s" % version)
    module.__dict__.update(_constants(version))
    module.__dict__.update(packet_types(version))
    module._C_API = _Capsule()

    def ctx():
        if current_context() is not context:
            raise RuntimeError("bareosfd.cc: plugin_ctx is unset")
        return context

    def plain(args, kwargs, count):
        if kwargs:
            raise TypeError("function takes no keyword arguments")
        if len(args) != count:
            raise TypeError("function takes exactly %d argument%s (%d given)"
                            % (count, "" if count == 1 else "s", len(args)))

    def GetValue(*args, **kwargs):
        plain(args, kwargs, 1)
        return ctx().get_value(_unit_int(args[0], 32, masked=False))

    def SetValue(*args, **kwargs):
        plain(args, kwargs, 2)
        return ctx().set_value(_unit_int(args[0], 32, masked=False), args[1])

    def _message(args, kwargs):
        if kwargs or not 1 <= len(args) <= 2:
            raise TypeError("function takes 1 or 2 positional arguments")
        number = _unit_int(args[0], 32, masked=False)
        text = _unit_z(args[1] if len(args) > 1 else None, 2)
        return number, text

    def DebugMessage(*args, **kwargs):
        level, text = _message(args, kwargs)
        ctx().debug_message(level, text)

    def JobMessage(*args, **kwargs):
        mtype, text = _message(args, kwargs)
        ctx().plugin_job_message(mtype, text)

    def _events(args, kwargs):
        plain(args, kwargs, 1)
        return [_unit_int(event, 32, masked=False) for event in args[0]]

    def RegisterEvents(*args, **kwargs):
        events = _events(args, kwargs)
        return ctx().register_events(events, True)

    def UnRegisterEvents(*args, **kwargs):
        events = _events(args, kwargs)
        return ctx().register_events(events, False)

    def GetInstanceCount(*args, **kwargs):
        plain(args, kwargs, 0)
        return ctx().instance_count()

    def _fileset(name, count):
        def call(*args, **kwargs):
            if kwargs or len(args) > count:
                raise TypeError("%s takes at most %d arguments" % (name, count))
            return ctx().fileset_call(name, args)
        call.__name__ = name
        return call

    def CheckChanges(*args, **kwargs):
        plain(args, kwargs, 1)
        return ctx().check_changes_packet(args[0])

    def AcceptFile(*args, **kwargs):
        plain(args, kwargs, 1)
        return ctx().accept_file(args[0])

    def _bitmap(set_seen):
        def call(*args, **kwargs):
            bound = _bind_arguments("function", ("all", "fname"), args, kwargs)
            if "all" not in bound:
                raise TypeError("function missing required argument 'all' (pos 1)")
            fname = bound.get("fname")
            if fname is not None and not isinstance(fname, str):
                raise TypeError("argument 2 must be str or None, not %s"
                                % type(fname).__name__)
            return ctx().seen_bitmap(set_seen, bool(bound["all"]), fname)
        return call

    functions = {
        "GetValue": GetValue, "SetValue": SetValue, "DebugMessage": DebugMessage,
        "JobMessage": JobMessage, "RegisterEvents": RegisterEvents,
        "UnRegisterEvents": UnRegisterEvents, "GetInstanceCount": GetInstanceCount,
        "AddExclude": _fileset("AddExclude", 1), "AddInclude": _fileset("AddInclude", 1),
        "AddOptions": _fileset("AddOptions", 1), "AddRegex": _fileset("AddRegex", 2),
        "AddWild": _fileset("AddWild", 2), "NewOptions": _fileset("NewOptions", 0),
        "NewInclude": _fileset("NewInclude", 0), "NewPreInclude": _fileset("NewPreInclude", 0),
        "CheckChanges": CheckChanges, "AcceptFile": AcceptFile,
        "SetSeenBitmap": _bitmap(True), "ClearSeenBitmap": _bitmap(False),
    }
    for name, function in functions.items():
        function.__name__ = name
        function.__qualname__ = name
        function.__module__ = "bareosfd"
        _c_function(function)
        setattr(module, name, function)
    return module


# Warnings from the packet constructors point at the plugin's line too.
sm.register_simulated_c(__file__)


class SharedBareosfd(types.ModuleType):
    """``sys.modules['bareosfd']`` in a shared interpreter: every attribute comes
    from the module of the job the current thread runs.  A thread the plugin
    started itself is served when exactly one job is running (functions then still
    refuse it: ``plugin_ctx is unset``, like the thread-local C context)."""

    _local_names = frozenset(("__name__", "__doc__", "__spec__", "__loader__",
                              "__package__", "__class__", "_fdsim_jobs",
                              "_fdsim_module_for_thread", "__getattribute__", "__dir__",
                              "__repr__", "__setattr__"))

    def __init__(self):
        types.ModuleType.__init__(self, "bareosfd", "bareosfd stand-in (fdsim, shared)")
        object.__setattr__(self, "_fdsim_jobs", {})

    def _fdsim_module_for_thread(self):
        context = current_context()
        jobs = object.__getattribute__(self, "_fdsim_jobs")
        if context is not None and context in jobs:
            return jobs[context]
        if len(jobs) == 1:
            return next(iter(jobs.values()))
        raise RuntimeError("fdsim: bareosfd used from a thread that runs no job while %d "
                           "jobs share this interpreter" % len(jobs))

    def __getattribute__(self, name):
        if name in SharedBareosfd._local_names:
            return object.__getattribute__(self, name)
        module = object.__getattribute__(self, "_fdsim_module_for_thread")()
        if name == "__dict__":
            return module.__dict__
        return getattr(module, name)

    def __setattr__(self, name, value):
        setattr(self._fdsim_module_for_thread(), name, value)

    def __dir__(self):
        return dir(self._fdsim_module_for_thread())

    def __repr__(self):
        return "<module 'bareosfd' (fdsim stand-in, shared by %d jobs)>" % len(
            object.__getattribute__(self, "_fdsim_jobs"))


_shared_lock = threading.Lock()


def install_shared(context, module):
    """Make ``module`` the ``bareosfd`` of ``context``'s job in a shared interpreter."""
    with _shared_lock:
        shared = sys.modules.get("bareosfd")
        if not isinstance(shared, SharedBareosfd):
            shared = SharedBareosfd()
            sys.modules["bareosfd"] = shared
        object.__getattribute__(shared, "_fdsim_jobs")[context] = module


def uninstall_shared(context):
    with _shared_lock:
        shared = sys.modules.get("bareosfd")
        if isinstance(shared, SharedBareosfd):
            object.__getattribute__(shared, "_fdsim_jobs").pop(context, None)
