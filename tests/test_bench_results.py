"""The generated table of docs/benchmarks.md (benchmarks/results_section.py):
a run's results replace their rows and keep the others with their dates, the
hand-written text around the markers is left byte for byte, a document without
its markers is refused."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from results_section import (BEGIN, COLUMNS, EMPTY, END, Result, SectionError,  # noqa: E402
                             merge, rows)

BEFORE = "# Benchmarks\n\nHand-written | with a pipe.\n\n## Goals\n\n"
AFTER = "\n\n## libploop binding\n\n| contender | median |\n|---|---|\n| bare_cffi | 1.87 ms |\n"
DOCUMENT = BEFORE + BEGIN + "\n" + EMPTY + "\n" + END + AFTER
COMMAND = 'make bench PYTEST_ARGS="-k test_ploop_bench"'


def snapshot(subject="disk_api", baseline="ploop_cli", subject_median=0.00195,
             baseline_median=0.00773, kind="faster", target=2.5, date="2024-05-01",
             python="3.11.7"):
    return Result("test_ploop_bench.py", "snapshot cycle", subject, subject_median, baseline,
                  baseline_median, kind, target, "Disk API vs the ploop CLI", date, python,
                  COMMAND)


def walk(median=0.471, date="2024-05-01"):
    return Result("test_walk_bench.py", "walk 200k", "walker", median, "find_printf", 0.422,
                  "at_most", 1.15, "find -printf, one lstat per entry", date, "3.11.7",
                  'make bench PYTEST_ARGS="-k test_walk_bench"')


NAMES = ("benchmark", "group", "subject", "subject_median", "baseline", "baseline_median",
         "ratio", "goal", "result", "date", "python", "reproduce")


def by_subject(document):
    """The section's rows by (group, subject, baseline), as {column: cell}."""
    return {(row[1], row[2], row[4]): dict(zip(NAMES, row)) for row in rows(document)}


def test_a_first_run_fills_the_table_and_leaves_the_text_around_it():
    new = merge(DOCUMENT, [snapshot(), walk()])
    assert new.startswith(BEFORE + BEGIN + "\n") and new.endswith("\n" + END + AFTER)
    assert EMPTY not in new
    table = new[len(BEFORE + BEGIN) + 1:-len(END + AFTER) - 1].split("\n")
    assert table[0] == "| %s |" % " | ".join(COLUMNS)
    assert table[1] == "|%s|" % "|".join(["---"] * len(COLUMNS))
    assert table[2] == ("| test_ploop_bench.py | snapshot cycle | `disk_api` | 1.95 ms | "
                        "`ploop_cli` | 7.73 ms | 3.96x faster | at least 2.50x faster: Disk "
                        "API vs the ploop CLI | met | 2024-05-01 | 3.11.7 | `%s` |" % COMMAND)
    assert table[3] == ("| test_walk_bench.py | walk 200k | `walker` | 471 ms | `find_printf` "
                        "| 422 ms | 1.12x the time | at most 1.15x the time: find -printf, one "
                        "lstat per entry | met | 2024-05-01 | 3.11.7 | `make bench "
                        "PYTEST_ARGS=\"-k test_walk_bench\"` |")
    assert len(table) == 4


def test_a_partial_run_replaces_its_rows_and_keeps_the_others_with_their_dates():
    first = merge(DOCUMENT, [snapshot(), snapshot(baseline="bare_cffi", subject_median=0.00195,
                                                  baseline_median=0.00187, kind="at_most",
                                                  target=1.10), walk()])
    second = merge(first, [walk(median=0.5, date="2024-06-02")])
    before, after = by_subject(first), by_subject(second)
    assert set(after) == set(before) and len(after) == 3
    walked = after[("walk 200k", "`walker`", "`find_printf`")]
    assert (walked["subject_median"], walked["ratio"], walked["result"], walked["date"]) == \
        ("500 ms", "1.18x the time", "**not met**", "2024-06-02")
    for key in (("snapshot cycle", "`disk_api`", "`ploop_cli`"),
                ("snapshot cycle", "`disk_api`", "`bare_cffi`")):
        assert after[key] == before[key]
        assert after[key]["date"] == "2024-05-01"
    # The kept rows are the very lines they were, and nothing else moved.
    assert [line for line in second.split("\n") if "snapshot cycle" in line] == \
        [line for line in first.split("\n") if "snapshot cycle" in line]
    assert second.startswith(BEFORE) and second.endswith(AFTER)


def test_a_goal_measured_for_the_first_time_joins_the_table_in_order():
    first = merge(DOCUMENT, [walk()])
    second = merge(first, [snapshot()])
    assert [row[0] for row in rows(second)] == ["test_ploop_bench.py", "test_walk_bench.py"]
    assert merge(second, []) == second       # nothing measured: unchanged
    assert merge(DOCUMENT, []) == DOCUMENT


def test_cells_with_pipes_and_line_breaks_come_back_as_they_were_written():
    odd = walk()._replace(text="a | b\nc")
    document = merge(DOCUMENT, [odd])
    assert "a \\| b c" in document
    (row,) = rows(document)
    assert row[7] == "at most 1.15x the time: a | b c"
    assert merge(document, []) == document


def test_the_goal_is_judged_against_its_target():
    slow = snapshot(subject_median=0.004, baseline_median=0.008)
    (row,) = rows(merge(DOCUMENT, [slow]))
    assert (row[6], row[8]) == ("2.00x faster", "**not met**")
    fast = snapshot(kind="at_most", target=1.1, subject_median=0.0000021,
                    baseline_median=0.000002)
    (row,) = rows(merge(DOCUMENT, [fast]))
    assert (row[3], row[5], row[6], row[8]) == ("2.1 µs", "2 µs", "1.05x the time", "met")


def test_a_size_limit_is_judged_against_the_limit_and_shows_the_baseline_beside_it():
    def peak(subject_median):
        return Result("test_plugin_rss_bench.py", "peak RSS", "vz7_plugin", subject_median,
                      "reference_plugin", 30 << 20, "size_under", 64 * 10 ** 6,
                      "FD peak RSS", "2024-05-01", "3.11.7", COMMAND)
    (row,) = rows(merge(DOCUMENT, [peak(48 << 20)]))
    assert row[3:9] == ("48 MiB", "`reference_plugin`", "30 MiB", "0.79 of the limit",
                        "under 64 MB (61 MiB): FD peak RSS", "met")
    (row,) = rows(merge(DOCUMENT, [peak(64 * 10 ** 6)]))
    assert (row[3], row[6], row[8]) == ("61 MiB", "1.00 of the limit", "**not met**")


@pytest.mark.parametrize("document", [
    "# Benchmarks\n\nno markers\n",
    BEFORE + BEGIN + "\n" + EMPTY + "\n",
    BEFORE + END + "\n" + BEGIN + "\n",
    DOCUMENT + BEGIN + "\n" + END + "\n",
])
def test_a_document_without_its_markers_once_and_in_order_is_refused(document):
    with pytest.raises(SectionError, match="markers"):
        merge(document, [walk()])


def test_a_broken_row_is_refused_naming_its_line():
    document = DOCUMENT.replace(EMPTY, "| test_walk_bench.py | walk 200k | too few |")
    with pytest.raises(SectionError, match="line 8 .* 3 cells, not 12"):
        merge(document, [walk()])
