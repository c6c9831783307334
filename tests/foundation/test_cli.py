"""The ``edgeagent`` command as a user runs it: a subprocess."""

from __future__ import annotations

import tomllib
from pathlib import Path

from edgeagent import __version__
from edgeagent.profiles import list_profiles

from .notify import NotifySocket


def test_version(run_cli) -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"edgeagent {__version__}"


def test_no_command_prints_help_and_fails(run_cli) -> None:
    result = run_cli([])
    assert result.returncode == 2
    assert "run" in result.stderr and "config" in result.stderr


def test_config_show_with_profile_prints_merged_settings(run_cli, write_toml) -> None:
    empty = write_toml("")
    result = run_cli(["config", "show", "--config", str(empty), "--profile", "raspberry-pi-5"])
    assert result.returncode == 0, result.stderr
    assert "profile raspberry-pi-5" in result.stdout.splitlines()[0]
    shown = tomllib.loads(result.stdout)
    assert shown["profile"] == "raspberry-pi-5"
    assert shown["model"]["threads"] == 4
    assert shown["model"]["memory_budget_mb"] == 6144
    assert shown["governor"]["thermal_zone_paths"] == ["/sys/class/thermal/thermal_zone0/temp"]
    assert shown["governor"]["thermal_hot_c"] == 78.0
    assert shown["mqtt"]["port"] == 1883


def test_config_show_output_is_a_valid_config_file(run_cli, write_toml) -> None:
    first = run_cli(["config", "show", "--config", str(write_toml("")), "--profile", "x86-dev"])
    again = run_cli(["config", "show", "--config", str(write_toml(first.stdout, "shown.toml"))])
    assert again.returncode == 0, again.stderr
    assert tomllib.loads(again.stdout) == tomllib.loads(first.stdout)


def test_env_overrides_file_and_flag_overrides_env(run_cli, write_toml) -> None:
    config = write_toml('profile = "raspberry-pi-5"\n[mqtt]\nport = 1884\nhost = "file.lan"\n')

    def shown(env: dict[str, str], *flags: str) -> dict[str, object]:
        result = run_cli(["config", "show", "--config", str(config), *flags], env=env)
        assert result.returncode == 0, result.stderr
        mqtt: dict[str, object] = tomllib.loads(result.stdout)["mqtt"]
        return mqtt

    assert shown({})["port"] == 1884
    assert shown({"EDGEAGENT_MQTT__PORT": "1885"})["port"] == 1885
    assert shown({"EDGEAGENT_MQTT__PORT": "1885"}, "--set", "mqtt.port=1886")["port"] == 1886
    assert shown({"EDGEAGENT_MQTT__PORT": "1885"}, "--set", "mqtt.port=1886")["host"] == "file.lan"


def test_config_show_comments_describe_settings(run_cli, write_toml) -> None:
    result = run_cli(["config", "show", "--config", str(write_toml("")), "--comments"])
    assert result.returncode == 0
    assert "# Broker TCP port, 1-65535." in result.stdout


def test_invalid_config_exits_2_naming_file_and_field(run_cli, write_toml) -> None:
    config = write_toml('[mqtt]\nport = "high"\n')
    for command in (["config", "show"], ["config", "check"]):
        result = run_cli([*command, "--config", str(config)])
        assert result.returncode == 2
        assert result.stdout == ""
        assert f"edgeagent: error: {config}: mqtt.port: Input should be a valid integer" in (
            result.stderr
        )


def test_unknown_key_and_bad_toml_exit_2(run_cli, write_toml) -> None:
    unknown = write_toml("[daemon]\nshutdown_timeout = 3\n", "unknown.toml")
    result = run_cli(["config", "check", "--config", str(unknown)])
    assert result.returncode == 2
    assert f"{unknown}: daemon.shutdown_timeout: unknown setting" in result.stderr
    broken = write_toml("[daemon\n", "broken.toml")
    result = run_cli(["config", "check", "--config", str(broken)])
    assert result.returncode == 2
    assert f"{broken}: invalid TOML" in result.stderr


def test_run_with_invalid_config_starts_nothing(
    run_cli, write_toml, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    config = write_toml(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nport = 0\n')
    result = run_cli(
        ["run", "--config", str(config)], env={"NOTIFY_SOCKET": notify_socket.address}, timeout=30
    )
    assert result.returncode == 2
    assert f"{config}: mqtt.port: Input should be greater than or equal to 1" in result.stderr
    assert notify_socket.collect(0.2) == []
    assert not (tmp_path / "state").exists()


def test_run_with_unknown_stage_starts_nothing(
    run_cli, write_toml, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    config = write_toml(f'[daemon]\nstate_dir = "{tmp_path}"\nstages = ["no-such-stage"]\n')
    result = run_cli(
        ["run", "--config", str(config)], env={"NOTIFY_SOCKET": notify_socket.address}, timeout=30
    )
    assert result.returncode == 2
    assert "daemon.stages: unknown stage 'no-such-stage'" in result.stderr
    assert notify_socket.collect(0.2) == []


def test_config_check_ok(run_cli, write_toml) -> None:
    config = write_toml('profile = "jetson-orin-nano"\n')
    result = run_cli(["config", "check", "--config", str(config)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: defaults < profile jetson-orin-nano < ")


def test_profiles_list_and_show(run_cli) -> None:
    listing = run_cli(["profiles", "list"])
    assert listing.returncode == 0
    for name in list_profiles():
        assert any(line.startswith(name + " ") for line in listing.stdout.splitlines())
    shown = run_cli(["profiles", "show", "earbuds-hub"])
    assert shown.returncode == 0
    assert shown.stdout.startswith("# ") and "earbuds-hub.toml" in shown.stdout.splitlines()[0]
    assert tomllib.loads(shown.stdout)["name"] == "earbuds-hub"


def test_profiles_show_unknown_exits_2(run_cli) -> None:
    result = run_cli(["profiles", "show", "toaster"])
    assert result.returncode == 2
    assert "edgeagent: error: unknown hardware profile 'toaster'" in result.stderr


def test_invalid_profile_file_names_file_and_field(run_cli, tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "hw_profiles" / "raspberry-pi-5.toml"
    bad = tmp_path / "raspberry-pi-5.toml"
    bad.write_text(source.read_text().replace("threads = 4", 'threads = "four"'))
    result = run_cli(["profiles", "show", str(bad)])
    assert result.returncode == 2
    assert f"{bad}: cpu.threads: Input should be a valid integer" in result.stderr
