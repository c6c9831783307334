"""Packaging: one version, the extras, and profiles and the compiled module inside a
non-editable wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import edgeagent

REPO = Path(__file__).resolve().parents[2]


def test_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert project["dynamic"] == ["version"]  # the version lives in edgeagent/__init__.py only
    assert project["scripts"] == {"edgeagent": "edgeagent.cli:main"}
    extras = project["optional-dependencies"]
    assert extras["audio"] == ["pyaudio"]
    assert extras["camera"] == ["opencv-python-headless>=4.9"]
    # the camera tests read real video files: the test extra brings the camera extra's OpenCV
    assert {"pytest", "pytest-asyncio", "hypothesis", "tomli-w", "opencv-python-headless"} <= {
        dep.split(">")[0].split("=")[0] for dep in extras["test"]
    }
    assert edgeagent.__version__ == "0.1.0"


def test_top_level_folders_exist() -> None:
    for folder in (
        "edgeagent",
        "configs",
        "hw_profiles",
        "systemd",
        "tests",
        "scripts",
        "benchmarks",
    ):
        assert (REPO / folder).is_dir(), folder


def test_wheel_carries_profiles_and_finds_them(tmp_path: Path) -> None:
    """Build a wheel offline from a copy of the tree, install it plainly, ask it for profiles."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("edgeagent", "hw_profiles"):
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = dist.glob("edgeagent-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    profiles = sorted(p.stem for p in (REPO / "hw_profiles").glob("*.toml"))
    assert (
        sorted(
            Path(n).stem
            for n in names
            if n.startswith("edgeagent/hw_profiles/") and n.endswith(".toml")
        )
        == profiles
    )
    assert "edgeagent/cli.py" in names and "edgeagent/commands/run.py" in names
    # the decode glue, compiled from edgeagent/engine/_glue.c by the wheel build
    assert any(n.startswith("edgeagent/engine/_glue.") and n.endswith(".so") for n in names)

    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    probe = (
        "import edgeagent, edgeagent.profiles as p, edgeagent.engine._glue; "
        "print(edgeagent.__file__); print(p.profiles_dir()); print(','.join(p.list_profiles()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file, folder, names_line = result.stdout.splitlines()
    assert module_file.startswith(str(site))
    assert folder == str(site / "edgeagent" / "hw_profiles")
    assert names_line.split(",") == profiles
