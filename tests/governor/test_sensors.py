"""Sensor faults (must-show 4): no crash, one warning, a conservative tier.

Tests run as root here, so "permission denied" cannot come from file modes:
it is simulated twice — with a path that is a directory (EISDIR) and by
injecting ``PermissionError`` at the file-reading seam (``opener``), which
is where ``os.open`` would fail for an unprivileged daemon.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from edgeagent.governor.policy import PolicyConfig, PolicyState, decide
from edgeagent.governor.sensors import Opener, SensorReader, read_sysfs
from tests.governor.fake_sysfs import CAPACITY, STATUS, FakeSysfs, zone

LADDER = ("full", "e2b", "economy", "suspend")
CONFIG = PolicyConfig(ladder=LADDER, has_battery=True, min_dwell_s=0)


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    fake = FakeSysfs(tmp_path)
    fake.battery(80, "Discharging")
    fake.temperature(45.5, 0)
    fake.temperature(51.0, 1, "gpu-thermal")
    return fake


def reader(sysfs: FakeSysfs, opener: Opener = read_sysfs) -> SensorReader:
    return SensorReader(CAPACITY, STATUS, [zone(0), zone(1)], root=sysfs.root, opener=opener)


def test_reads_battery_and_the_hottest_zone(sysfs: FakeSysfs) -> None:
    sensors = reader(sysfs)
    readings = sensors.read()
    assert (readings.battery_percent, readings.charging, readings.temperature_c) == (80, False, 51)
    assert readings.thermal_complete
    assert sensors.zone_type(sysfs.path(zone(1))) == "gpu-thermal"
    sysfs.battery(100, "Full")
    assert sensors.read().charging is True
    assert decide(sensors.read(), PolicyState("full"), CONFIG).rung == "full"


def _corrupt(sysfs: FakeSysfs, fault: str, path: Path) -> None:
    target = sysfs.path(path)
    if fault == "missing":
        target.unlink()
    elif fault == "directory":  # EISDIR: what root gets where a user would get EACCES
        target.unlink()
        target.mkdir()
    elif fault == "garbage":
        target.write_bytes(b"\xff\xfeno\x00number")
    elif fault == "text":
        target.write_text("eighty\n")
    elif fault == "out_of_range":
        target.write_text("250000\n" if "thermal" in str(path) else "140\n")


FAULTS = ["missing", "directory", "garbage", "text", "out_of_range"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_battery_fault_is_unknown_with_one_warning(
    sysfs: FakeSysfs, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    sensors = reader(sysfs)
    _corrupt(sysfs, fault, CAPACITY)
    with caplog.at_level(logging.WARNING, "edgeagent.governor"):
        polls = [sensors.read() for _ in range(5)]
    assert all(r.battery_percent is None for r in polls)
    assert all(r.temperature_c == 51 for r in polls)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(sysfs.path(CAPACITY)) in warnings[0].getMessage()
    decision = decide(polls[-1], PolicyState("full"), CONFIG)
    assert (decision.rung, decision.reason) == ("e2b", "battery_unknown")


@pytest.mark.parametrize("fault", FAULTS)
def test_a_thermal_fault_is_unknown_with_one_warning(
    sysfs: FakeSysfs, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    sensors = reader(sysfs)
    _corrupt(sysfs, fault, zone(1))
    with caplog.at_level(logging.WARNING, "edgeagent.governor"):
        polls = [sensors.read() for _ in range(5)]
    assert all(r.temperature_c == 45.5 and not r.thermal_complete for r in polls)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    decision = decide(polls[-1], PolicyState("full"), CONFIG)
    assert (decision.rung, decision.reason) == ("e2b", "thermal_unknown")


def test_permission_denied_at_the_reading_seam(
    sysfs: FakeSysfs, caplog: pytest.LogCaptureFixture
) -> None:
    denied = sysfs.path(STATUS)

    def opener(path: Path) -> str:
        if path == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read_sysfs(path)

    sensors = reader(sysfs, opener=opener)
    with caplog.at_level(logging.WARNING, "edgeagent.governor"):
        polls = [sensors.read() for _ in range(3)]
    assert all(r.charging is None and r.battery_percent == 80 for r in polls)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Permission denied" in warnings[0]
    # unknown charging is treated as discharging: the low threshold applies
    sysfs.battery(25)
    assert decide(sensors.read(), PolicyState("full"), CONFIG).reason == "battery_low"


def test_a_sensor_that_recovers_warns_again_only_after_a_new_fault(
    sysfs: FakeSysfs, caplog: pytest.LogCaptureFixture
) -> None:
    sensors = reader(sysfs)
    with caplog.at_level(logging.INFO, "edgeagent.governor"):
        sysfs.path(CAPACITY).unlink()
        sensors.read()
        sensors.read()
        sysfs.battery(70)
        assert sensors.read().battery_percent == 70
        sysfs.path(CAPACITY).write_text("x\n")
        sensors.read()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("gives no reading" in m for m in messages) == 2
    assert sum("reads again" in m for m in messages) == 1


def test_no_battery_and_no_zones_mean_no_readings_and_no_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sensors = SensorReader(None, None, [], root=tmp_path)
    with caplog.at_level(logging.WARNING):
        readings = sensors.read()
    assert not sensors.has_battery
    assert (readings.battery_percent, readings.temperature_c) == (None, None)
    assert readings.thermal_complete and not caplog.records
