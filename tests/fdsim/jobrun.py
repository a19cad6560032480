"""Running one job inside the FD process, in a fresh interpreter.

python3-fd gives every job its own sub-interpreter (contract §1 "One interpreter
per job").  :func:`launch` does the same where the running CPython can create
sub-interpreters from Python (``_xxsubinterpreters`` 3.8-3.12, ``_interpreters``
3.13+): the whole job -- simulated core, ``bareosfd`` stand-in and plugin --
runs in a new sub-interpreter that is destroyed afterwards.  Elsewhere (Python
3.6, the VZ7 host's Python) the job runs in the FD process's main interpreter
with a fresh import of the plugin's modules ("fresh-import" mode).

The job is described by a JSON spec file written by the Director and leaves a
JSON result file next to it.
"""
import importlib
import json
import os
import sys
import threading
import traceback

from . import backup
from . import core as core_module
from . import python_fd
from . import restore
from . import standin
from . import structmember

SUB_INTERPRETER = "sub-interpreter"
FRESH_IMPORT = "fresh-import"


def _subinterpreters():
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def available_modes():
    """Interpreter modes the running Python offers, best first."""
    return (SUB_INTERPRETER, FRESH_IMPORT) if _subinterpreters() else (FRESH_IMPORT,)


def resolve_mode(mode):
    if mode in (None, "auto"):
        return available_modes()[0]
    if mode not in (SUB_INTERPRETER, FRESH_IMPORT):
        raise ValueError("interpreter: expected 'auto', %r or %r, got %r"
                         % (SUB_INTERPRETER, FRESH_IMPORT, mode))
    if mode not in available_modes():
        raise ValueError("interpreter: Python %d.%d cannot create sub-interpreters"
                         % sys.version_info[:2])
    return mode


def launch(spec_path, mode):
    """Run the job of ``spec_path`` on the calling thread in interpreter ``mode``."""
    if mode == FRESH_IMPORT:
        run_job_file(spec_path, shared=True)
        return
    interpreters = _subinterpreters()
    package_dir = os.path.dirname(os.path.abspath(__file__))
    # The package is registered without running its __init__: that one imports
    # the Director side (sqlite3, subprocess), which a real FD never loads and
    # which would show up in the per-job memory of the FD process. A parent
    # package (vz7native for the installed simulator) is imported as it is.
    parent, _, _ = __package__.rpartition(".")
    code = ("import importlib, sys, types\nsys.path[:] = %r\n"
            "%s"
            "package = types.ModuleType(%r)\npackage.__path__ = [%r]\n"
            "sys.modules[%r] = package\njobrun = importlib.import_module(%r)\n"
            "jobrun.run_job_file(%r, shared=False)\n" % (
                sys.path, "import %s\n" % parent if parent else "", __package__,
                package_dir, __package__, __name__, spec_path))
    interp = _create(interpreters)
    try:
        failure = interpreters.run_string(interp, code)
        if failure is not None and not os.path.exists(_result_path(spec_path)):
            _write_result(spec_path, {"internal_error": "sub-interpreter failed: %r"
                                      % (failure,)})
    except Exception:
        if not os.path.exists(_result_path(spec_path)):
            _write_result(spec_path, {"internal_error": traceback.format_exc()})
    finally:
        # Ending an interpreter that still runs a thread aborts the process (as
        # python3-fd's Py_EndInterpreter does the FD): such an interpreter is left
        # alone; the job already reported the crash and the FD counts as wedged.
        if not _threads_left(spec_path):
            interpreters.destroy(interp)


def _threads_left(spec_path):
    try:
        with open(_result_path(spec_path)) as f:
            return json.load(f).get("threads_left", 0)
    except (OSError, ValueError):
        return 0


def _end_interpreter(core):
    """What Py_EndInterpreter finds at job end: threads the plugin left running are
    fatal ("not the last thread").  They get a few seconds to end so that the
    simulator can still destroy the sub-interpreter."""
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if not others:
        return 0
    core.crash = core.crash or ("Py_EndInterpreter: not the last thread (%d thread(s) "
                                "the plugin started still run): the FD aborts" % len(others))
    core.fatal = True
    core.log.append(["M_FATAL", "FD would crash (contract §7/§12.3): %s" % core.crash])
    for thread in others:
        thread.join(THREAD_GRACE)
    return sum(1 for t in others if t.is_alive())


