"""The FD process: runs jobs in threads, each in a fresh interpreter.

Started by :class:`fdsim.director.FileDaemon` as ``python -m fdsim.fdprocess``.
It reads one JSON command per line from the ``--commands`` pipe and answers on
the ``--replies`` pipe (its stdout/stderr stay free for what plugins print and
for the warnings a real FD writes to stderr):

* ``{"op": "run", "id": N, "spec": PATH}`` -- run a job on a new thread;
  ``{"id": N, "done": true}`` when its result file is written;
* ``{"op": "rss", "id": N}`` -- ``{"id": N, "rss_kib": ...}``;
* ``{"op": "quit"}`` -- wait for running jobs, then exit.
"""
import argparse
import gc
import json
import os
import threading

from . import jobrun


def rss_kib():
    """Resident set size of this process in KiB (Linux /proc)."""
    return status_kib("VmRSS")


def status_kib(field, pid="self"):
    """A KiB field of /proc/PID/status (``VmRSS``, ``VmHWM`` ...)."""
    path = "/proc/%s/status" % pid
    with open(path) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError("%s missing from %s" % (field, path))


class JobRunner(object):
    """Runs jobs on threads of this process."""

    def __init__(self, mode):
        self.mode = jobrun.resolve_mode(mode)
        self.threads = []

    def start(self, spec_path, done):
        thread = threading.Thread(target=self._run, args=(spec_path, done),
                                  name="fdsim-job-%s" % os.path.basename(
                                      os.path.dirname(spec_path)))
        thread.daemon = True
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _run(self, spec_path, done):
        try:
            jobrun.launch(spec_path, self.mode)
        finally:
            done()

    def join(self):
        for thread in self.threads:
            thread.join()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m %s.fdprocess" % __package__)
    parser.add_argument("--commands", type=int, required=True)
    parser.add_argument("--replies", type=int, required=True)
    parser.add_argument("--interpreter", default="auto")
    args = parser.parse_args(argv)
    runner = JobRunner(args.interpreter)
    replies = os.fdopen(args.replies, "w", buffering=1)
    lock = threading.Lock()

    def reply(message):
        with lock:
            replies.write(json.dumps(message) + "\n")

    with os.fdopen(args.commands) as commands:
        reply({"ready": True, "pid": os.getpid(), "interpreter": runner.mode})
        for line in commands:
            command = json.loads(line)
            op = command["op"]
            if op == "run":
                runner.start(command["spec"],
                             lambda ident=command["id"]: reply({"id": ident, "done": True}))
            elif op == "rss":
                if command.get("collect"):
                    gc.collect()
                reply({"id": command["id"], "rss_kib": rss_kib()})
            elif op == "quit":
                break
    runner.join()
    replies.close()


if __name__ == "__main__":
    main()
