"""A job's records kept in files: the log, debug output, trace, events and
warnings of a lean job (``Director(lean=True)``).

By default the FD keeps these records in lists until the job ends, about 2 KiB
per file saved; a job of a million files would hold gigabytes in the FD
process. In lean mode each record is a file of JSON lines in the job's
directory instead: the FD appends to it as the job runs, the Director appends
its own log lines before and after, and :class:`fdsim.result.JobResult` reads
it back whenever it is iterated.
"""
import json
import os

#: The records of a job kept in lists by default and in files in lean mode.
NAMES = ("log", "debug", "trace", "events", "warnings")


def record_path(directory, name):
    return os.path.join(directory, name + ".jsonl")


class RecordFile(object):
    """One record as a file of JSON lines: :meth:`append` an entry as to a
    list, iterate to read the entries back (from the file, every time), ``len``
    counts them. ``entry`` turns a decoded line into what iteration yields."""

    def __init__(self, path, entry=None):
        self.path = path
        self.entry = entry
        self._file = None

    def open(self):
        """Keep the file open for the many appends of a job (until :meth:`close`)."""
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, item):
        line = json.dumps(item) + "\n"
        if self._file is not None:
            self._file.write(line)
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def __iter__(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                item = json.loads(line)
                yield self.entry(item) if self.entry is not None else item

    def __len__(self):
        if not os.path.exists(self.path):
            return 0
        with open(self.path, encoding="utf-8") as f:
            return sum(1 for _ in f)

    def __repr__(self):
        return "<RecordFile %s>" % self.path
