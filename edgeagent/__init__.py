"""edgeagent: an on-device Gemma 3n agent daemon for ARM Linux wearables and IoT boards."""

__version__ = "0.1.0"
