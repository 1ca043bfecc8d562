"""Checked by test_task_typing.py with mypy --strict: each line marked ``# E: <code>`` must get
that error, and no other line any error."""

from __future__ import annotations

import msgspec

import actorflow as af


class Rows(msgspec.Struct):
    rows: list[int]


@af.task
async def extract(ctx: af.TaskContext, source: str, limit: int = 10) -> Rows:
    return Rows(rows=list(range(limit)))


@af.task(retry=af.Retry.constant(0, max_attempts=2))
def load(ctx: af.TaskContext, rows: Rows) -> int:
    return len(rows.rows)


e = extract("e", source="db")
ok = load("l", rows=e.output())
tuned = extract.with_options(timeout=5.0)("e2", source="db", limit=3)
step: af.runtime.Call[Rows] = e
count: af.runtime.Call[int] = ok


def typed(done: af.Execution) -> None:
    rows: Rows = done.output(e)
    n: int = done.output(ok)
    print(rows, n)


bad_name = extract("e", sourc="db")  # E: call-arg
bad_type = extract("e", source="db", limit="ten")  # E: arg-type


def wrong(done: af.Execution) -> None:
    text: str = done.output(ok)  # E: assignment
    print(text)
