"""The error hierarchy: one root, one subclass per subsystem.

Errors of third-party libraries (numpy, onnxruntime, paho, ALSA, OpenCV) are
translated at the boundary with ``raise ... from`` into one of these, so
callers catch edgeagent errors only.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of every error edgeagent raises on purpose."""


class ConfigError(EdgeAgentError):
    """Invalid settings: a configuration file, environment variable or flag."""


class ProfileError(ConfigError):
    """A hardware profile that is missing or invalid."""


class DaemonError(EdgeAgentError):
    """The supervisor or one of its stages failed."""


class EngineError(EdgeAgentError):
    """The Gemma 3n engine failed."""


class CheckpointError(EngineError):
    """A checkpoint that cannot be loaded: missing, corrupt, wrong shape or dtype."""


class TierError(EngineError):
    """A MatFormer tier plan that the checkpoint cannot run."""


class TokenizerError(EngineError):
    """A tokenizer that is missing or cannot be read."""


class PublishError(EdgeAgentError):
    """MQTT publishing failed: the broker, TLS, the outbox or the embedded broker."""


class OutboxError(PublishError):
    """The durable outbox (SQLite) cannot be opened or written."""


class AudioError(EdgeAgentError):
    """The audio path failed: a capture source, the features, or the audio encoder's inputs."""


class CameraError(EdgeAgentError):
    """The camera path failed: a capture source (device, stream, file, folder) or OpenCV."""


class VisionError(EdgeAgentError):
    """The vision encoder's inputs: an image of the wrong type, shape or dtype, a bad size."""
