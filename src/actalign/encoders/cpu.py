"""What the CPU can do fast: the default precision of an encoder on CPU.

bfloat16 pays on CPUs with bfloat16 matrix units (Intel AMX, `amx_bf16`; AVX-512 BF16,
`avx512_bf16`): measured 3.4-4.4x float32 on a Xeon with AMX. Elsewhere (e.g. AVX2-only CPUs)
torch emulates it and it is slower than float32, so float32 stays the default there.

The flags come from /proc/cpuinfo (Linux x86). Tests and users can set them with the environment
variable ACTALIGN_CPU_FLAGS (space-separated, e.g. "avx2 amx_bf16"; empty: none).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FLAGS_ENV = "ACTALIGN_CPU_FLAGS"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; ("", {}) where unreadable."""
    name, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = frozenset(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name, flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: $ACTALIGN_CPU_FLAGS when set, else /proc/cpuinfo's."""
    given = os.environ.get(FLAGS_ENV)
    if given is not None:
        return frozenset(given.replace(",", " ").split())
    return _cpuinfo()[1]


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or what the platform says."""
    return _cpuinfo()[0] or platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True where the CPU has bfloat16 matrix units (AMX or AVX-512 BF16). flags: instead of the
    CPU's own (`cpu_flags()`)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def default_cpu_dtype(flags: frozenset[str] | set[str] | None = None) -> str:
    """The default dtype on this CPU: bfloat16 where it has bfloat16 units, else float32."""
    return "bfloat16" if cpu_has_bf16(flags) else "float32"


def describe() -> str:
    """One line for benchmarks: the CPU's name, core count and the flags that matter here."""
    flags = cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "vnni")) or f == "bf16")
    return f"{cpu_name()}, {os.cpu_count()} cores; flags: {' '.join(shown) or 'none'}"
