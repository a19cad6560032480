"""The generated section of docs/benchmarks.md: one table row per goal.

``make bench`` ends by writing what it measured into the document between
:data:`BEGIN` and :data:`END`; everything outside them is written by hand and
left as it is. A row is keyed by its benchmark module, group, subject and
baseline: a run replaces the rows it measured and keeps the others, with their
dates, so a partial run (``make bench PYTEST_ARGS="-k ..."``) refreshes only its
own rows. Rows are sorted by that key.

    >>> text = merge(old_text, [Result(...), ...])

Stdlib only, no pytest: the normal test suite checks :func:`merge`.
"""
import collections
import re

BEGIN = "<!-- begin: written by make bench (benchmarks/conftest.py); edit outside these markers only -->"
END = "<!-- end: written by make bench -->"
COLUMNS = ("benchmark", "group", "subject", "median", "baseline", "median", "ratio", "goal",
           "result", "date", "Python", "reproduce")
EMPTY = "No goal measured yet: `make bench` fills this table."
_CELL_SPLIT = re.compile(r"(?<!\\)\|")

class Result(collections.namedtuple("Result", (
        "benchmark", "group", "subject", "subject_median", "baseline", "baseline_median",
        "kind", "target", "text", "date", "python", "command"))):
    """One goal as measured: ``benchmark`` its module's file name, medians in
    seconds; ``kind`` ``"faster"`` (the subject at least ``target`` times faster
    than the baseline) or ``"at_most"`` (at most ``target`` times the baseline's
    time), or ``"size_under"``: an absolute limit, the subject's value under
    ``target`` bytes (values in bytes; the baseline's is shown beside it, for
    reference); ``text`` what the goal compares; ``date`` (YYYY-MM-DD),
    ``python`` (its version) and ``command`` (to measure it again) of the run."""

    __slots__ = ()


class SectionError(ValueError):
    """The document's generated section is missing or broken (the message says how)."""


def ratio(result):
    """(the ratio as the goal states it, met or not): for ``size_under`` the
    subject's share of the limit."""
    if result.kind == "size_under":
        value = result.subject_median / result.target
        return value, value < 1
    if result.kind == "faster":
        value = result.baseline_median / result.subject_median
        return value, value >= result.target
    value = result.subject_median / result.baseline_median
    return value, value <= result.target


def seconds(value):
    """A duration for people: three significant digits, in s, ms or µs."""
    for unit, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= unit:
            break
    scaled = value / unit
    return ("%.0f %s" if scaled >= 100 else "%.3g %s") % (scaled, name)


def size(value):
    """A size for people: MiB, three significant digits."""
    return "%.3g MiB" % (value / float(1 << 20))


def limit(value):
    """A size limit as goals state them: decimal MB, and in MiB."""
    return "%.3g MB (%s)" % (value / 1e6, size(value))


def cells(result):
    """The table row of ``result``, as its cells (text)."""
    value, met = ratio(result)
    unit = seconds
    if result.kind == "size_under":
        shown, goal = "%.2f of the limit" % value, "under %s" % limit(result.target)
        unit = size
    elif result.kind == "faster":
        shown, goal = "%.2fx faster" % value, "at least %.2fx faster" % result.target
    else:
        shown, goal = "%.2fx the time" % value, "at most %.2fx the time" % result.target
    return (result.benchmark, result.group, "`%s`" % result.subject,
            unit(result.subject_median), "`%s`" % result.baseline,
            unit(result.baseline_median), shown, "%s: %s" % (goal, result.text),
            "met" if met else "**not met**", result.date, result.python,
            "`%s`" % result.command)


def _key(row):
    benchmark, group, subject, _, baseline = row[:5]
    return benchmark, group, subject, baseline


def _escape(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _render_row(row):
    return "| %s |" % " | ".join(_escape(cell) for cell in row)


def _parse_row(inner, number):
    if not (inner.startswith("|") and inner.endswith("|")):
        raise SectionError("line %d of the generated section is no table row: %r"
                           % (number, inner))
    row = tuple(cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(inner[1:-1]))
    if len(row) != len(COLUMNS):
        raise SectionError("line %d of the generated section has %d cells, not %d: %r"
                           % (number, len(row), len(COLUMNS), inner))
    return row


def _split(document):
    """(text before the section, the section's lines, text after, the line
    number of its first line) of ``document``."""
    begin, end = document.find(BEGIN), document.find(END)
    if document.count(BEGIN) != 1 or document.count(END) != 1 or end < begin:
        raise SectionError("the document needs the generated section's markers, each once "
                           "and in this order:\n%s\n%s" % (BEGIN, END))
    lines = document[begin + len(BEGIN):end].split("\n")
    return document[:begin], lines, document[end + len(END):], document.count("\n", 0, begin) + 1


def rows(document):
    """The rows of the generated section of ``document`` (tuples of cell texts)."""
    _, lines, _, first = _split(document)
    found = []
    header = _render_row(COLUMNS)
    for number, line in enumerate(lines, first):
        stripped = line.strip()
        if not stripped or stripped == EMPTY or stripped == header or \
                set(stripped) <= set("|-: "):
            continue
        found.append(_parse_row(stripped, number))
    return found


def merge(document, results):
    """``document`` with its generated section holding the rows of ``results``
    and those of its old rows that ``results`` does not replace."""
    before, _, after, _ = _split(document)
    merged = {_key(row): row for row in rows(document)}
    for result in results:
        row = cells(result)
        merged[_key(row)] = row
    if merged:
        body = [_render_row(COLUMNS), "|%s|" % "|".join("---" for _ in COLUMNS)]
        body += [_render_row(merged[key]) for key in sorted(merged)]
    else:
        body = [EMPTY]
    return "%s%s\n%s\n%s%s" % (before, BEGIN, "\n".join(body), END, after)