#: Seconds a plugin thread left running at job end gets before the simulator
#: gives up on destroying the job's sub-interpreter.
THREAD_GRACE = 10


def _create(interpreters):
    """A sub-interpreter with the legacy (shared GIL, fork and single-phase
    extensions allowed) configuration python3-fd's Py_NewInterpreter gives."""
    if sys.version_info >= (3, 13):
        return interpreters.create("legacy")
    try:
        return interpreters.create(isolated=False)
    except TypeError:
        return interpreters.create()


def _result_path(spec_path):
    return os.path.join(os.path.dirname(spec_path), "result.json")


def _write_result(spec_path, result):
    path = _result_path(spec_path)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(path + ".tmp", path)


class OwnInterpreter(object):
    """The job owns the interpreter: ``bareosfd`` and sys.path are its own."""
    mode = SUB_INTERPRETER

    def __init__(self, plugin_directory):
        self.plugin_directory = plugin_directory

    def attach(self, core):
        sys.modules["bareosfd"] = core.module
        if self.plugin_directory:
            sys.path.insert(0, self.plugin_directory)

    def add_module_path(self, path):
        sys.path.insert(0, path)  # module_path goes to sys.path[0] (§1)

    def import_plugin(self, name, module_path):
        importlib.invalidate_caches()
        return importlib.import_module(name)

    def detach(self, core):
        pass  # the interpreter is destroyed with everything it imported


class SharedInterpreter(OwnInterpreter):
    """Fresh-import mode: jobs share the interpreter; each job re-imports the
    plugin's own modules (those under module_path and the plugin directory) and
    reaches its own ``bareosfd`` through :class:`fdsim.standin.SharedBareosfd`."""
    mode = FRESH_IMPORT

    def attach(self, core):
        standin.install_shared(core, core.module)
        if self.plugin_directory and self.plugin_directory not in sys.path:
            sys.path.insert(0, self.plugin_directory)

    def add_module_path(self, path):
        if path not in sys.path:
            sys.path.insert(0, path)

    def import_plugin(self, name, module_path):
        roots = [os.path.abspath(d) + os.sep for d in (module_path, self.plugin_directory) if d]
        for module_name, module in list(sys.modules.items()):
            filename = getattr(module, "__file__", None) or ""
            if module_name == name or any(os.path.abspath(filename).startswith(r)
                                          for r in roots):
                del sys.modules[module_name]
        return OwnInterpreter.import_plugin(self, name, module_path)

    def detach(self, core):
        standin.uninstall_shared(core)


def _observe_warning(category, message, filename, lineno):
    core = standin.current_context()
    if core is not None:
        core.warnings.append([category.__name__, message, filename, lineno])


def run_job_file(spec_path, shared):
    """Run the job described by ``spec_path``; write ``result.json`` beside it."""
    try:
        with open(spec_path) as f:
            spec = json.load(f)
        interpreter = (SharedInterpreter if shared else OwnInterpreter)(
            spec.get("plugin_directory"))
        core = core_module.PluginCore(spec, interpreter)
        try:
            structmember.warning_observer = _observe_warning
            interpreter.attach(core)
            standin.activate(core)
            try:
                _drive(core)
            finally:
                standin.activate(None)
                interpreter.detach(core)
            threads_left = 0 if shared else _end_interpreter(core)
        finally:
            core.close_records()
        result = core.result()
        result["threads_left"] = threads_left
        result["interpreter"] = interpreter.mode
        result["filesystem_encoding"] = sys.getfilesystemencoding()
        result["python"] = "%d.%d.%d" % sys.version_info[:3]
    except BaseException:
        result = {"internal_error": traceback.format_exc()}
    _write_result(spec_path, result)


def _drive(core):
    driver = backup.run if core.kind == "backup" else restore.run
    try:
        driver(core)
    except python_fd.FdCrash as crash:
        core.crash = str(crash)
    finally:
        core.free_plugin()  # may find the double free of §12.3
    if core.crash:
        core.fatal = True
        core.log.append(["M_FATAL", "FD would crash (contract §7/§12.3): %s" % core.crash])
