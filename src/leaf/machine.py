"""A one-line description of the machine, for benchmark notes."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_description() -> str:
    """CPU count and model, OS, and whether a CUDA GPU is visible (without importing torch)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = "a GPU" if Path("/proc/driver/nvidia/gpus").exists() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, {gpu}"
