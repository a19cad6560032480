"""Shared benchmark plumbing: medians of one run, and ratios against a baseline.

Each benchmark records its median with ``measure(group, name, func)``; a module
declares what it compares with ``GOALS``. At the end of the session the ratios
(subject against baseline, measured in this same run) are printed with the goal
each one has, so numbers from different machines are never mixed; findings that
are no ratio (``note(text)``) follow them.
"""
import pytest

MEDIANS = {}
GOALS = []
NOTES = []


def goal(group, subject, baseline, kind, target, text):
    """Declare ``subject`` at least ``target`` times faster than ``baseline``
    (kind "faster") or at most ``target`` times slower (kind "at_most")."""
    GOALS.append((group, subject, baseline, kind, target, text))


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


def pytest_terminal_summary(terminalreporter):
    lines = []
    for group, subject, baseline, kind, target, text in GOALS:
        medians = MEDIANS.get(group, {})
        if subject not in medians or baseline not in medians:
            continue
        ratio = medians[baseline] / medians[subject]
        if kind == "faster":
            met = ratio >= target
            shown = "%.2fx faster than %s (goal >= %.2fx)" % (ratio, baseline, target)
        else:
            ratio = 1.0 / ratio
            met = ratio <= target
            shown = "%.2fx the time of %s (goal <= %.2fx)" % (ratio, baseline, target)
        lines.append("%s: %s %s: %s -- %s" % (group, subject, shown,
                                               "met" if met else "NOT met", text))
    lines += NOTES
    if lines:
        terminalreporter.section("ratios (this run)")
        for line in lines:
            terminalreporter.write_line(line)
