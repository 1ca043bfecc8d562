"""The README's Performance table (``benchmarks/report.py``), from a small synthetic result
set: every required row appears, and a missing one is an error, never a shorter table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

SIZES = ("1,000", "10,000", "100,000")

#: One metric per required row, as the modules label them in a full run.
METRICS: list[tuple[str, str]] = [
    ("durable", "(2) one execution of 1,000 sequential tasks, SQLite (10 per process, one after"
                " another) vs the naive durable loop"),
    ("durable", "(2) one execution of 1,000 sequential tasks, SQLite (10 per process, one after"
                " another): CPU per task run, actorflow"),
    ("durable", "(2) one execution of 1,000 sequential tasks, SQLite (10 per process, one after"
                " another): CPU per task run, naive loop"),
    ("durable", "(3) 10,000 concurrent executions x 5 tasks, SQLite vs the naive durable loop"),
    ("durable", "(3) 10,000 concurrent executions x 5 tasks, SQLite: CPU per task run, actorflow"),
    ("durable", "(3) 10,000 concurrent executions x 5 tasks, SQLite: CPU per task run, naive loop"),
    ("durable", "loop lag p99, 3,000 executions x 5 tasks in flight"),
    ("tracing", "seq 1000 tasks on SQLite, tracing off"),
    ("tracing", "seq 1000 tasks on SQLite, tracing on"),
    ("tracing", "seq 1000 tasks in memory, tracing on"),
    ("tracing", "1000 concurrent 5-task executions, tracing on"),
    *(("growth", f"ForEach of {n} values, concurrency 10") for n in SIZES),
    *(("growth", f"ForEach of {n} values, unlimited") for n in SIZES),
    *(("growth", f"Parallel of {n} tasks, unlimited") for n in SIZES),
    *(("growth", f"{n} concurrent executions x 5 tasks, memory: per task run") for n in SIZES),
    *(("growth", f"{n} concurrent executions x 5: loop lag p99") for n in SIZES),
    ("growth", "outputs of 1 KB, SQLite: per execution"),
    ("growth", "outputs of 100 KB, SQLite: per execution"),
    ("growth", "outputs of 1 MB, SQLite: per execution"),
    ("queries", "executions(state=FAILED) p50 at 100,000 executions"),
    ("queries", "executions(namespace=) p50 at 100,000 executions"),
    ("queries", "unfinished scan (recover=True) at 100,000 executions"),
    ("postgres", "(2) 1,000 sequential tasks: PostgreSQL vs SQLite"),
    ("postgres", "(2) 1,000 sequential tasks: CPU per task run, PostgreSQL"),
    ("postgres", "(2) 1,000 sequential tasks: CPU per task run, SQLite"),
    ("postgres", "(3) 10,000 concurrent executions x 5 tasks: PostgreSQL vs SQLite"),
    ("postgres", "(3) 10,000 concurrent executions x 5 tasks: CPU per task run, PostgreSQL"),
    ("postgres", "(3) 10,000 concurrent executions x 5 tasks: CPU per task run, SQLite"),
    ("workers", "(a) SQLite, 2000 executions x 5 tasks, median of 3, 2 workers vs 1"),
    ("workers", "(a) SQLite, 2000 executions x 5 tasks, median of 3, 1 worker: CPU s per 1,000"
                " task runs (workers)"),
    ("workers", "(b) SQLite, submit -> start through the queue p99 (200)"),
    ("workers", "(a) PostgreSQL, 2000 executions x 5 tasks, median of 3, 1 worker"),
    ("workers", "(a) PostgreSQL, 2000 executions x 5 tasks, median of 3, 2 workers vs 1"),
    ("workers", "(a) PostgreSQL, 2000 executions x 5 tasks, median of 3, 4 workers vs 1"),
    ("workers", "(b) PostgreSQL, submit -> start through the queue p99 (200)"),
]  # fmt: skip


def _row(benchmark: str, metric: str, i: int) -> dict[str, Any]:
    return {"benchmark": benchmark, "metric": metric, "ours": 100.0 + i, "baseline": 200.0,
            "ratio": 0.5, "unit": "task runs/s", "spread": [90.0 + i, 110.0 + i], "runs": 3,
            "main_process_us": 95.0, "writer_process_us": 66.0}  # fmt: skip


def _data(metrics: list[tuple[str, str]], quick: bool = False) -> dict[str, Any]:
    return {
        "machine": {
            "python": "3.11.7",
            "platform": "Linux-x86_64",
            "cpus": 2,
            "sqlite": "3.40.1",
            "when": "2026-12-02 07:00 UTC",
            "quick": quick,
            "load_average_start": 0.5,
            "load_average_end": 1.5,
            "total_seconds": 420.0,
        },
        "rows": [_row(b, m, i) for i, (b, m) in enumerate(metrics)],
    }


def test_every_required_row_is_in_the_table_with_its_figures() -> None:
    """Each required row appears once, with its spread, CPU columns, machine and reproduce
    lines."""
    table = report.markdown(_data(METRICS))
    for _, metric in METRICS:
        assert sum(line.startswith(f"| {metric} |") for line in table.splitlines()) == 1
    assert "| (3) 10,000 concurrent executions x 5 tasks, SQLite vs the naive durable loop | "\
        "103 task runs/s [93.0-113] | naive loop: 200 | 0.50x | 95.0 + writer 66.0 = 161 | 3 |" \
        in table  # fmt: skip
    assert "Python 3.11.7, SQLite 3.40.1" in table
    assert "load average (1 min) 0.50 -> 1.50" in table
    assert "`make bench` took 7.0 min" in table
    assert "Reproduce: `make bench`" in table


@pytest.mark.parametrize("missing", range(len(METRICS)), ids=lambda i: METRICS[i][1][:60])
def test_a_missing_required_row_is_an_error(missing: int) -> None:
    """Dropping any one required row makes the generator refuse, naming the row's pattern."""
    metrics = METRICS[:missing] + METRICS[missing + 1 :]
    with pytest.raises(report.MissingRows, match=METRICS[missing][0]):
        report.markdown(_data(metrics))


