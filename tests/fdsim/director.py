"""The Director side: job ids, levels, since times, accurate lists, restore
selection, the catalog -- and the FD processes jobs run in.

    director = Director(workdir, bareos_version=23)
    full = director.backup("python3:module_path=/p:module_name=myplugin:root=/data")
    incr = director.backup("python3:...", level="I", accurate=True)
    back = director.restore(where="/tmp/restored")          # latest Full+Incrementals
"""
import itertools
import json
import os
import site
import subprocess
import sys
import threading
import time
from collections import namedtuple

from . import catalog as catalog_module
from . import constants as C
from . import jobrun
from . import records
from . import volume
from .native import STAT_FIELDS
from .restore import WhereError, parse_regexwhere
from .result import JobResult
from .versions import BareosVersion

# The simulator runs as "fdsim" (from tests/) or "vz7native.fdsim" (installed):
# its FD process is started under the same name.
_PACKAGE = __package__


def _top_directory():
    """The directory holding the simulator's top-level package."""
    path = os.path.dirname(os.path.abspath(__file__))
    for _ in _PACKAGE.split("."):
        path = os.path.dirname(path)
    return path


def _fd_python_path(inherited):
    """PYTHONPATH of an FD process: the simulator's top directory first, unless
    it is a site directory (ahead of the standard library it could shadow it)."""
    top = _top_directory()
    sites = set(getattr(site, "getsitepackages", lambda: [])())
    sites.add(site.getusersitepackages())
    paths = [p for p in inherited.split(os.pathsep) if p]
    return os.pathsep.join(([] if top in sites else [top]) + paths)
_DEFAULT = object()

LEVELS = {"F": "F", "FULL": "F", "I": "I", "INCREMENTAL": "I", "D": "D", "DIFFERENTIAL": "D"}
FILESET_OPTIONS = ("acl", "xattr", "hardlinks", "sparse", "mtimeonly", "noatime", "accurate")
#: The environment of an FD started under the C locale: Python then has an ASCII
#: filesystem encoding, like python3-fd in a bareos-fd.service without LANG (§12.2).
C_LOCALE_ENV = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}

MemoryReport = namedtuple("MemoryReport",
                          "jobs rss_before_kib rss_after_kib growth_per_job_kib statuses")


class FdsimError(Exception):
    """Base class of the simulator's own errors."""


class FdWedgedError(FdsimError):
    """A job was sent to an FD that a previous job crashed: a real FD stays wedged
    in its signal handler and never runs another job (contract §12.3)."""


class FdsimInternalError(FdsimError):
    """The simulator itself failed (a bug in fdsim, not in the plugin)."""


