"""What the CPU at hand can do: its model, the vector extensions that pick the learner's precision, usable cores."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# Instruction sets with a native bfloat16 dot product: oneDNN then runs bf16 convolutions and matrix products
# at up to twice the fp32 rate. Without them TensorFlow emulates bf16, several times slower than fp32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16")
# oneDNN's switch for the widest instruction set its kernels may use (PyTorch's oneDNN reads it too). Below
# AVX-512 this project treats the CPU as one without AVX-512 or native bf16, so the learner's precision and
# update path follow the capped CPU: `benchmarks/peers.py --max-isa avx2` measures an AVX2-only CPU that way.
# XLA has its own cap (XLA_FLAGS=--xla_cpu_max_isa=AVX2), which the benchmarks set beside this one.
ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# Its values, by what they leave of the CPU's flags; oneDNN ignores any other value, and so does this module.
CAPS_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
CAPS_AVX512_WITHOUT_BF16 = ("AVX512_CORE", "AVX512_CORE_VNNI")
CAPS_WITH_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
CAPS_WITH_BF16 += ("AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def isa_cap() -> str | None:
    """The instruction-set cap oneDNN runs under (``ONEDNN_MAX_CPU_ISA``), upper case; None without one."""
    cap = os.environ.get(ISA_CAP_VARIABLE, "").strip().upper()
    return cap if cap in CAPS_BELOW_AVX512 + CAPS_AVX512_WITHOUT_BF16 + CAPS_WITH_BF16 else None


def _own_flags() -> frozenset[str]:
    return frozenset(cpu_fields().get("flags", "").split())


def cpu_flags() -> frozenset[str]:
    """The CPU's flags, less the ones ``ONEDNN_MAX_CPU_ISA`` keeps the math libraries from using."""
    flags, cap = _own_flags(), isa_cap()
    if cap in CAPS_BELOW_AVX512:
        return frozenset(flag for flag in flags if not flag.startswith(("avx512", "amx")))
    if cap in CAPS_AVX512_WITHOUT_BF16:
        return frozenset(flag for flag in flags if flag != "avx512_bf16" and not flag.startswith("amx"))
    return flags


def has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_description() -> str:
    """Model name, the flags that matter for speed here, and the core counts."""
    fields, flags = cpu_fields(), _own_flags()
    model = fields.get("model name") or platform.processor() or "unknown CPU"
    features = [f"{name} {'yes' if name in flags else 'no'}" for name in REPORTED_FLAGS]
    amx = sorted(flag for flag in flags if flag.startswith("amx"))
    features.append(f"amx {' '.join(amx) if amx else 'no'}")
    cores = f", {fields['cpu cores']} cores per socket" if "cpu cores" in fields else ""
    capped = f" (capped: {ISA_CAP_VARIABLE}={isa_cap()})" if isa_cap() else ""
    return f"{model}; {os.cpu_count()} logical CPUs ({usable_cpus()} usable{cores}); {', '.join(features)}{capped}"


def learner_precision(requested: str) -> str:
    """``train.precision`` on this CPU: ``auto`` is bfloat16 where the CPU computes it natively, else float32."""
    if requested != "auto":
        return requested
    return "bfloat16" if has_native_bf16() else "float32"


def update_path(precision: str) -> str:
    """Which kernels run the native learner's update and acting in ``precision`` on this CPU: ``xla`` or
    ``onednn`` (TensorFlow's own). XLA's float32 is the faster on AVX2-only CPUs, oneDNN's on AVX-512 ones, and
    bfloat16 runs only on oneDNN (XLA's CPU backend does not use the bf16 instructions); ``make bench`` prints
    every path. The two round differently, so a run resumes only on the path it started on."""
    return "xla" if precision == "float32" and "avx512f" not in cpu_flags() else "onednn"
