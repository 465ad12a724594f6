"""The learner's precision follows the CPU: bfloat16 only where the CPU computes it natively."""

import pytest

from invaders import hardware


@pytest.mark.parametrize(
    ("flags", "requested", "expected"),
    [
        ("fpu avx2 avx512f avx512_bf16", "auto", "bfloat16"),
        ("fpu avx2 amx_bf16 amx_tile", "auto", "bfloat16"),
        ("fpu avx2 avx512f", "auto", "float32"),
        ("fpu avx2", "auto", "float32"),
        ("fpu avx2", "bfloat16", "bfloat16"),
        ("fpu avx2 avx512_bf16", "float32", "float32"),
    ],
)
def test_auto_precision_is_bfloat16_only_with_native_bf16(monkeypatch, flags, requested, expected):
    monkeypatch.setattr(hardware, "cpu_fields", lambda: {"flags": flags, "model name": "test CPU"})
    assert hardware.learner_precision(requested) == expected


def test_cpu_description_names_the_flags_that_matter(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_fields", lambda: {"flags": "fpu avx2 avx512f", "model name": "test CPU"})
    description = hardware.cpu_description()
    assert description.startswith("test CPU; ")
    assert "avx2 yes, avx512f yes, avx512_bf16 no, amx no" in description


@pytest.mark.parametrize(
    ("cap", "precision", "avx512"),
    [
        (None, "bfloat16", True),
        ("AVX512_CORE_BF16", "bfloat16", True),
        ("avx512_core", "float32", True),
        ("AVX2", "float32", False),
    ],
)
def test_onednn_isa_cap_hides_the_instructions_above_it(monkeypatch, cap, precision, avx512):
    monkeypatch.setattr(hardware, "cpu_fields", lambda: {"flags": "fpu avx2 avx512f avx512_bf16", "model name": "CPU"})
    if cap is None:
        monkeypatch.delenv(hardware.ISA_CAP_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(hardware.ISA_CAP_VARIABLE, cap)
    assert hardware.learner_precision("auto") == precision
    assert ("avx512f" in hardware.cpu_flags()) == avx512
    description = hardware.cpu_description()
    assert "avx512f yes" in description  # the CPU's own flags, then the cap
    assert ("capped" in description) == (cap is not None)


def test_a_value_onednn_does_not_know_caps_nothing(monkeypatch):
    """oneDNN ignores an ONEDNN_MAX_CPU_ISA it does not know: the learner does too."""
    monkeypatch.setattr(hardware, "cpu_fields", lambda: {"flags": "fpu avx2 avx512f avx512_bf16", "model name": "CPU"})
    monkeypatch.setenv(hardware.ISA_CAP_VARIABLE, "AVX3")
    assert hardware.isa_cap() is None and hardware.learner_precision("auto") == "bfloat16"
    assert "capped" not in hardware.cpu_description()
