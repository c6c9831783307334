"""A fake sysfs tree: a battery power supply and thermal zones under a temporary root."""

from __future__ import annotations

from pathlib import Path

CAPACITY = Path("/sys/class/power_supply/BAT0/capacity")
STATUS = Path("/sys/class/power_supply/BAT0/status")


def zone(n: int) -> Path:
    return Path(f"/sys/class/thermal/thermal_zone{n}/temp")


class FakeSysfs:
    """Writes sensor files the way the kernel presents them (values with a newline)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def write(self, path: Path, text: str) -> None:
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text + "\n", encoding="ascii")
        tmp.replace(target)  # atomic, like a sysfs read: never half a value

    def battery(self, percent: int, status: str = "Discharging") -> None:
        self.write(CAPACITY, str(percent))
        self.write(STATUS, status)

    def temperature(self, celsius: float, n: int = 0, kind: str = "cpu-thermal") -> None:
        self.write(zone(n), str(round(celsius * 1000)))
        self.write(zone(n).with_name("type"), kind)
