"""Settings layers, in process: defaults < profile < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edgeagent.config import load, load_settings, overrides_from_pairs
from edgeagent.errors import ConfigError, ProfileError
from edgeagent.settings import SECTIONS, Settings
from edgeagent.settings_text import render

NO_DEFAULT_FILE = Path("/nonexistent/edgeagent.toml")


def settings(config: Path | None = None, **cli: object) -> Settings:
    return load_settings(config, cli, default_config_path=NO_DEFAULT_FILE)


def test_sections_are_one_model_per_subsystem() -> None:
    assert SECTIONS == (
        "model",
        "audio",
        "voice",
        "camera",
        "mqtt",
        "governor",
        "daemon",
        "logging",
    )


def test_defaults() -> None:
    s = settings()
    assert s.profile is None
    assert s.model.kernels == "reference"
    assert s.model.tier == "auto"
    assert s.model.max_context == 4096
    assert s.model.path is None
    assert s.mqtt.port == 1883
    assert s.daemon.state_dir == Path("/var/lib/edgeagent")
    assert s.model.threads >= 1  # 0 resolves to every online core without a profile


def test_every_layer_in_order(write_toml, monkeypatch: pytest.MonkeyPatch) -> None:
    # model.threads: 0 default -> 4 from the profile -> 3 from the file -> 2 env -> 1 flag
    assert settings(profile="raspberry-pi-5").model.threads == 4
    config = write_toml('profile = "raspberry-pi-5"\n[model]\nthreads = 3\n')
    assert settings(config).model.threads == 3
    monkeypatch.setenv("EDGEAGENT_MODEL__THREADS", "2")
    assert settings(config).model.threads == 2
    assert settings(config, model={"threads": 1}).model.threads == 1


def test_profile_fills_what_the_file_leaves(write_toml) -> None:
    config = write_toml('profile = "glasses-reference"\n[mqtt]\nhost = "broker.lan"\n')
    s = settings(config)
    assert s.mqtt.host == "broker.lan"
    assert s.model.allowed_tiers == ("e2b", "economy")
    assert s.model.memory_budget_mb == 2304
    assert s.governor.battery_capacity_path == Path("/sys/class/power_supply/battery/capacity")
    assert s.governor.thermal_warm_c == 55.0


def test_profile_chosen_by_env_and_overridden_by_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEAGENT_PROFILE", "earbuds-hub")
    assert settings().profile == "earbuds-hub"
    assert settings().camera.enabled is False
    assert settings(profile="raspberry-pi-4").model.allowed_tiers == ("e2b", "economy")


def test_env_nested_delimiter_and_json_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEAGENT_MQTT__HOST", "broker.example")
    monkeypatch.setenv("EDGEAGENT_DAEMON__STAGES", '["a", "b"]')
    s = settings()
    assert s.mqtt.host == "broker.example"
    assert s.daemon.stages == ("a", "b")


def test_settings_are_immutable() -> None:
    s = settings()
    with pytest.raises(ValidationError):
        s.mqtt.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.profile = "x"  # type: ignore[misc]
    assert isinstance(s.daemon.stages, tuple)


def test_default_config_file_is_read_when_present(tmp_path: Path) -> None:
    default = tmp_path / "edgeagent.toml"
    assert load_settings(default_config_path=default).mqtt.port == 1883
    default.write_text("[mqtt]\nport = 1999\n")
    assert load_settings(default_config_path=default).mqtt.port == 1999
    explicit = tmp_path / "other.toml"
    explicit.write_text("[mqtt]\nport = 2000\n")
    assert load_settings(explicit, default_config_path=default).mqtt.port == 2000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[mqtt]\nport = "high"\n', "mqtt.port: Input should be a valid integer"),
        ("[mqtt]\nprot = 1884\n", "mqtt.prot: unknown setting"),
        ("[mqttt]\nport = 1884\n", "mqttt: unknown setting"),
        ("[mqtt\nport = 1884\n", "invalid TOML"),
        ("[daemon]\nshutdown_timeout_s = -1\n", "daemon.shutdown_timeout_s: Input should be"),
        ('[logging]\nformat = "xml"\n', "logging.format: Input should be"),
        ("[governor]\nthermal_warm_c = 99\n", "governor: Value error, need thermal_warm_c"),
    ],
)
def test_invalid_file_names_file_and_field(write_toml, text: str, expected: str) -> None:
    config = write_toml(text)
    with pytest.raises(ConfigError) as info:
        settings(config)
    message = str(info.value)
    assert message.startswith(f"{config}: ")
    assert expected in message


def test_bad_toml_names_the_line(write_toml) -> None:
    config = write_toml("[mqtt]\nport = = 1\n")
    with pytest.raises(ConfigError, match=r"line 2"):
        settings(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        settings(tmp_path / "absent.toml")


def test_error_is_blamed_on_the_layer_that_breaks(
    write_toml, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file alone is fine on top of the profile (warm 55 < hot 60 < critical 68) ...
    config = write_toml('profile = "glasses-reference"\n[governor]\nthermal_hot_c = 60\n')
    assert settings(config).governor.thermal_hot_c == 60
    # ... the environment makes it invalid, so the environment is named, with the variable.
    monkeypatch.setenv("EDGEAGENT_GOVERNOR__THERMAL_WARM_C", "65")
    with pytest.raises(ConfigError) as info:
        settings(config)
    assert str(info.value).startswith("environment: governor: ")
    monkeypatch.setenv("EDGEAGENT_GOVERNOR__THERMAL_WARM_C", "hot")
    with pytest.raises(ConfigError, match=r"\(from EDGEAGENT_GOVERNOR__THERMAL_WARM_C\)"):
        settings(config)


def test_flag_errors_name_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"^command line: mqtt.port: Input should be"):
        settings(mqtt={"port": 0})


def test_stages_are_unique_and_exclude_the_heartbeat() -> None:
    with pytest.raises(ConfigError, match="must not name a stage twice"):
        settings(daemon={"stages": ["a", "a"]})
    with pytest.raises(ConfigError, match="heartbeat always runs"):
        settings(daemon={"stages": ["heartbeat"]})


def test_secrets_are_masked_when_shown(write_toml) -> None:
    loaded = load(write_toml('[mqtt]\npassword = "hunter2"\n'), default_config_path=NO_DEFAULT_FILE)
    assert loaded.settings.mqtt.password is not None
    assert loaded.settings.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in render(loaded)


def test_tier_must_be_allowed_by_profile() -> None:
    with pytest.raises(ConfigError, match=r"tier 'full' is not one of allowed_tiers"):
        settings(profile="glasses-reference", model={"tier": "full"})
    assert settings(profile="glasses-reference", model={"tier": "e2b"}).model.tier == "e2b"


def test_unknown_profile_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match=r"unknown hardware profile 'nope'.*raspberry-pi-5"):
        settings(profile="nope")


def test_profile_from_a_path(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "hw_profiles" / "x86-dev.toml"
    custom = tmp_path / "x86-dev.toml"
    custom.write_text(source.read_text().replace("threads = 2", "threads = 1"))
    assert settings(profile=str(custom)).model.threads == 1


def test_loaded_reports_its_layers(write_toml, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml('profile = "x86-dev"\n')
    monkeypatch.setenv("EDGEAGENT_MQTT__PORT", "1884")
    loaded = load(config, {"mqtt": {"host": "h"}}, default_config_path=NO_DEFAULT_FILE)
    sources = [layer.source for layer in loaded.layers]
    assert sources == ["profile x86-dev", str(config), "environment", "command line"]
    assert loaded.profile is not None and loaded.profile.name == "x86-dev"


def test_set_pairs_parse_values_as_toml() -> None:
    assert overrides_from_pairs(["mqtt.port=1884", "mqtt.host=broker.lan"]) == {
        "mqtt": {"port": 1884, "host": "broker.lan"}
    }
    assert overrides_from_pairs(['daemon.stages=["a"]', "camera.enabled=false"]) == {
        "daemon": {"stages": ["a"]},
        "camera": {"enabled": False},
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        overrides_from_pairs(["mqtt.port"])


def test_every_field_describes_itself() -> None:
    for section in SECTIONS:
        model = Settings.model_fields[section].annotation
        assert model is not None
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            assert field.description and len(field.description) > 15, f"{section}.{name}"
