"""Hardware profiles: what a board has, as data (``hw_profiles/*.toml``).

A profile names the CPU threads to use, the memory budget, the model tiers the
board may run, its battery (or ``battery = "none"``) and thermal sensors with
thresholds, and default audio and camera devices. It feeds the settings layer
just above the built-in defaults (:meth:`HardwareProfile.settings_layer`).

Where the files are: one set, the top-level ``hw_profiles/`` folder. A wheel
carries it as package data in ``edgeagent/hw_profiles/`` (see ``setup.py``); a
source checkout or editable install reads the folder beside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeagent.errors import ProfileError
from edgeagent.settings import Name
from edgeagent.tomlfile import read_toml, validation_messages

_PACKAGE_DIR = Path(__file__).resolve().parent
_STRICT = ConfigDict(frozen=True, extra="forbid")


class CpuProfile(BaseModel):
    model_config = _STRICT

    cores: int = Field(ge=1, le=256, description="CPU cores on the board.")
    threads: int = Field(ge=1, le=256, description="Threads for the numeric kernels.")
    summary: str = Field(description="The cores, e.g. '4x Cortex-A76 @ 2.4 GHz'.")


class MemoryProfile(BaseModel):
    model_config = _STRICT

    total_mb: int = Field(ge=64, description="RAM of the variant described, MiB.")
    budget_mb: int = Field(ge=64, description="Resident memory edgeagent may use, MiB.")

    @model_validator(mode="after")
    def _budget_fits(self) -> Self:
        if self.budget_mb > self.total_mb:
            raise ValueError("budget_mb must not exceed total_mb")
        return self


class ModelProfile(BaseModel):
    model_config = _STRICT

    tiers: tuple[Name, ...] = Field(
        min_length=1, description="Tiers the board may run, largest first."
    )
    kernels: Literal["reference", "quantized"] = Field(
        "quantized",
        description="Engine kernels: quantized (4-bit weights, int8 activations) on every real "
        "board; reference (numpy float32) only to check results.",
    )


class BatteryProfile(BaseModel):
    model_config = _STRICT

    capacity_path: Path = Field(description="sysfs file: charge in percent.")
    status_path: Path = Field(description="sysfs file: Charging/Discharging/Full.")
    capacity_mah: int | None = Field(None, ge=1, description="Nominal capacity, mAh.")
    low_percent: int = Field(ge=0, le=100)
    critical_percent: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.critical_percent > self.low_percent:
            raise ValueError("critical_percent must not exceed low_percent")
        return self


class ThermalProfile(BaseModel):
    model_config = _STRICT

    zone_paths: tuple[Path, ...] = Field(min_length=1, description="sysfs millidegree files.")
    warm_c: float = Field(ge=0, le=150)
    hot_c: float = Field(ge=0, le=150)
    critical_c: float = Field(ge=0, le=150)
    hysteresis_c: float = Field(ge=0, le=30)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.warm_c <= self.hot_c <= self.critical_c:
            raise ValueError("need warm_c <= hot_c <= critical_c")
        return self


class AudioProfile(BaseModel):
    model_config = _STRICT

    device: str = Field(min_length=1, description="Default capture device (ALSA PCM name).")


class CameraProfile(BaseModel):
    model_config = _STRICT

    device: str = Field(min_length=1, description='Default camera, or "none" for no camera.')
    width: int | None = Field(None, ge=64, le=4096, description="Frame width cap, pixels.")
    height: int | None = Field(None, ge=64, le=4096, description="Frame height cap, pixels.")
    max_fps: float | None = Field(
        None, gt=0, le=60, description="Frames per second offered to the frame gate."
    )


class HardwareProfile(BaseModel):
    """One board, validated; ``name`` equals the file's stem."""

    model_config = _STRICT

    name: Name
    description: str = Field(min_length=1)
    illustrative: bool = Field(
        description="True for reference designs whose numbers are reasoned, not measured."
    )
    sources: tuple[str, ...] = Field(
        min_length=1, description="Where the numbers come from (spec sheets, reasoning)."
    )
    cpu: CpuProfile
    memory: MemoryProfile
    model: ModelProfile
    battery: Literal["none"] | BatteryProfile
    thermal: ThermalProfile
    audio: AudioProfile
    camera: CameraProfile

    @model_validator(mode="after")
    def _threads_fit(self) -> Self:
        if self.cpu.threads > self.cpu.cores:
            raise ValueError("cpu.threads must not exceed cpu.cores")
        return self

    def settings_layer(self) -> dict[str, Any]:
        """The settings this profile supplies, as a partial settings mapping."""
        governor: dict[str, Any] = {
            "thermal_zone_paths": [str(p) for p in self.thermal.zone_paths],
            "thermal_warm_c": self.thermal.warm_c,
            "thermal_hot_c": self.thermal.hot_c,
            "thermal_critical_c": self.thermal.critical_c,
            "hysteresis_c": self.thermal.hysteresis_c,
        }
        if isinstance(self.battery, BatteryProfile):
            governor |= {
                "battery_capacity_path": str(self.battery.capacity_path),
                "battery_status_path": str(self.battery.status_path),
                "battery_low_percent": self.battery.low_percent,
                "battery_critical_percent": self.battery.critical_percent,
            }
        camera: dict[str, Any] = (
            {"enabled": False}
            if self.camera.device == "none"
            else self.camera.model_dump(exclude_none=True)  # device and the caps it sets
        )
        return {
            "model": {
                "threads": self.cpu.threads,
                "memory_budget_mb": self.memory.budget_mb,
                "allowed_tiers": list(self.model.tiers),
                "kernels": self.model.kernels,
            },
            "audio": {"device": self.audio.device},
            "camera": camera,
            "governor": governor,
        }


def profiles_dir() -> Path:
    """The folder holding the bundled profiles (installed package data or the checkout)."""
    for candidate in (_PACKAGE_DIR / "hw_profiles", _PACKAGE_DIR.parent / "hw_profiles"):
        if candidate.is_dir():
            return candidate
    raise ProfileError(f"no hw_profiles folder next to {_PACKAGE_DIR}: the install is incomplete")


def list_profiles() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def profile_path(name_or_path: str) -> Path:
    """The file for a bundled profile name, or ``name_or_path`` itself if it names a file."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        return Path(name_or_path)
    path = profiles_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_profiles())
        raise ProfileError(f"unknown hardware profile {name_or_path!r} (known: {known})")
    return path


def load_profile(name_or_path: str) -> HardwareProfile:
    """Read and validate a profile; errors name the file and the field."""
    path = profile_path(name_or_path)
    data = read_toml(path, ProfileError)
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError("\n".join(f"{path}: {m}" for m in validation_messages(exc))) from exc
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name: {profile.name!r} differs from the file name")
    return profile
