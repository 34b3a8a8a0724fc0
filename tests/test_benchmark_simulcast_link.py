"""benchmarks/simulcast_link.py without its lab: its options, and the table it writes.

The measurement itself needs root, network namespaces and three Chromium browsers: it is a
benchmark, run by hand (``python benchmarks/simulcast_link.py``), not here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "simulcast_link.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simulcast_link", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_help_lists_the_options() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--rounds", "--shaped", "--climb-limit", "--rest", "--quick", "--no-write"):
        assert option in done.stdout


def test_quick_is_one_short_round(bench: ModuleType) -> None:
    args = bench.parse(["--quick"])
    assert (args.rounds, args.shaped) == (1, 8.0)
    args = bench.parse(["--quick", "--shaped", "5"])
    assert (args.rounds, args.shaped) == (1, 5.0)
    args = bench.parse([])
    assert (args.rounds, args.shaped, args.no_write) == (3, 20.0, False)


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--shaped", "0"], ["--climb-limit", "-1"]])
def test_bounds_are_checked(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.parse(argv)
    assert raised.value.code == 2


def make(bench: ModuleType, down: float | None, up: float | None, frozen: float) -> object:
    """A round that went down after *down* s, back up after *up* s, frozen *frozen* s of 20."""
    return bench.Round(
        rates=(55_000.0, 95_000.0, 195_000.0),
        link=75_000,
        sfu_down=down,
        page_down=down,
        sfu_up=up,
        page_up=up,
        slow=bench.Window(seconds=20.0, frozen=frozen, freezes=2, fps=12.0),
        free=bench.Window(seconds=20.0, frozen=0.0, freezes=0, fps=15.0),
        settled=None if down is None else bench.Window(18.0, 0.18, 1, 12.0),
        layers={"q": 0.75, "h": 0.1, "f": 0.15, "none": 0.0},
    )


def test_table_gives_rounds_and_medians(bench: ModuleType) -> None:
    rounds = [make(bench, 1.0, 3.0, 0.2), make(bench, 2.0, None, 0.4), make(bench, None, 5.0, 1.0)]
    lines = bench.table(rounds, bench.parse([]))
    cells = [line.strip().lstrip("*").strip().removeprefix("- ") for line in lines[3:]]
    columns = 8
    assert len(cells) == columns * (len(rounds) + 2)  # the header, the rounds, the medians
    median = cells[-columns:]
    assert median[0] == "median"
    assert median[2] == "1.5 (1 > 20) / 1.5 (1 > 20)"  # the two rounds that went down
    assert median[3] == "4.0 (1 > 30) / 4.0 (1 > 30)"
    assert median[4] == "2.0% / 0.0%"
    assert median[5] == "1.0%"
    assert median[6] == "12.0 / 15.0 (0.80)"
    assert cells[columns * 3 + 2] == "> 20 / > 20"  # the third round never went down
    assert cells[columns * 3 + 5] == "-"


def test_goals_say_met_or_not(bench: ModuleType) -> None:
    args = bench.parse([])
    good = " ".join(bench.goals([make(bench, 1.0, 3.0, 0.1)], args))
    assert "1.0 s (met: goal 2 s)" in good
    assert "3.0 s (met: goal 10 s)" in good
    assert "frozen 0.5% of its shaped time (met: goal under 1%)" in good
    rounds = [make(bench, 1.0, 12.0, 0.2), make(bench, None, None, 0.4)]
    bad = " ".join(bench.goals(rounds, args))
    assert "1.0 s (not met: goal 2 s; 1 round(s) beyond 20 s)" in bad
    assert "12.0 s (not met: goal 10 s; 1 round(s) beyond 30 s)" in bad
    assert "frozen 1.5% of its shaped time (not met: goal under 1%)" in bad
