"""A plugin module that loads another one and times its entry points.

The simulator's trace has no times, so a benchmark loads the plugin it measures
through a wrapper written by :func:`write_timed_plugin`: every entry point is
timed with ``time.thread_time`` (CPU time of the job's thread, which other jobs
on a shared machine do not move the way they move wall-clock time) and with
wall-clock time. The times include the simulated ``bareosfd`` the entry points
call (packets, StatPacket), Python here where a real FD runs C.

The wrapper reports once per job, in one M_INFO message read back by
:func:`entry_point_times`: ``times`` ({entry point: [calls, CPU s, wall s]}),
``fixed`` and ``phase`` (backups: the first ``start_backup_file``, where a plugin
opens its session, and the last ``end_backup_file``, where it closes it, are
kept apart as ``fixed``; ``phase`` is the wall time between them) and ``wall``
(seconds from the module's import on). A backup reports when its last
``end_backup_file`` returns, a restore after its ``bEventEndRestoreJob`` (6),
whose time (where a plugin finishes a restore) is in ``times``.
"""
import json
import os

import fdsim.testing

TIMES_MESSAGE = "entry point times: "

_SOURCE = '''
import importlib.util
import json
import sys
import time

import bareosfd

sys.path.insert(0, {directory!r})
_spec = importlib.util.spec_from_file_location("timed_target", {path!r})
_target = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_target)
_imported = time.perf_counter()
_times = {{}}
_fixed = {{}}
_NAMES = ("load_bareos_plugin", "parse_plugin_definition", "handle_plugin_event",
          "start_backup_file", "end_backup_file", "start_restore_file", "end_restore_file",
          "create_file", "set_file_attributes", "plugin_io", "get_acl", "set_acl",
          "get_xattr", "set_xattr", "check_file", "restore_object_data")
_END_RESTORE_JOB = 6


def _report(phase_end, end):
    bareosfd.JobMessage(bareosfd.M_INFO, "{message}%s\\n" % json.dumps(
        {{"times": _times, "fixed": _fixed,
          "phase": phase_end - _fixed.get("phase_start", phase_end), "wall": end - _imported}}))


def _count(name, spent, wall):
    counted = _times.setdefault(name, [0, 0.0, 0.0])
    counted[0] += 1
    counted[1] += spent
    counted[2] += time.perf_counter() - wall


def _timed(name, function):
    def entry_point(*args):
        wall, cpu = time.perf_counter(), time.thread_time()
        rc = function(*args)
        spent = time.thread_time() - cpu
        if name == "start_backup_file" and "phase_start" not in _fixed:
            _fixed["phase_start"] = time.perf_counter()
            _fixed["first_start_backup_file"] = [spent, _fixed["phase_start"] - wall]
        elif name == "end_backup_file" and rc != bareosfd.bRC_More:
            end = time.perf_counter()
            _fixed["last_end_backup_file"] = [spent, end - wall]
            _report(wall, end)
        else:
            _count(name, spent, wall)
            if name == "handle_plugin_event" and args and args[0] == _END_RESTORE_JOB:
                now = time.perf_counter()
                _report(now, now)
        return rc
    return entry_point


for _name in _NAMES:
    if hasattr(_target, _name):
        globals()[_name] = _timed(_name, getattr(_target, _name))
'''


def write_timed_plugin(directory, name, target_dir, target_file, **options):
    """Write the wrapper module ``<directory>/<name>.py`` of the plugin module
    ``target_file`` in ``target_dir``; returns its Plugin= string (with
    ``options``)."""
    return fdsim.testing.write_plugin(directory, name, _SOURCE.format(
        directory=target_dir, path=os.path.join(target_dir, target_file),
        message=TIMES_MESSAGE), **options)


def entry_point_times(result):
    """The wrapper's report of the job ``result`` (a dict, see the module docstring)."""
    for text in result.plugin_messages("M_INFO"):
        if text.startswith(TIMES_MESSAGE):
            return json.loads(text[len(TIMES_MESSAGE):])
    raise AssertionError("no timing message:\n" + result.report()[:3000])
