"""Building the command-line parser loads none of the daemon's dependencies.

Every ``edgeagent`` start builds the parser for all commands. If that pulled in
pydantic, asyncio or the MQTT client, ``edgeagent bench`` would report their
memory as the engine's peak RSS (the quantized issue's bounds are within a few
tens of MB), and ``edgeagent --help`` would start slowly on a board.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pydantic", "pydantic_settings", "asyncio", "ssl", "aiomqtt", "paho")
DAEMON_MODULES = (
    "edgeagent.settings",
    "edgeagent.daemon",
    "edgeagent.pipeline",
    "edgeagent.publish",
    "edgeagent.capture",
)

PROBE = """
import json, sys
import edgeagent.cli
edgeagent.cli.build_parser()
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_parser() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules: list[str] = json.loads(out)
    return modules


def test_parser_imports_no_daemon_dependencies() -> None:
    modules = _modules_after_parser()
    loaded_heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert loaded_heavy == [], f"building the parser imported {loaded_heavy}"
    daemon = [m for m in modules if m.startswith(DAEMON_MODULES)]
    assert daemon == [], f"building the parser imported {daemon}"
