"""fdsim: a Bareos file daemon simulator for python3-fd plugins.

Built from ``docs/bareos-fd-contract.md`` (the python3-fd contract): a
``bareosfd`` stand-in with the packet semantics of the real C module, job
drivers that replay the FD's call order for backups and restores, a volume store
and a sqlite catalog so Incremental, Accurate and restore jobs see earlier jobs.
See ``tests/fdsim/README.md``.
"""
from .constants import BRC, CF, EVENTS, FT, IO, M
from .director import (C_LOCALE_ENV, Director, FdsimError, FdsimInternalError, FdWedgedError,
                       FileDaemon, MemoryReport, RunningJob)
from .result import JobResult
from .versions import BareosVersion, BareosVersionError

__all__ = ["BRC", "CF", "EVENTS", "FT", "IO", "M", "C_LOCALE_ENV", "Director", "FdsimError",
           "FdsimInternalError", "FdWedgedError", "FileDaemon", "MemoryReport", "RunningJob",
           "JobResult", "BareosVersion", "BareosVersionError"]
