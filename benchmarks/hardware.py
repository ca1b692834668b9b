"""What every benchmark record says about the machine it ran on, and the matmul rate its FLOP/s are compared with."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def machine() -> str:
    """CPU model (from /proc/cpuinfo where there is one), core count, GPU if any, torch version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def bf16_matmul_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """This CPU's bf16 matmul rate, measured now: the peak that useful FLOP/s are a fraction of, taken in
    the same run as the throughput it divides (clock and neighbours vary between runs)."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9