def test_a_quick_run_needs_no_largest_growth_size() -> None:
    """A ``--quick`` result set (growth at 1,000 and 10,000 only) still gives a table."""
    metrics = [m for m in METRICS if not m[1].startswith(("ForEach of 100,000", "Parallel of "
               "100,000", "100,000 concurrent"))]  # fmt: skip
    assert "smoke-run sizes" in report.markdown(_data(metrics, quick=True))
    with pytest.raises(report.MissingRows, match="100,000"):
        report.markdown(_data(metrics))


def test_a_module_skipped_here_is_named_in_the_table_not_required() -> None:
    """Without PostgreSQL its rows are not required and the table says why they are absent."""
    metrics = [m for m in METRICS if m[0] != "postgres"]
    data = _data(metrics)
    data["rows"].append({"benchmark": "postgres", "metric": "skipped",
                         "note": "no PostgreSQL: initdb not found"})  # fmt: skip
    assert "| postgres skipped: no PostgreSQL: initdb not found |" in report.markdown(data)


def test_a_workload_that_failed_shows_why() -> None:
    """A NaN figure (a growth workload past its time limit) is shown as n/a with its note."""
    data = _data(METRICS)
    failed = next(r for r in data["rows"] if r["metric"] == "ForEach of 100,000 values, unlimited")
    failed.update(ours=math.nan, note="did not finish within 300 s", spread=None)
    table = report.markdown(data)
    assert "| ForEach of 100,000 values, unlimited (did not finish within 300 s) | n/a" in table


def test_the_command_line_writes_the_table_and_fails_on_a_missing_row(tmp_path: Path) -> None:
    """``python -m benchmarks.report JSON -o FILE`` writes the table; exit 1 when incomplete."""
    good, bad, out = tmp_path / "all.json", tmp_path / "bad.json", tmp_path / "table.md"
    good.write_text(json.dumps(_data(METRICS)))
    bad.write_text(json.dumps(_data(METRICS[1:])))
    assert report.main([str(good), "-o", str(out)]) == 0
    assert out.read_text() == report.markdown(_data(METRICS))
    assert report.main([str(bad), "-o", str(tmp_path / "none.md")]) == 1
    assert not (tmp_path / "none.md").exists()


def test_tracing_rows_show_their_runs_as_the_spread_and_their_cpu() -> None:
    """benchmarks/tracing.py's rows (every run's rate under ``runs``, CPU under
    ``cpu_us_per_task_run``) get a spread, a run count and a CPU figure like the others."""
    data = _data(METRICS)
    traced = next(r for r in data["rows"] if r["metric"] == "seq 1000 tasks on SQLite, tracing on")
    for key in ("spread", "main_process_us", "writer_process_us"):
        del traced[key]
    traced.update(ours=7125.0, runs=[6117, 7125, 10476], cpu_us_per_task_run=138.0)
    line = "| seq 1000 tasks on SQLite, tracing on | 7,125 task runs/s [6,117-10,476] | "
    assert line + "tracing off: 200 | 0.50x | 138 | 3 |" in report.markdown(data)
