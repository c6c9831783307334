"""``edgeagent governor simulate``: a trace in, the tier timeline out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeagent.cli import main

TRACE = """\
t,battery_percent,charging,temperature_c
0,80,false,45
60,50,false,50
120,38,false,56
180,42,false,54
240,45,false,50
360,18,false,50
480,18,true,70
490,30,true,58
600,60,true,45
"""


def simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[list[str]]:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    assert main(["governor", "simulate", "--trace", str(trace), *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["time_s", "tier", "reason"]
    return [line.split() for line in lines[2:]]


def test_timeline_on_a_battery_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = simulate(
        tmp_path, capsys, "--profile", "glasses-reference", "--set", "governor.min_dwell_s=60"
    )
    assert rows == [
        ["0.0", "e2b", "steady"],
        ["120.0", "economy", "thermal_warm"],
        ["240.0", "e2b", "recovered"],
        ["360.0", "economy", "battery_critical"],
        ["480.0", "suspend", "thermal_critical", "(at", "once)"],
        ["600.0", "e2b", "recovered"],
    ]


def test_a_mains_board_ignores_the_battery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = simulate(tmp_path, capsys, "--profile", "raspberry-pi-5")
    assert rows == [["0.0", "full", "steady"]]


def test_a_bad_trace_is_an_error_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("t,battery_percent\n0,50\n1,fifty\n")
    assert main(["governor", "simulate", "--trace", str(trace)]) == 2
    assert "line 3" in capsys.readouterr().err
