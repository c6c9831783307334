"""Every hardware profile in hw_profiles/ loads, validates and feeds valid settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edgeagent.config import load_settings
from edgeagent.profiles import BatteryProfile, list_profiles, load_profile, profiles_dir

FOLDER = Path(__file__).resolve().parents[2] / "hw_profiles"
FILES = sorted(FOLDER.glob("*.toml"))
REQUIRED = {
    "raspberry-pi-5",
    "raspberry-pi-4",
    "rockchip-rk3588",
    "jetson-orin-nano",
    "glasses-reference",
    "earbuds-hub",
    "x86-dev",
}
ILLUSTRATIVE = {"glasses-reference", "earbuds-hub"}


def test_the_folder_is_where_profiles_are_found() -> None:
    assert profiles_dir() == FOLDER
    assert list_profiles() == [f.stem for f in FILES]
    assert set(list_profiles()) >= REQUIRED


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_profile_loads_and_validates(path: Path) -> None:
    profile = load_profile(path.stem)
    assert profile.name == path.stem
    assert profile.cpu.threads <= profile.cpu.cores
    assert profile.memory.budget_mb <= profile.memory.total_mb
    assert profile.model.tiers
    assert profile.thermal.warm_c <= profile.thermal.hot_c <= profile.thermal.critical_c
    assert profile.audio.device and profile.camera.device
    # The layer it supplies is valid settings, and it arrives unchanged.
    s = load_settings(None, {"profile": path.stem}, default_config_path=Path("/nonexistent"))
    assert s.model.threads == profile.cpu.threads
    assert s.model.memory_budget_mb == profile.memory.budget_mb
    assert s.model.allowed_tiers == profile.model.tiers
    assert s.model.kernels == "quantized"  # boards run the fast kernels unless told otherwise
    assert s.governor.thermal_zone_paths == profile.thermal.zone_paths
    assert s.camera.enabled == (profile.camera.device != "none")


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_profile_says_where_its_numbers_come_from(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    profile = load_profile(path.stem)
    assert profile.sources
    assert text.startswith("#"), "a comment explains the board and its sources"
    if path.stem in ILLUSTRATIVE:
        assert profile.illustrative
        assert "ILLUSTRATIVE" in text and "Reasoning" in text
        assert isinstance(profile.battery, BatteryProfile)
    else:
        assert not profile.illustrative


def test_mains_powered_boards_say_battery_none() -> None:
    for name in ("raspberry-pi-5", "raspberry-pi-4", "rockchip-rk3588", "jetson-orin-nano"):
        assert tomllib.loads((FOLDER / f"{name}.toml").read_text())["battery"] == "none"
        s = load_settings(None, {"profile": name}, default_config_path=Path("/nonexistent"))
        assert s.governor.battery_capacity_path is None


def test_wearables_are_tight() -> None:
    glasses = load_profile("glasses-reference")
    assert glasses.memory.total_mb <= 4096
    assert "full" not in glasses.model.tiers
    assert glasses.thermal.critical_c < load_profile("raspberry-pi-5").thermal.warm_c


def test_name_must_match_file(tmp_path: Path) -> None:
    bad = tmp_path / "other.toml"
    bad.write_text((FOLDER / "x86-dev.toml").read_text())
    with pytest.raises(Exception, match="differs from the file name"):
        load_profile(str(bad))
