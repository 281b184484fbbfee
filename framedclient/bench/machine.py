"""
A description of the machine a benchmark ran on.

Numbers without their machine cannot be compared with anything, so every
report carries this: CPU model and count, memory, operating system, Python
and Twisted versions.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["describe_machine", "machine_line"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz":
                    return float(value)
    except (OSError, ValueError):
        pass
    return None


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_machine() -> dict[str, Any]:
    """
    The facts about this machine and interpreter that change benchmark
    numbers.
    """
    import framedclient
    import twisted

    usable = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    return {
        "cpu_model": _cpu_model(),
        "cpu_mhz": _cpu_mhz(),
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_bytes": _memory_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": " ".join(platform.python_build()),
        "twisted": twisted.__version__,
        # compiled or pure (framedclient.compiled): the clients the bench
        # starts inherit the environment, so they run the same mode
        "framedclient_mode": framedclient.compiled.describe(),
        "reactor": "epoll" if sys.platform.startswith("linux") else "default",
    }


def machine_line(machine: dict[str, Any]) -> str:
    """
    The machine in one line, for the head of a table.
    """
    memory = machine.get("memory_bytes")
    parts = [
        f"{machine['cpu_model']}",
        f"{machine['usable_cpus']} CPUs",
    ]
    if memory:
        parts.append(f"{memory / 2**30:.0f} GiB")
    parts += [
        machine["os"],
        machine["python"],
        f"Twisted {machine['twisted']}",
    ]
    if "framedclient_mode" in machine:
        parts.append(f"framedclient {machine['framedclient_mode']}")
    return ", ".join(parts)
