"""The CPU a benchmark ran on, named with the matrix units that set the speed of the int8 and
bfloat16 paths: their ratios to eager float32 depend on them (AMX against AVX-512 VNNI / BF16:
benchmarks/RESULTS.md, 2026-12-02 10:54), so a ratio is never read without them."""
from __future__ import annotations

import platform

#: (shown as, /proc/cpuinfo flag), in the order shown
MATRIX_UNITS = (("AMX-INT8", "amx_int8"), ("AMX-BF16", "amx_bf16"),
                ("AVX512-VNNI", "avx512_vnni"), ("AVX512-BF16", "avx512_bf16"))


def cpu_name_and_units(cpuinfo: str = "/proc/cpuinfo") -> str:
    """"<model name> (<units>)" from the first processor of ``cpuinfo``; the platform's
    processor name and "no int8/bf16 matrix units" where the file is missing or says nothing."""
    name, flags = None, set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    units = [shown for shown, flag in MATRIX_UNITS if flag in flags]
    name = name or platform.processor() or platform.machine()
    return f"{name} ({', '.join(units) or 'no int8/bf16 matrix units'})"
