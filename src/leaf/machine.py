"""A one-line description of the machine, for benchmark notes and result docs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU flags that decide which precision and engine is fast here (bf16 autocast is ~2x faster
# than fp32 with AMX, ~10x slower without native bf16): named in every benchmark.
PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo_field(name: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def machine_description() -> str:
    """Usable CPU cores and model, the precision-relevant CPU flags it has (of
    :data:`PRECISION_FLAGS`), OS, and whether a CUDA GPU is visible (without importing torch),
    e.g. "2 cores (Intel(R) Xeon(R) Processor; avx2 avx512f avx512_bf16 amx_bf16), Linux 6.1,
    no GPU"."""
    cpu = _cpuinfo_field("model name") or platform.processor() or platform.machine()
    flags = set((_cpuinfo_field("flags") or "").split())
    present = " ".join(flag for flag in PRECISION_FLAGS if flag in flags) or "none of avx2/avx512"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "a GPU" if Path("/proc/driver/nvidia/gpus").exists() else "no GPU"
    return f"{cores} cores ({cpu}; {present}), {platform.system()} {platform.release()}, {gpu}"
