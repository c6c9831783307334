"""Logging to stderr in one of three line formats.

- ``text``: ``2025-01-31 12:00:00,123 INFO edgeagent.daemon: message``, for a terminal.
- ``journal``: ``<6>edgeagent.daemon: message``. journald stamps lines itself
  and reads the ``<N>`` syslog priority prefix (``SyslogLevelPrefix=``, on by
  default), so the level survives without being printed twice.
- ``json``: one JSON object per line, for log shippers.

``auto`` picks ``journal`` when stderr is connected to the journal: systemd sets
``JOURNAL_STREAM=<device>:<inode>`` and the pair matches stderr's (the check
that sd_journal_stream_fd's documentation recommends, so a variable inherited
by a child whose stderr was redirected does not count).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

# syslog priorities (sd-daemon.h SD_ERR ... SD_DEBUG)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, no timestamp; tracebacks stay on following lines."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def under_journald(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True if ``stream`` (stderr by default) is the stream systemd connected to the journal."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``auto`` becomes ``journal`` or ``text``; other formats are returned as given."""
    if fmt != "auto":
        return fmt
    return "journal" if under_journald(stream) else "text"


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> str:
    """Send the root logger to ``stream`` (stderr) in ``fmt``; return the format used."""
    out = stream or sys.stderr
    resolved = resolve_format(fmt, out)
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter
    if resolved == "journal":
        formatter = JournalFormatter()
    elif resolved == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return resolved