class FileDaemon(object):
    """One simulated bareos-fd process; jobs overlap on threads like in the FD.

    ``in_process=True`` runs the jobs on threads of the calling process instead of
    a child process (handy under a debugger; no C locale, no RSS of its own).
    """

    _numbers = itertools.count(1)

    def __init__(self, director, in_process=False, c_locale=False, python=None,
                 interpreter="auto"):
        self.director = director
        self.in_process = in_process
        self.c_locale = c_locale
        self.python = python or sys.executable
        self.interpreter = interpreter
        self.number = next(self._numbers)
        self.state_dir = os.path.join(director.workdir, "fd", "fd-%d-%d" % (os.getpid(),
                                                                              self.number))
        self.wedged = None
        self.pid = None
        self.returncode = None
        self._process = None
        self._replies = None
        self._commands = None
        self._waiters = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._reader = None
        self._runner = None
        self._log = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self):
        os.makedirs(self.state_dir, exist_ok=True)
        if self.in_process:
            if self.c_locale:
                raise FdsimError("c_locale needs a child FD process (in_process=False)")
            from .fdprocess import JobRunner
            self._runner = JobRunner(self.interpreter)
            self.pid = os.getpid()
            return self
        command_read, command_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = _fd_python_path(env.get("PYTHONPATH", ""))
        if self.c_locale:
            env.update(C_LOCALE_ENV)
        self._log = open(os.path.join(self.state_dir, "fd.log"), "ab")
        try:
            self._process = subprocess.Popen(
                [self.python, "-m", _PACKAGE + ".fdprocess", "--commands", str(command_read),
                 "--replies", str(reply_write), "--interpreter", self.interpreter],
                pass_fds=(command_read, reply_write), env=env, stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=self._log, cwd=self.state_dir)
        finally:
            os.close(command_read)
            os.close(reply_write)
        self._commands = os.fdopen(command_write, "w", buffering=1)
        self._replies = os.fdopen(reply_read)
        ready = self._replies.readline()
        if not ready:
            self.close()
            raise FdsimError("the FD process did not start; see %s"
                             % os.path.join(self.state_dir, "fd.log"))
        self.pid = json.loads(ready)["pid"]
        self._reader = threading.Thread(target=self._read_replies, name="fdsim-fd-replies")
        self._reader.daemon = True
        self._reader.start()
        return self

    def close(self):
        """Wait for running jobs and stop the FD process."""
        if self._runner is not None:
            self._runner.join()
            self._runner = None
        if self._process is not None:
            try:
                self._commands.write(json.dumps({"op": "quit"}) + "\n")
                self._commands.close()
            except (OSError, ValueError):
                pass
            self.returncode = self._process.wait()
            if self._reader is not None:
                self._reader.join()
            self._replies.close()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start() if self.pid is None else self

    def __exit__(self, *exc_info):
        self.close()

    # --- transport --------------------------------------------------------------------

    def _read_replies(self):
        for line in self._replies:
            message = json.loads(line)
            with self._lock:
                waiter = self._waiters.pop(message.get("id"), None)
            if waiter is not None:
                waiter["reply"] = message
                waiter["event"].set()
        with self._lock:  # the process is gone: release everybody still waiting
            for waiter in self._waiters.values():
                waiter["event"].set()
            self._waiters.clear()

    def _request(self, message):
        waiter = {"event": threading.Event(), "reply": None}
        with self._lock:
            ident = next(self._ids)
            self._waiters[ident] = waiter
        message["id"] = ident
        try:
            self._commands.write(json.dumps(message) + "\n")
        except (OSError, ValueError):
            waiter["event"].set()
        return waiter

    def submit(self, spec_path):
        """Start the job of ``spec_path``; returns a ``threading.Event`` set when it ended."""
        if self.pid is None:
            self.start()
        if self.wedged:
            raise FdWedgedError("FD %d is wedged since a job crashed it: %s"
                                % (self.number, self.wedged))
        if self._runner is not None:
            done = threading.Event()
            self._runner.start(spec_path, done.set)
            return done
        return self._request({"op": "run", "spec": spec_path})["event"]

    def rss_kib(self, collect=True):
        """Resident set size of the FD process (after a garbage collection)."""
        if self._runner is not None:
            from .fdprocess import rss_kib
            return rss_kib()
        waiter = self._request({"op": "rss", "collect": collect})
        waiter["event"].wait()
        if waiter["reply"] is None:
            raise FdsimError("the FD process is gone")
        return waiter["reply"]["rss_kib"]

    def reset_peak_rss(self):
        """Start the FD process's peak RSS (VmHWM) afresh (Linux 4.0+)."""
        with open("/proc/%d/clear_refs" % self.pid, "w") as f:
            f.write("5")

    def peak_rss_kib(self):
        """The FD process's peak RSS (VmHWM) in KiB: since it started or since
        :meth:`reset_peak_rss`."""
        from .fdprocess import status_kib
        return status_kib("VmHWM", self.pid)

    def exit_status(self):
        """The FD process's exit status once it has ended, else None."""
        if self._process is not None:
            try:
                self.returncode = self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    # --- jobs ---------------------------------------------------------------------------

    def backup(self, *args, **kwargs):
        """:meth:`Director.backup` on this FD."""
        return self.director.backup(*args, fd=self, **kwargs)

    def restore(self, *args, **kwargs):
        """:meth:`Director.restore` on this FD."""
        return self.director.restore(*args, fd=self, **kwargs)

    def start_backup(self, *args, **kwargs):
        """Start a backup and return at once: ``RunningJob.wait()`` gives the result."""
        return self.director.backup(*args, fd=self, wait=False, **kwargs)

    def start_restore(self, *args, **kwargs):
        return self.director.restore(*args, fd=self, wait=False, **kwargs)


