"""What ONNX Runtime reports about itself and the CPU it runs on; run by scripts/arm64-check.

Runs inside the arm64 root (or natively). Builds one session of the engine's main kernel
shape (``MatMulNBits``: 4-bit weights, block 64, ``accuracy_level=4`` i.e. int8 activations),
with verbose logging and profiling, and prints one JSON object: ONNX Runtime's version,
device, providers, build info, its hardware-device discovery (vendor), where it placed the
node (its verbose log), which provider ran it (its profiler), the CPU's HWCAP feature names
(what ONNX Runtime's cpuinfo reads), the output's error against a float64 reference, and the
address ranges of ONNX Runtime's library (scripts/arm64-check attributes the instructions qemu
translated to them).

    python scripts/arm64_ort_probe.py [--phase build|run] [--config mlas.disable_kleidiai=1]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

K, N, BLOCK = 2048, 1024, 64
ROWS = (1, 16)

# AArch64 Linux HWCAP / HWCAP2 bits (arch/arm64/include/uapi/asm/hwcap.h), the ones MLAS reads.
HWCAP = {1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}


def cpu_features() -> list[str]:
    if platform.machine() != "aarch64":
        return []
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    hw, hw2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
    names = [n for bit, n in HWCAP.items() if hw >> bit & 1]
    names += [n for bit, n in HWCAP2.items() if hw2 >> bit & 1]
    return names


def model(weights: np.ndarray, scales: np.ndarray) -> bytes:
    node = helper.make_node(
        "MatMulNBits",
        ["x", "w", "s"],
        ["y"],
        domain="com.microsoft",
        K=K,
        N=N,
        bits=4,
        block_size=BLOCK,
        accuracy_level=4,
    )
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scales, "s")],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def reference(x: np.ndarray, weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    low, high = weights & 0x0F, weights >> 4
    q = np.stack([low, high], axis=-1).reshape(N, K // BLOCK, BLOCK).astype(np.float64)
    w = (q - 8.0) * scales.reshape(N, K // BLOCK, 1)  # [N, K/B, B], default zero point 8
    return x.astype(np.float64) @ w.reshape(N, K).T  # [rows, K] @ [K, N]


def library_ranges() -> list[list[Any]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and "onnxruntime" in parts[5] and "x" in parts[1]:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            ranges.append([lo, hi, parts[5]])
    return ranges


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=("build", "run"), default="run")
    parser.add_argument(
        "--config", action="append", default=[], help="session config entry KEY=VALUE"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    weights = rng.integers(0, 256, size=(N, K // BLOCK, BLOCK // 2), dtype=np.uint8)
    scales = (rng.random(N * (K // BLOCK), dtype=np.float32) * 0.02).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 0
    options.log_verbosity_level = 1
    options.enable_profiling = True
    profile_dir = tempfile.mkdtemp(prefix="ort-probe-")
    options.profile_file_prefix = os.path.join(profile_dir, "profile")
    for entry in args.config:
        key, value = entry.split("=", 1)
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(
        model(weights, scales), options, providers=["CPUExecutionProvider"]
    )
    report: dict[str, Any] = {
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "get_device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
        "session_providers": session.get_providers(),
        "build_info": ort.capi._pybind_state.get_build_info(),
        "cpu_features": cpu_features(),
        "phase": args.phase,
        "session_config": args.config,
    }
    with_devices = getattr(ort, "get_ep_devices", None)
    if with_devices is not None:
        report["ep_devices"] = [
            {
                "ep": d.ep_name,
                "ep_vendor": d.ep_vendor,
                "hardware_type": str(d.device.type).rsplit(".", 1)[-1],
                "hardware_vendor": d.device.vendor,
                "hardware_vendor_id": f"0x{d.device.vendor_id:04x}",
            }
            for d in with_devices()
        ]
    if args.phase == "run":
        errors = []
        for rows in ROWS:
            x = rng.standard_normal((rows, K), dtype=np.float32)
            (y,) = session.run(None, {"x": x})
            want = reference(x, weights, scales)
            errors.append(float(np.max(np.abs(y - want)) / np.max(np.abs(want))))
        report["relative_error"] = max(errors)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    report["profiled_kernels"] = sorted(
        {
            f"{e['args'].get('op_name')} on {e['args'].get('provider')}"
            for e in events
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
        }
    )
    report["library_ranges"] = library_ranges()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
