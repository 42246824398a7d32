"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution in ``packages``."""
    from importlib.metadata import version

    return {name: version(name) for name in packages}


def machine_facts(packages: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, the versions of ``packages``, and ``extra`` (e.g. threads)."""
    cpu = platform.processor() or "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        ram = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), **extra, "ram": ram, "os": platform.platform(),
            "python": platform.python_version(), **versions(packages)}
