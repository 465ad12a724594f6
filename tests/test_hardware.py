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
