"""Settings: one frozen pydantic model per subsystem.

Every field states its unit and range. Unknown keys are errors. The values are
layered by :func:`edgeagent.config.load_settings` (defaults < hardware profile
< config file < environment < CLI flags) and validated once, at start-up;
afterwards the object is immutable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "EDGEAGENT_"
ENV_NESTED_DELIMITER = "__"

_SECTION = ConfigDict(frozen=True, extra="forbid")

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
"""A tier, stage, profile or device name: letters, digits, ``_ . -``; at most 64 characters."""

TopicSegment = Annotated[str, StringConstraints(pattern=r"^[^/+#\x00]+$", max_length=64)]


class ModelSettings(BaseModel):
    """The Gemma 3n checkpoint and how the engine runs it."""

    model_config = _SECTION

    path: Path | None = Field(
        None,
        description="Checkpoint directory in Hugging Face layout (config.json, *.safetensors, "
        "tokenizer.json). Unset: no model is loaded.",
    )
    kernels: Literal["reference", "quantized"] = Field(
        "reference",
        description='Kernel implementation: "reference" (numpy float32, exact, slow) or '
        '"quantized" (ONNX Runtime 4/8-bit weights, int8 activations).',
    )
    tier: Name = Field(
        "auto",
        description='MatFormer tier to run: "auto" (the governor chooses among allowed_tiers) '
        'or a tier name such as "full" or "e2b".',
    )
    allowed_tiers: tuple[Name, ...] = Field(
        (),
        description="Tiers this device may run, ordered from largest to smallest; usually set "
        "by the hardware profile. Empty: every tier the checkpoint offers.",
    )
    max_context: int = Field(
        4096, ge=256, le=32768, description="Context window in tokens, 256-32768."
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Worker threads for the numeric kernels, 0-256. 0: the hardware profile's "
        "CPU threads, or every online core without a profile.",
    )
    memory_budget_mb: int = Field(
        0,
        ge=0,
        le=1_048_576,
        description="Resident memory edgeagent may use, MiB, 0-1048576; usually set by the "
        "hardware profile. 0: no limit.",
    )

    @model_validator(mode="after")
    def _tier_is_allowed(self) -> Self:
        if self.allowed_tiers and self.tier != "auto" and self.tier not in self.allowed_tiers:
            allowed = ", ".join(self.allowed_tiers)
            raise ValueError(f"tier {self.tier!r} is not one of allowed_tiers ({allowed})")
        return self


class AudioSettings(BaseModel):
    """Microphone capture, voice activity and endpointing."""

    model_config = _SECTION

    enabled: bool = Field(True, description="Capture audio from the microphone: true or false.")
    source: Literal["command", "pyaudio", "file"] = Field(
        "command",
        description='Where PCM comes from: "command" (a program writing raw PCM to stdout, e.g. '
        'arecord), "pyaudio" (a PortAudio device; needs the audio extra) or "file" (a WAV file).',
    )
    device: str = Field(
        "default",
        min_length=1,
        description='Capture device: an ALSA PCM name such as "default" or "plughw:1,0" ({device} '
        'in the command); for pyaudio a device index, a name substring, or "default".',
    )
    command: tuple[str, ...] = Field(
        (
            *("arecord", "-q", "-t", "raw", "-f", "{format}"),
            *("-c", "{channels}", "-r", "{rate}", "-D", "{device}"),
        ),
        min_length=1,
        description='Argument vector of the "command" source; {rate}, {channels}, {format} and '
        "{device} are substituted. It must write raw interleaved PCM to stdout.",
    )
    sample_format: Literal["S16_LE", "S32_LE", "FLOAT_LE"] = Field(
        "S16_LE",
        description='PCM sample format the command writes: "S16_LE", "S32_LE" or "FLOAT_LE".',
    )
    file: Path | None = Field(
        None,
        description='WAV file read by the "file" source (8/16/24/32-bit PCM, any rate and '
        "channel count).",
    )
    file_realtime: bool = Field(
        True,
        description="Pace the file source in real time (true) or read it as fast as possible "
        "(false).",
    )
    file_loop: bool = Field(False, description="Start the file over at its end: true or false.")
    sample_rate_hz: int = Field(
        16000,
        ge=8000,
        le=48000,
        description="Capture sample rate of the command and pyaudio sources, Hz, 8000-48000 "
        "(a file has its own); resampled to the model's 16000.",
    )
    channels: int = Field(
        1, ge=1, le=32, description="Channels the command or pyaudio source delivers, 1-32."
    )
    channel: int | None = Field(
        None,
        ge=0,
        le=31,
        description="Channel to keep, counted from 0, 0-31. Unset: the mean of all channels.",
    )
    gain_db: float = Field(
        0.0, ge=-40, le=40, description="Gain applied to captured audio, dB, -40 to 40."
    )
    block_ms: int = Field(
        20, ge=5, le=500, description="Audio read from the source at a time, ms, 5-500."
    )
    reopen_backoff_initial_s: float = Field(
        0.5,
        gt=0,
        le=600,
        description="Delay before reopening a source that died, s, above 0 and at most 600; it "
        "doubles with every further failure.",
    )
    reopen_backoff_max_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Cap of the doubling reopen delay, s, at least reopen_backoff_initial_s and "
        "at most 3600.",
    )
    vad: Literal["silero", "energy"] = Field(
        "silero",
        description='Voice activity detector: "silero" (Silero VAD, a small neural network, run '
        'only while an energy gate hears something) or "energy" (speech-band energy over an '
        "adaptive noise floor: cheaper, and fooled by low SNR and changing noise).",
    )
    vad_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Speech probability above which a 10 ms frame counts as speech, above 0 and "
        "below 1.",
    )
    vad_start_ms: int = Field(
        100,
        ge=10,
        le=2000,
        description="Speech needed to start an utterance, ms, 10-2000: frames above the threshold "
        "within the last vad_start_ms plus half as much again.",
    )
    vad_hangover_ms: int = Field(
        300,
        ge=50,
        le=5000,
        description="Silence that ends an utterance, ms, 50-5000 (the end time reported is the "
        "last speech frame's).",
    )
    vad_pre_roll_ms: int = Field(
        300,
        ge=0,
        le=2000,
        description="Audio kept from before an utterance's start and handed to the encoder with "
        "it, ms, 0-2000.",
    )
    vad_max_utterance_s: float = Field(
        30.0,
        ge=1,
        le=600,
        description="Longest utterance, s, 1-600; speech that goes on is cut into utterances of "
        "this length.",
    )
    encoder_bits: Literal[4, 8] = Field(
        4,
        description="Weight bits of the audio encoder's quantized copy: 4 (half the bytes, ~0.87x "
        "the time) or 8 (closest to the float encoder).",
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Self:
        if self.reopen_backoff_max_s < self.reopen_backoff_initial_s:
            raise ValueError("reopen_backoff_max_s must be >= reopen_backoff_initial_s")
        if self.channel is not None and self.channel >= self.channels:
            raise ValueError(f"channel {self.channel} needs channels > {self.channel}")
        return self


class VoiceSettings(BaseModel):
    """The voice pipeline: how listening starts, what is made of speech, what is kept."""

    model_config = _SECTION

    activation: Literal["always", "wake_phrase", "push_to_talk"] = Field(
        "always",
        description='How an utterance starts: "always" (voice activity), "wake_phrase" (voice '
        "activity, then the transcript must start with wake_phrase; the rest of it is the "
        'request) or "push_to_talk" (between cmd/listen start and stop, or while '
        "push_to_talk_key is held).",
    )
    wake_phrase: str = Field(
        "hey gemma",
        min_length=1,
        max_length=64,
        description="Words that must open the transcript in wake_phrase mode (case and "
        "punctuation ignored).",
    )
    push_to_talk_device: Path | None = Field(
        None,
        description="Linux input device read for push_to_talk_key, e.g. "
        "/dev/input/by-id/usb-...-event-kbd. Unset: only cmd/listen.",
    )
    push_to_talk_key: str = Field(
        "KEY_SPACE",
        description="Key held to talk: a Linux key name (KEY_SPACE, KEY_F13, BTN_LEFT, ...) or "
        "its numeric code.",
    )
    task: Literal["assistant", "transcribe", "translate"] = Field(
        "assistant",
        description='What speech becomes: "assistant" (an answer), "transcribe" (a transcript) '
        'or "translate" (a translation into target_language). cmd/task changes it at run time.',
    )
    target_language: str = Field(
        "en",
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="Language translations are made into: a BCP 47 tag such as fr, de, pt-BR.",
    )
    transcript: bool = Field(
        False,
        description="In assistant mode, also publish a transcript of each utterance, after the "
        "answer: true or false.",
    )
    barge_in: Literal["cancel", "queue"] = Field(
        "cancel",
        description='Speech that starts while an answer is being generated: "cancel" stops '
        'that answer (stop_reason "cancelled"); "queue" lets it finish and answers after.',
    )
    system_prompt: str | None = Field(
        None,
        max_length=4000,
        description="Text put before the first turn of the conversation. Unset: none.",
    )
    max_new_tokens: int = Field(
        256, ge=1, le=8192, description="Longest answer, transcript or translation, tokens."
    )
    partial_interval_ms: int = Field(
        250,
        ge=0,
        le=10_000,
        description="Least time between two partial messages of one answer, ms, 0-10000 (the "
        "first partial is sent at once).",
    )
    speak_command: tuple[str, ...] = Field(
        (),
        description='Program that reads text aloud from its standard input, e.g. ["sh", "-c", '
        '"espeak-ng -v fr --stdout | aplay -q"]. Empty: nothing is spoken.',
    )
    speak: tuple[Literal["answer", "translation", "transcript"], ...] = Field(
        ("answer", "translation"),
        description="Which final results the speak command reads aloud.",
    )
    history_max_turns: int = Field(
        20,
        ge=1,
        le=1000,
        description="Conversation turns kept (older ones are forgotten, on disk too), 1-1000.",
    )
    history_max_age_s: float = Field(
        3600.0,
        gt=0,
        le=30 * 86400,
        description="Turns older than this are forgotten (on disk too), s, up to 30 days.",
    )
    persist_history: bool = Field(
        True,
        description="Keep the conversation in daemon.state_dir so that it survives a restart "
        "(token ids, and the audio encoder's outputs for spoken turns; never audio): true or "
        "false.",
    )
    debug_keep_audio: bool = Field(
        False,
        description="Debugging only: write each utterance's audio as a WAV file to "
        "daemon.state_dir/debug-audio: true or false.",
    )


class CameraSettings(BaseModel):
    """Camera capture and the frame gate (which frames go on to the vision encoder)."""

    model_config = _SECTION

    enabled: bool = Field(
        True,
        description="Capture frames from the camera and, with a model.path that has a vision "
        "tower, run the vision stage (scene changes, look, describe): true or false.",
    )
    source: Literal["auto", "device", "stream", "file", "folder"] = Field(
        "auto",
        description='What device names: "device" (a video4linux device path or an OpenCV index), '
        '"stream" (an rtsp://, http:// or https:// URL), "file" (a video file), "folder" (a '
        'folder of JPEG/PNG images, in name order) or "auto" (decided by its form: digits or '
        "/dev/... a device, a URL a stream, an existing folder a folder, else a file). All need "
        "the camera extra (OpenCV).",
    )
    device: str = Field(
        "/dev/video0",
        min_length=1,
        description='Camera: a video4linux device path or an OpenCV index such as "0", a stream '
        "URL, a video file or a folder of images (see source).",
    )
    width: int = Field(
        640,
        ge=64,
        le=4096,
        description="Largest frame width, pixels, 64-4096: larger frames are scaled down, aspect "
        "kept (a device is asked for this size).",
    )
    height: int = Field(
        480,
        ge=64,
        le=4096,
        description="Largest frame height, pixels, 64-4096: larger frames are scaled down, aspect "
        "kept (a device is asked for this size).",
    )
    max_fps: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Frames per second offered to the frame gate, above 0 and at most 60; the "
        "others are skipped undecoded. A folder's images are shown at this rate.",
    )
    file_realtime: bool = Field(
        True,
        description="Pace a video file or image folder in real time (true) or read every frame "
        "as fast as the gate takes them (false).",
    )
    file_loop: bool = Field(
        False, description="Start a video file or image folder over at its end: true or false."
    )
    reopen_backoff_initial_s: float = Field(
        0.5,
        gt=0,
        le=600,
        description="Delay before reopening a camera or stream that was lost, s, above 0 and at "
        "most 600; it doubles with every further failure.",
    )
    reopen_backoff_max_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Cap of the doubling reopen delay, s, at least reopen_backoff_initial_s and "
        "at most 3600.",
    )
    gate_threshold: float = Field(
        0.25,
        gt=0,
        le=2,
        description="Change score (1 - correlation of brightness-normalised 32x24 thumbnails; 0 "
        "same, about 1 unrelated) from which a frame counts as a new scene, above 0 and at most "
        "2. Steady shots with noise, flicker and shake score below 0.06, cuts above 0.8 "
        "(benchmarks/README.md).",
    )
    gate_interval_s: float = Field(
        0.0,
        ge=0,
        le=86400,
        description="Send a frame on at least this often even when the scene is unchanged, s, "
        "0-86400; 0: never (only scene changes and requests).",
    )
    look_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description='How long cmd/ask with "look": true waits for the next camera frame to be '
        "sent on and encoded, s, above 0 and at most 120; then the ask fails with a no_camera "
        "error.",
    )
    max_images_in_context: int = Field(
        3,
        ge=0,
        le=32,
        description="Camera images (256 soft tokens each) kept in the conversation, 0-32: when "
        "the cache is next rebuilt (tier switch, full context, forgotten turns, restart) older "
        "images are dropped with their markers, the words of their turns kept.",
    )
    describe: bool = Field(
        False,
        description="Publish a scene description on <base>/vision for every frame the gate sends "
        'on, from start-up: true or false (cmd/task {"task": "describe"} switches it too).',
    )
    describe_max_tokens: int = Field(
        48,
        ge=1,
        le=512,
        description="Longest scene description, tokens, 1-512.",
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Self:
        if self.reopen_backoff_max_s < self.reopen_backoff_initial_s:
            raise ValueError("reopen_backoff_max_s must be >= reopen_backoff_initial_s")
        return self


class MqttSettings(BaseModel):
    """The MQTT broker, topics, outbox and Home Assistant discovery (contract: docs/mqtt.md)."""

    model_config = _SECTION

    enabled: bool = Field(
        True,
        description="Run the MQTT publisher and the command stage (the assistant): true or false.",
    )
    host: str | None = Field(
        None,
        min_length=1,
        description="Broker host name or address. Unset: an embedded broker on 127.0.0.1:port "
        "(see embedded_broker).",
    )
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port, 1-65535.")
    embedded_broker: Literal["auto", "mosquitto", "amqtt"] = Field(
        "auto",
        description='Broker run when host is unset, on loopback only: "mosquitto" (the installed '
        'binary, MQTT 5 and 3.1.1, persistent), "amqtt" (in-process, MQTT 3.1.1 only) or "auto" '
        "(mosquitto when installed, else amqtt).",
    )
    tls: bool = Field(False, description="Connect with TLS: true or false.")
    ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) for TLS (used when tls is true). Unset: the system's trust "
        "store.",
    )
    client_cert_file: Path | None = Field(
        None, description="Client certificate (PEM) for TLS client authentication. Unset: none."
    )
    client_key_file: Path | None = Field(
        None,
        description="Private key (PEM) of client_cert_file. Unset: the key is in client_cert_file.",
    )
    username: str | None = Field(None, description="User name. Unset: anonymous.")
    password: SecretStr | None = Field(
        None, description="Password; prefer EDGEAGENT_MQTT__PASSWORD to a file."
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description='MQTT version: "5" or "3.1.1". With "5", a broker that refuses version 5 is '
        "retried with 3.1.1.",
    )
    device_id: Name | None = Field(
        None,
        description="Device id in topics and the client id. Unset: the host name, lower-cased, "
        "other characters than a-z 0-9 _ - replaced by -.",
    )
    base_topic: TopicSegment = Field(
        "edgeagent", description="First topic level; topics are <base_topic>/<device_id>/..."
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id, fixed so the broker keeps the session. "
        "Unset: edgeagent-<device_id>.",
    )
    keepalive_s: int = Field(60, ge=5, le=3600, description="Keep-alive interval, s, 5-3600.")
    session_expiry_s: int = Field(
        86400,
        ge=1,
        le=4_294_967_295,
        description="MQTT 5 session expiry, s, 1-4294967295; the broker keeps the session "
        "(subscriptions, queued commands) of an offline device this long.",
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Time allowed for a connection, a subscription or a PUBACK, s, above 0 and "
        "at most 600.",
    )
    reconnect_initial_s: float = Field(
        0.5,
        gt=0,
        le=3600,
        description="Delay before the first reconnection, s, above 0 and at most 3600; it "
        "doubles after every failure, with up to 25% random jitter.",
    )
    reconnect_max_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Cap of the reconnection delay, s, at least reconnect_initial_s and at "
        "most 86400.",
    )
    max_inflight: int = Field(
        20,
        ge=1,
        le=65535,
        description="QoS 1 messages sent and awaiting PUBACK at once, 1-65535.",
    )
    outbox_max_messages: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Results the outbox holds before overflow, 1-10000000.",
    )
    outbox_max_mb: float = Field(
        32.0,
        gt=0,
        le=65536,
        description="Payload bytes the outbox holds before overflow, MiB, above 0 and at most "
        "65536.",
    )
    outbox_overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description='What a full outbox discards: "drop_oldest" (the oldest unsent results) or '
        '"drop_newest" (the incoming result). Discards are counted in the state message.',
    )
    max_command_bytes: int = Field(
        65536,
        ge=64,
        le=16_777_216,
        description="Largest command payload accepted, bytes, 64-16777216; larger ones get an "
        "error event.",
    )
    state_interval_s: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="The retained state message is refreshed at least this often, s, 1-86400 "
        "(and at once when tier, mute, listening, task or model change).",
    )
    homeassistant_discovery: bool = Field(
        True, description="Publish Home Assistant device discovery: true or false."
    )
    discovery_prefix: TopicSegment = Field(
        "homeassistant", description="Home Assistant discovery prefix."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.client_key_file is not None and self.client_cert_file is None:
            raise ValueError("client_key_file needs client_cert_file")
        return self


class GovernorSettings(BaseModel):
    """Power and thermal policy: which tier runs, from battery and temperature."""

    model_config = _SECTION

    enabled: bool = Field(
        True, description="Let battery and temperature choose the tier: true or false."
    )
    poll_s: float = Field(5.0, ge=0.1, le=3600, description="Sensor poll interval, s, 0.1-3600.")
    sysfs_root: Path = Field(
        Path("/"),
        description="Directory the sensor paths are read under, e.g. a fake sysfs tree for "
        'tests or boards that expose sensors elsewhere. Default "/": the paths as given.',
    )
    battery_capacity_path: Path | None = Field(
        None,
        description="sysfs file with the battery charge in percent, e.g. "
        "/sys/class/power_supply/BAT0/capacity. Unset: mains powered.",
    )
    battery_status_path: Path | None = Field(
        None,
        description="sysfs file with Charging/Discharging/Full, e.g. "
        "/sys/class/power_supply/BAT0/status. Unset: mains powered.",
    )
    thermal_zone_paths: tuple[Path, ...] = Field(
        (),
        description="sysfs files with temperatures in millidegrees Celsius; the hottest counts. "
        "Empty: no thermal policy.",
    )
    battery_low_percent: int = Field(
        30, ge=0, le=100, description="Below this charge, %, 0-100: step down one tier."
    )
    battery_critical_percent: int = Field(
        15, ge=0, le=100, description="Below this charge, %, 0-100: the smallest tier."
    )
    thermal_warm_c: float = Field(
        70.0, ge=0, le=150, description="Above this temperature, degC, 0-150: step down one tier."
    )
    thermal_hot_c: float = Field(
        80.0, ge=0, le=150, description="Above this temperature, degC, 0-150: the smallest tier."
    )
    thermal_critical_c: float = Field(
        90.0, ge=0, le=150, description="Above this temperature, degC, 0-150: suspend encoders."
    )
    hysteresis_c: float = Field(
        3.0, ge=0, le=30, description="Temperature must fall this far, degC, 0-30, to step up."
    )
    hysteresis_percent: int = Field(
        5, ge=0, le=50, description="Charge must rise this far, %, 0-50, to step up."
    )
    min_dwell_s: float = Field(
        30.0, ge=0, le=3600, description="Shortest time on a tier, s, 0-3600, before stepping up."
    )
    economy_max_fps: float = Field(
        0.2,
        gt=0,
        le=60,
        description='Camera frames per second on the "economy" tier, above 0 and at most 60 '
        "(vision is off there; the cap holds for scene detection).",
    )
    economy_max_new_tokens: int = Field(
        64, ge=1, le=4096, description='Longest answer on the "economy" tier, tokens, 1-4096.'
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        if self.battery_critical_percent > self.battery_low_percent:
            raise ValueError("battery_critical_percent must not exceed battery_low_percent")
        if not self.thermal_warm_c <= self.thermal_hot_c <= self.thermal_critical_c:
            raise ValueError("need thermal_warm_c <= thermal_hot_c <= thermal_critical_c")
        return self


class DaemonSettings(BaseModel):
    """The supervisor: which stages run, restarts, shutdown."""

    model_config = _SECTION

    stages: tuple[Name, ...] = Field(
        (),
        description="Stages the supervisor starts, by registered name (see edgeagent.stages); "
        "the heartbeat always runs.",
    )
    shutdown_timeout_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="On SIGTERM, time given to stages to drain, s, 0-600, before they are "
        "cancelled.",
    )
    state_dir: Path = Field(
        Path("/var/lib/edgeagent"),
        description="Directory for the outbox and conversation snapshots (systemd "
        "StateDirectory=).",
    )
    heartbeat_s: float = Field(
        10.0,
        ge=0.05,
        le=3600,
        description="STATUS= interval, s, 0.05-3600. Under a systemd watchdog the heartbeat "
        "runs at half of WatchdogSec= if that is shorter.",
    )
    restart_backoff_initial_s: float = Field(
        0.5,
        gt=0,
        le=3600,
        description="Delay before a failed stage's first restart, s, above 0 and at most 3600; "
        "it doubles with every further failure.",
    )
    restart_backoff_max_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Cap of the doubling restart delay, s, at least restart_backoff_initial_s "
        "and at most 86400. A stage that ran this long before failing starts over from the "
        "initial delay.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.restart_backoff_max_s < self.restart_backoff_initial_s:
            raise ValueError("restart_backoff_max_s must be >= restart_backoff_initial_s")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError("stages must not name a stage twice")
        if "heartbeat" in self.stages:
            raise ValueError("stages: the heartbeat always runs; do not list it")
        return self


class LoggingSettings(BaseModel):
    """Log level and line format."""

    model_config = _SECTION

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Lowest level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    format: Literal["auto", "text", "journal", "json"] = Field(
        "auto",
        description='Line format: "text" (with timestamps), "journal" (no timestamps, syslog '
        'priority prefix), "json" (one object per line) or "auto" (journal under journald, '
        "else text).",
    )

    @model_validator(mode="before")
    @classmethod
    def _upper_level(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("level"), str):
            return {**data, "level": data["level"].upper()}
        return data


class Settings(BaseSettings):
    """Everything edgeagent can be configured with.

    Build it with :func:`edgeagent.config.load_settings`, which layers the
    profile, file, environment and flags. Constructing or validating this class
    directly uses only the values given (no environment), so each layer can be
    checked on its own.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
    )

    profile: str | None = Field(
        None,
        description="Hardware profile: a name from hw_profiles/ (see `edgeagent profiles list`) "
        "or the path of a profile TOML file. Unset: built-in defaults only.",
    )
    model: ModelSettings = ModelSettings()
    audio: AudioSettings = AudioSettings()
    voice: VoiceSettings = VoiceSettings()
    camera: CameraSettings = CameraSettings()
    mqtt: MqttSettings = MqttSettings()
    governor: GovernorSettings = GovernorSettings()
    daemon: DaemonSettings = DaemonSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


SECTIONS: tuple[str, ...] = tuple(
    name
    for name, field in Settings.model_fields.items()
    if field.annotation is not None
    and isinstance(field.annotation, type)
    and issubclass(field.annotation, BaseModel)
)
"""The subsystem sections, in order: model, audio, voice, camera, mqtt, governor, daemon,
logging."""