class RunningJob(object):
    """A job submitted without waiting; :meth:`wait` finishes it in the catalog."""

    def __init__(self, done, finish):
        self._done = done
        self._finish = finish
        self._result = None

    def wait(self, timeout=None):
        if self._result is None:
            if not self._done.wait(timeout):
                raise FdsimError("job still running after %s s" % timeout)
            self._result = self._finish()
        return self._result


class Director(object):
    """Runs backup and restore jobs against the simulated FD and keeps the catalog.

    ``workdir`` holds the catalog (``catalog.sqlite``), the volumes, one directory
    per job (spec, result, accurate list) and the FD plugin directory.
    ``bareos_version``: 20..26 or ``"X.Y.Z"`` (see :class:`BareosVersion`).
    ``isolation``: ``"process"`` (default: every job gets a fresh FD process unless
    a :class:`FileDaemon` is passed) or ``"in-process"``.  ``interpreter``:
    ``"auto"`` (sub-interpreter where the Python offers one, else fresh import),
    ``"sub-interpreter"`` or ``"fresh-import"``.  ``c_locale``: start FD processes
    under the C locale.  ``clock``: the Director's time source (job start times,
    hence since times).  ``lean``: the FD keeps no record per file in its
    process -- job log, debug output, trace, events and warnings go to files in
    the job's directory (:mod:`fdsim.records`), which the :class:`JobResult`
    reads back when iterated.
    """

    def __init__(self, workdir, bareos_version=23, isolation="process", interpreter="auto",
                 c_locale=False, python=None, plugin_directory=_DEFAULT, client="fdsim-fd",
                 clock=None, debug_level=0, lean=False):
        self.version = BareosVersion(bareos_version)
        if isolation not in ("process", "in-process"):
            raise ValueError("isolation: expected 'process' or 'in-process', got %r"
                             % (isolation,))
        if interpreter not in ("auto", jobrun.SUB_INTERPRETER, jobrun.FRESH_IMPORT):
            raise ValueError("interpreter: expected 'auto', %r or %r, got %r"
                             % (jobrun.SUB_INTERPRETER, jobrun.FRESH_IMPORT, interpreter))
        self.workdir = os.path.abspath(workdir)
        for sub in ("volumes", "jobs", "working", "fd"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        if plugin_directory is _DEFAULT:
            plugin_directory = os.path.join(self.workdir, "plugins")
            os.makedirs(plugin_directory, exist_ok=True)
        self.plugin_directory = plugin_directory
        self.isolation = isolation
        self.interpreter = interpreter
        self.c_locale = c_locale
        self.python = python
        self.client = client
        self.clock = clock or time.time
        self.debug_level = debug_level
        self.lean = bool(lean)
        self.catalog = catalog_module.Catalog(os.path.join(self.workdir, "catalog.sqlite"))

    def file_daemon(self, **overrides):
        """A persistent FD (use as a context manager): successive and overlapping
        jobs share its process, as in a real bareos-fd."""
        options = {"in_process": self.isolation == "in-process", "c_locale": self.c_locale,
                   "python": self.python, "interpreter": self.interpreter}
        options.update(overrides)
        return FileDaemon(self, **options)

    # --- backup ---------------------------------------------------------------------------

    def backup(self, fileset_plugin, fd_plugin_options=(), run_plugin_options=None, level="F",
               accurate=False, job_name="backup-fdsim", fileset_name="fdsim-fileset",
               fileset_options=None, client=None, debug_level=None, fd=None, wait=True):
        """Run a backup job and return its :class:`JobResult`.

        ``fileset_plugin``: the FileSet's ``Plugin =`` string, or a list of them.
        ``run_plugin_options``: the ``run ... pluginoptions=`` string;
        ``fd_plugin_options``: the Job's ``FD Plugin Options`` strings.
        ``level``: ``F``/``I``/``D``; ``accurate``: the Job's Accurate flag.
        ``fileset_options``: FileSet Options: ``acl``, ``xattr`` (default on),
        ``hardlinks`` (version default), ``sparse``, ``mtimeonly``, ``noatime``
        (default off), ``accurate`` (letters, default ``"mcs"``).
        ``fd``: a :class:`FileDaemon` to run on (default: a fresh FD for this job);
        ``wait=False`` (with ``fd``) returns a :class:`RunningJob` at once.
        """
        lines = [fileset_plugin] if isinstance(fileset_plugin, str) else list(fileset_plugin)
        if not lines or not all(isinstance(line, str) and line for line in lines):
            raise ValueError("fileset_plugin: give a non-empty Plugin= string or a list of them")
        level = LEVELS.get(str(level).upper())
        if level is None:
            raise ValueError("level: expected F, I or D (Full, Incremental, Differential)")
        options = dict(fileset_options or {})
        unknown = sorted(set(options) - set(FILESET_OPTIONS))
        if unknown:
            raise ValueError("fileset_options: unknown option(s) %s (known: %s)"
                             % (", ".join(unknown), ", ".join(FILESET_OPTIONS)))
        letters = options.get("accurate", C.ACCURATE_DEFAULT)
        if not letters or set(letters) - set(C.ACCURATE_LETTERS):
            raise ValueError("fileset_options: accurate=%r: letters from %s" % (
                letters, "".join(C.ACCURATE_LETTERS)))
        client = client or self.client
        filesetid = self.catalog.fileset_id(fileset_name, {"plugins": lines, "options": options})
        notes = []
        since = 0
        prev_job = None
        if level in ("I", "D"):
            full = self.catalog.last_backup(("F",), client, filesetid, name=job_name)
            if full is None:
                notes.append(["M_INFO", "No prior Full backup Job record found. No prior or "
                                        "suitable Full backup found in catalog. Doing FULL "
                                        "backup."])
                level = "F"
            else:
                reference = full if level == "D" else self.catalog.last_backup(
                    ("F", "D", "I"), client, filesetid, name=job_name)
                since = reference["starttime"]
                prev_job = reference["job"]
        jobid, job = self._new_job(job_name, "B", level, client, filesetid, since)
        job_dir = os.path.join(self.workdir, "jobs", str(jobid))
        accurate_path = None
        if accurate and level in ("I", "D"):
            accurate_path = os.path.join(job_dir, "accurate.json")
            entries = self.catalog.accurate_list(client, filesetid, level)
            with open(accurate_path, "w") as f:
                json.dump(entries, f)
            notes.append(["M_INFO", "Sent Accurate information for %d files" % len(entries)])
        plugin_options = ([run_plugin_options] if run_plugin_options else []) + _strings(
            fd_plugin_options)
        spec = self._common_spec(jobid, job, client, debug_level)
        spec.update({
            "kind": "backup", "level": level, "since": since, "prev_job": prev_job,
            "accurate": bool(accurate), "accurate_options": letters,
            "accurate_list_path": accurate_path, "mtimeonly": bool(options.get("mtimeonly")),
            "fileset_plugins": lines, "fileset_options": options,
            "plugin_options": plugin_options, "volume": volume.volume_path(self.workdir, jobid),
        })
        return self._run(spec, notes, fd, wait, self._catalog_backup)

    def _catalog_backup(self, spec, raw):
        if not os.path.exists(spec["volume"]):
            return
        objects = []
        # Streamed into the catalog: a job of a million files is no list here.
        self.catalog.add_files(_volume_rows(spec, raw, objects))
        self.catalog.add_restore_objects(objects)

    # --- restore ---------------------------------------------------------------------------

    def restore(self, jobid=None, where=None, regexwhere=None, plugin_options=None,
                fd_plugin_options=(), replace="always", select=None, mark=None,
                prefix_links=False, client=None, fileset_name="fdsim-fileset",
                job_name="restore-fdsim", debug_level=None, fd=None, wait=True):
        """Run a restore job and return its :class:`JobResult`.

        ``jobid``: a JobId or a list of them (the latest version of each path
        over those jobs is restored); None restores the most recent backup of
        ``client`` + ``fileset_name`` (latest Full + Differential + Incrementals).
        ``where`` / ``regexwhere`` (``!from!to!``; where None is
        ``<workdir>/bareos-restores``, ``"/"`` or ``""`` restore in place);
        ``plugin_options``: the restore command's ``pluginoptions=``;
        ``fd_plugin_options``: the restore Job's FD Plugin Options; ``replace``:
        always/ifnewer/ifolder/never; ``select``: catalog names or globs, each
        entry alone (a directory as ``/d/``: that entry only, like bconsole's
        ``file=``); ``mark``: names or globs marked in the restore tree, a
        directory with everything below it; both None restore everything;
        ``prefix_links``: the restore's PrefixLinks.  ``fd``/``wait``: as for backup.
        """
        if where and regexwhere:
            raise ValueError("where/regexwhere: give one of them, not both")
        if regexwhere:
            try:
                parse_regexwhere(regexwhere)
            except WhereError as exc:
                raise ValueError(str(exc))
        elif where is None:
            where = os.path.join(self.workdir, "bareos-restores")
        if replace not in C.REPLACE:
            raise ValueError("replace: expected one of %s" % ", ".join(C.REPLACE))
        select, mark = ([value] if isinstance(value, str) else value
                        for value in (select, mark))
        client = client or self.client
        if jobid is None:
            jobids = self._most_recent(client, fileset_name)
        else:
            jobids = [jobid] if isinstance(jobid, int) else list(jobid)
            for one in jobids:
                row = self.catalog.job(one)
                if row is None or row["type"] != "B":
                    raise ValueError("jobid: %r is not a backup job in the catalog" % (one,))
        rows = sorted(catalog_module.select(self.catalog.restore_tree(jobids), select, mark),
            key=lambda r: (r["jobid"], r["fileindex"]))
        objects = [{"object_name": o["object_name"], "object": bytes(o["object"]).hex(),
                    "object_len": o["object_len"], "object_index": o["object_index"],
                    "object_type": o["object_type"], "plugin_name": o["plugin_name"],
                    "jobid": o["jobid"]} for o in self.catalog.restore_objects(jobids)]
        jobid_new, job = self._new_job(job_name, "R", " ", client, None, 0)
        spec = self._common_spec(jobid_new, job, client, debug_level)
        spec.update({
            "kind": "restore", "level": " ", "where": where if not regexwhere else None,
            "regexwhere": regexwhere, "replace": replace, "prefix_links": bool(prefix_links),
            "plugin_options": ([plugin_options] if plugin_options else []) + _strings(
                fd_plugin_options),
            "files": [{"volume": volume.volume_path(self.workdir, r["jobid"]),
                       "offset": r["vol_offset"]} for r in rows],
            "restore_objects": objects, "restored_jobids": jobids,
        })
        return self._run(spec, [], fd, wait, _restore_count_check(len(rows)))

    def _most_recent(self, client, fileset_name):
        rows = self.catalog._query(
            "SELECT j.filesetid FROM job j JOIN fileset f ON f.filesetid=j.filesetid WHERE "
            "j.type='B' AND j.level='F' AND j.status IN ('T','W') AND j.client=? AND f.name=? "
            "ORDER BY j.jobid DESC LIMIT 1", (client, fileset_name))
        if not rows:
            raise ValueError("restore: no successful Full backup of client %r, FileSet %r"
                             % (client, fileset_name))
        return self.catalog.backup_chain(client, rows[0]["filesetid"])

    # --- running jobs ------------------------------------------------------------------------

    def _new_job(self, name, kind, level, client, filesetid, since):
        start = int(self.clock())
        jobid = self.catalog.new_job(name=name, type=kind, level=level, client=client,
                                     filesetid=filesetid, status="C", starttime=start,
                                     since=since, bareos_version=str(self.version))
        job = "%s.%s_%02d" % (name, time.strftime("%Y-%m-%d_%H.%M.%S", time.localtime(start)),
                              jobid % 100)
        self.catalog.update_job(jobid, job=job, volume=volume.volume_path(self.workdir, jobid))
        os.makedirs(os.path.join(self.workdir, "jobs", str(jobid)), exist_ok=True)
        return jobid, job

    def _common_spec(self, jobid, job, client, debug_level):
        return {
            "jobid": jobid, "job": job, "client": client, "fd_name": client,
            "bareos_version": str(self.version),
            "debug_level": self.debug_level if debug_level is None else debug_level,
            "plugin_directory": self.plugin_directory,
            "working_directory": os.path.join(self.workdir, "working"),
            "exe_path": "/usr/sbin", "used_config": "/etc/bareos/bareos-fd.d",
        }

    def _run(self, spec, notes, fd, wait, catalog_hook):
        job_dir = os.path.join(self.workdir, "jobs", str(spec["jobid"]))
        spec_path = os.path.join(job_dir, "spec.json")
        own_fd = fd is None
        if own_fd and not wait:
            raise ValueError("wait=False needs a FileDaemon (Director.file_daemon())")
        if own_fd:
            fd = self.file_daemon()
        try:
            spec["instances_dir"] = os.path.join(fd.state_dir, "instances")
            if self.lean:
                spec["records_dir"] = job_dir
                log = records.RecordFile(records.record_path(job_dir, "log"))
                for entry in notes:  # the job log starts with the Director's lines
                    log.append(entry)
            with open(spec_path, "w") as f:
                json.dump(spec, f, indent=1)
            done = fd.submit(spec_path)
        except BaseException:
            self.catalog.update_job(spec["jobid"], status="f", endtime=int(self.clock()))
            if own_fd:
                fd.close()
            raise

        def finish():
            try:
                done.wait()
            finally:
                if own_fd:
                    fd.close()
            return self._finish(spec, job_dir, notes, fd, catalog_hook)

        return finish() if wait else RunningJob(done, finish)

    def _finish(self, spec, job_dir, notes, fd, catalog_hook):
        result_path = os.path.join(job_dir, "result.json")
        if os.path.exists(result_path):
            with open(result_path) as f:
                raw = json.load(f)
        else:
            raw = {"internal_error": None}
        if "internal_error" in raw:
            self.catalog.update_job(spec["jobid"], status="f", endtime=int(self.clock()))
            if raw["internal_error"] is None:
                died = fd.exit_status()
                raw = _lost_fd_result(spec, "the FD process died (exit status %s)" % died)
                fd.wedged = raw["crashed"]
            else:
                raise FdsimInternalError("job %d: %s" % (spec["jobid"], raw["internal_error"]))
        if spec.get("records_dir"):
            for name in records.NAMES:
                kept = records.RecordFile(records.record_path(spec["records_dir"], name))
                for entry in raw[name]:  # what the result carries in lists: a lost FD's log
                    kept.append(entry)
                raw[name] = kept
        else:
            raw["log"] = notes + raw["log"]
        if catalog_hook is not None:
            catalog_hook(spec, raw)
        if raw["crashed"]:
            fd.wedged = raw["crashed"]
        self.catalog.update_job(spec["jobid"], status=raw["status"], files=raw["files"],
                                bytes=raw["bytes"], errors=raw["errors"],
                                endtime=int(self.clock()))
        return JobResult(raw, self.catalog.job(spec["jobid"]))

    # --- inspection -------------------------------------------------------------------------

    def jobs(self):
        """All jobs in the catalog (dicts)."""
        return self.catalog.jobs()

    def files(self, jobid):
        """The catalog's file records of a job, deleted markers included."""
        return self.catalog.files(jobid)

    def measure_memory(self, jobs, warmup=2, **backup_kwargs):
        """RSS of one FD process before and after ``jobs`` backups (after
        ``warmup`` jobs that load what every job loads); ``statuses`` counts the
        measured jobs by status, so that failing jobs are not measured unawares."""
        statuses = {}
        with self.file_daemon(in_process=False) as fd:
            for _ in range(warmup):
                fd.backup(**backup_kwargs)
            before = fd.rss_kib()
            for _ in range(jobs):
                status = fd.backup(**backup_kwargs).status
                statuses[status] = statuses.get(status, 0) + 1
            after = fd.rss_kib()
        return MemoryReport(jobs, before, after, (after - before) / float(jobs), statuses)


def _volume_rows(spec, raw, objects):
    """The catalog rows of a backup's volume, one by one; its restore objects go
    to ``objects``, the Director's errors about nameless entries into ``raw``."""
    start_offset = None
    cmd = None
    # A killed FD may leave its last record half-written; what came before counts.
    for record in volume.read_records(spec["volume"], torn_tail=bool(raw.get("crashed"))):
        if record.stream == C.STREAM_PLUGIN_NAME:
            if record.plugin_name_start is not None:
                start_offset, cmd = record.offset, record.plugin_name_start
        elif record.stream == C.STREAM_UNIX_ATTRIBUTES:
            attrs = record.attributes()
            kind = attrs["type"]
            # Directories are cataloged under their link, as given (§2.1, §13).
            name = volume.stored_name(attrs)
            if not name:
                # The row stays, nameless, and later accurate lists send it (§13).
                _director_error(raw, "Path length is zero" + (
                    " (directory %s)" % attrs["fname"] if kind == C.FT["FT_DIREND"]
                    else ""))
            deleted = kind == C.FT["FT_DELETED"]
            row = {"jobid": spec["jobid"], "fileindex": 0 if deleted else record.file_index,
                   "path": name, "type": kind, "deleted": int(deleted),
                   "fname": attrs["fname"], "link": attrs["link"],
                   "linkfi": attrs["link_fi"], "cmd": cmd, "vol_offset": start_offset}
            row.update((f, attrs["stat"][f]) for f in STAT_FIELDS)
            yield row
        elif record.stream == C.STREAM_RESTORE_OBJECT:
            obj = record.attributes()
            objects.append((spec["jobid"], obj["object_index"], obj["object_name"],
                            bytes.fromhex(obj["object"]), obj["object_len"],
                            obj["object_type"], obj["plugin_name"]))


def _strings(value):
    """FD Plugin Options: one string or a list of them."""
    return [value] if isinstance(value, str) else list(value)


def _restore_count_check(expected):
    """The Director's end of a restore: fewer files restored than selected is the
    warning "File count mismatch" and ends the job W -- a restore's M_ERRORs do
    not count as FD errors, this is what marks such a job (§6 "Restore errors")."""
    def check(spec, raw):
        if raw["files"] < expected:
            raw["log"].append(["M_WARNING", "File count mismatch: expected %d files, "
                                            "restored %d" % (expected, raw["files"])])
            if raw["status"] == "T":
                raw["status"] = "W"
    return check


def _director_error(raw, text):
    raw["log"].append(["M_ERROR", text])
    raw["errors"] += 1
    if raw["status"] == "T":
        raw["status"] = "W"


def _lost_fd_result(spec, reason):
    return {"jobid": spec["jobid"], "kind": spec["kind"], "level": spec["level"],
            "status": "f", "files": 0, "bytes": 0, "errors": 1,
            "log": [["M_FATAL", "Network error with FD: %s" % reason]], "debug": [],
            "trace": [], "events": [], "warnings": [], "fileset_calls": [],
            "crashed": reason, "bareos_version": spec["bareos_version"],
            "interpreter": None, "filesystem_encoding": None, "python": None}
