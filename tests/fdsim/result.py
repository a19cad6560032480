"""What a job leaves behind: status, counts, job log, debug output, call trace."""
from collections import namedtuple

from .core import STATUS_TEXT
from .python_fd import MODULE_PREFIX
from .records import RecordFile

LogEntry = namedtuple("LogEntry", "type text")
DebugEntry = namedtuple("DebugEntry", "level text")
TraceEntry = namedtuple("TraceEntry", "call rc extra")
EventEntry = namedtuple("EventEntry", "event delivered")
WarningEntry = namedtuple("WarningEntry", "category message filename lineno")


class JobResult(object):
    """The outcome of one backup or restore job.

    ``status`` is the Bareos job status letter: ``T`` (OK), ``W`` (OK with
    warnings: non-fatal errors), ``E`` (Error), ``f`` (Fatal).  ``log`` is the job
    log (``LogEntry(type, text)``, type an ``M_*`` name); ``debug`` the debug
    output up to the job's debug level; ``trace`` every call into the plugin
    module in order, with the bRC it returned; ``events`` every event the core
    generated and whether Python received it; ``warnings`` the warnings the
    simulated C code emitted (what a real FD prints on stderr).  ``crashed`` is the
    reason a real FD would have crashed (and wedged), else None.

    Those five are lists; for a lean job (``Director(lean=True)``) they are
    :class:`fdsim.records.RecordFile` objects of the same entries, read from the job's
    files when iterated (``len`` works, indexing does not).
    """

    def __init__(self, raw, job_row):
        self.raw = raw
        self.jobid = raw["jobid"]
        self.kind = raw["kind"]
        self.level = job_row["level"]
        self.job = job_row["job"]
        self.status = raw["status"]
        self.files = raw["files"]
        self.bytes = raw["bytes"]
        self.errors = raw["errors"]
        self.log = _entries(raw["log"], lambda entry: LogEntry(*entry))
        self.debug = _entries(raw["debug"], lambda entry: DebugEntry(*entry))
        self.trace = _entries(raw["trace"], lambda entry: TraceEntry(
            entry[0], entry[1], entry[2] if len(entry) > 2 else {}))
        self.events = _entries(raw["events"], lambda entry: EventEntry(*entry))
        self.warnings = _entries(raw["warnings"], lambda entry: WarningEntry(*entry))
        self.crashed = raw["crashed"]
        self.fileset_calls = raw["fileset_calls"]
        self.bareos_version = raw["bareos_version"]
        self.interpreter = raw["interpreter"]
        self.filesystem_encoding = raw["filesystem_encoding"]
        self.python = raw["python"]

    @property
    def status_text(self):
        return STATUS_TEXT[self.status]

    @property
    def ok(self):
        """True for T and W (Bareos's "OK" and "OK -- with warnings")."""
        return self.status in ("T", "W")

    @property
    def calls(self):
        """The plugin calls in order, e.g. ``"handle_plugin_event(3)"``."""
        return [entry.call for entry in self.trace]

    def messages(self, *types):
        """Job log texts, optionally only of the given ``M_*`` types."""
        return [e.text for e in self.log if not types or e.type in types]

    def plugin_messages(self, *types):
        """The texts the plugin itself sent with ``bareosfd.JobMessage``, without
        the ``python3-fd-mod: `` the job log shows before them."""
        return [text[len(MODULE_PREFIX):] for text in self.messages(*types)
                if text.startswith(MODULE_PREFIX)]

    def delivered_events(self):
        return [e.event for e in self.events if e.delivered]

    def report(self, debug=True):
        """The job report printed by ``python -m fdsim``."""
        lines = ["%s job %d (%s) level %s: %s (%s)" % (
                     self.kind.capitalize(), self.jobid, self.job, self.level.strip() or "-",
                     self.status, self.status_text),
                 "  Bareos %s, Python %s, %s, filesystem encoding %s" % (
                     self.bareos_version, self.python, self.interpreter,
                     self.filesystem_encoding),
                 "  Files: %d  Bytes: %d  Errors: %d" % (self.files, self.bytes, self.errors)]
        if self.crashed:
            lines.append("  FD CRASH: %s" % self.crashed)
        lines.append("Job log:")
        lines += ["  %-10s %s" % (e.type, line) for e in self.log
                  for line in (e.text.splitlines() or [""])]
        if debug and self.debug:
            lines.append("Debug output:")
            lines += ["  [%3d] %s" % (d.level, d.text) for d in self.debug]
        if self.warnings:
            lines.append("Warnings (FD stderr):")
            lines += ["  %s:%s: %s: %s" % (w.filename, w.lineno, w.category, w.message)
                      for w in self.warnings]
        return "\n".join(lines)

    def as_dict(self):
        """The job's outcome as plain data: ``jobid``, ``kind``, ``level``, ``job``,
        ``status``, ``status_text``, ``files``, ``bytes``, ``errors``, ``crashed``
        and ``log`` (``[type, text]`` pairs)."""
        facts = {key: getattr(self, key) for key in (
            "jobid", "kind", "level", "job", "status", "status_text", "files", "bytes",
            "errors", "crashed")}
        facts["log"] = [[entry.type, entry.text] for entry in self.log]
        return facts

    def __repr__(self):
        return "<JobResult %s %d %s files=%d bytes=%d>" % (self.kind, self.jobid, self.status,
                                                           self.files, self.bytes)


def _entries(record, entry):
    """A record of the raw result as entries: a list, or a lean job's file."""
    if isinstance(record, RecordFile):
        return RecordFile(record.path, entry)
    return [entry(item) for item in record]
