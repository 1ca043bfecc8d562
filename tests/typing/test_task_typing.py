"""@af.task keeps the function's signature and return type for type checkers."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

SAMPLE = Path(__file__).with_name("typed_flow_sample.py")
ROOT = Path(__file__).parents[2]


def test_mypy_sees_the_task_functions_parameters_and_results(tmp_path: Path) -> None:
    """mypy --strict reports exactly the marked lines of the sample (a misspelt parameter, a
    wrong type, a result assigned to the wrong type) and nothing else."""
    out, err, _ = api.run([
        "--strict", "--no-error-summary", "--show-error-codes", "--cache-dir",
        str(tmp_path / "cache"), "--config-file", str(ROOT / "pyproject.toml"), str(SAMPLE),
    ])  # fmt: skip
    assert not err, err
    got: dict[int, set[str]] = {}
    for line in out.splitlines():
        m = re.match(r".*typed_flow_sample\.py:(\d+): error: .*\[([a-z-]+)\]$", line)
        assert m or ": note:" in line, line
        if m:
            got.setdefault(int(m[1]), set()).add(m[2])
    expected = {
        number: {m[1]}
        for number, text in enumerate(SAMPLE.read_text().splitlines(), 1)
        if (m := re.search(r"# E: ([a-z-]+)", text))
    }
    assert got == expected, out
