"""Shared benchmark plumbing: medians of one run, and ratios against a baseline.

Each benchmark records its median with ``measure(group, name, func)``; a module
declares what it compares with ``goal()``. At the end of the session the ratios
(subject against baseline, measured in this same run) are printed with the goal
each one has, so numbers from different machines are never mixed; findings that
are no ratio (``note(text)``) follow them. The goals measured are then written
into the generated table of docs/benchmarks.md (:mod:`results_section`): the
rows of this run replace theirs, the others stay.
"""
import datetime
import os
import platform
import shlex
import sys

import pytest

from results_section import Result, SectionError, limit, merge, ratio, size

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "benchmarks.md")
# The benchmarks' own settings (sizes): part of the command that measures a row again.
SETTINGS_PREFIX = "VZ7N_BENCH_"
MEDIANS = {}
GOALS = []
NOTES = []


def goal(group, subject, baseline, kind, target, text):
    """Declare ``subject`` at least ``target`` times faster than ``baseline``
    (kind "faster"), at most ``target`` times slower (kind "at_most"), or its
    value under ``target`` bytes (kind "size_under", values recorded in bytes;
    ``baseline`` is measured beside it for reference). Called at the top level
    of a benchmark module, whose file names the goal's rows."""
    module = os.path.basename(sys._getframe(1).f_globals["__file__"])
    GOALS.append((module, group, subject, baseline, kind, target, text))


def record(group, name, value):
    """A median measured otherwise than by pytest-benchmark (e.g. what a job
    reported), for the goals of ``group``."""
    MEDIANS.setdefault(group, {})[name] = value


def note(text):
    """A line for the end-of-session summary."""
    NOTES.append(text)


@pytest.fixture
def measure(benchmark):
    def run(group, name, func, *args, **kwargs):
        """Benchmark ``func(*args, **kwargs)``. With keyword ``setup`` (a function
        called untimed before every round, e.g. to drop the page cache) it runs
        ``rounds`` (keyword, default 5) rounds of one call each instead."""
        setup = kwargs.pop("setup", None)
        rounds = kwargs.pop("rounds", 5)
        benchmark.group = group
        benchmark.name = name
        if setup is None:
            result = benchmark(func, *args, **kwargs)
        else:
            result = benchmark.pedantic(func, args=args, kwargs=kwargs, setup=setup,
                                        rounds=rounds, iterations=1)
        MEDIANS.setdefault(group, {})[name] = benchmark.stats.stats.median
        return result
    return run


def _command(module):
    """The command that measures the goals of ``module`` again, with this run's settings."""
    settings = ["%s=%s" % (name, shlex.quote(value)) for name, value in sorted(os.environ.items())
                if name.startswith(SETTINGS_PREFIX)]
    return " ".join(settings + ['make bench PYTEST_ARGS="-k %s"' % os.path.splitext(module)[0]])


def _measured():
    """The goals whose subject and baseline this session measured, as Results."""
    date = datetime.date.today().isoformat()
    python = platform.python_version()
    found = []
    for module, group, subject, baseline, kind, target, text in GOALS:
        medians = MEDIANS.get(group, {})
        if subject in medians and baseline in medians:
            found.append(Result(module, group, subject, medians[subject], baseline,
                                medians[baseline], kind, target, text, date, python,
                                _command(module)))
    return found


def _update_doc(results):
    """Merge ``results`` into docs/benchmarks.md; what was done, as a sentence."""
    try:
        with open(DOC, encoding="utf-8") as f:
            old = f.read()
        new = merge(old, results)
        if new != old:
            with open(DOC + ".new", "w", encoding="utf-8") as f:
                f.write(new)
            os.rename(DOC + ".new", DOC)
    except (OSError, SectionError) as e:
        return "%s NOT updated: %s" % (DOC, e)
    return "%s: %d row%s of the generated table refreshed" % (
        DOC, len(results), "" if len(results) == 1 else "s")


def pytest_terminal_summary(terminalreporter):
    results = _measured()
    lines = []
    for result in results:
        value, met = ratio(result)
        if result.kind == "size_under":
            shown = "%s, %s %s (goal under %s)" % (size(result.subject_median), result.baseline,
                                                  size(result.baseline_median),
                                                  limit(result.target))
        elif result.kind == "faster":
            shown = "%.2fx faster than %s (goal >= %.2fx)" % (value, result.baseline,
                                                           result.target)
        else:
            shown = "%.2fx the time of %s (goal <= %.2fx)" % (value, result.baseline,
                                                            result.target)
        lines.append("%s: %s %s: %s -- %s" % (result.group, result.subject, shown,
                                               "met" if met else "NOT met", result.text))
    lines += NOTES
    if results:
        lines.append(_update_doc(results))
    if lines:
        terminalreporter.section("ratios (this run)")
        for line in lines:
            terminalreporter.write_line(line)
