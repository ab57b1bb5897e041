"""The machine a benchmark ran on, recorded beside its figures.

Figures from different hosts differ in speed and, for training, in the weights themselves:
torch picks its CPU kernels by the vector instructions the CPU offers, and the demo's student
trained with AVX512 differs from the one trained with AVX2 (bench/results/demo-history.md). So every
benchmark keeps the CPU model and torch's CPU capability with its results.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def host() -> dict[str, Any]:
    """Cores, CPU model and capability, platform, Python, torch and its threads, load now."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    """The model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
