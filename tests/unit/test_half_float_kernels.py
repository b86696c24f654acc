"""float16 vectors in the compiled graph kernels: numba has no float16 type, so the kernels read
the bits (a uint16 view) and convert each element with one instruction where the CPU has one
(`join_kernels.as_float32`); `acceleration.kernel_vectors` decides which vectors go compiled.
The graphs they build are checked against the numpy path in test_descent and
test_neighborhood_join; the recall check's widened blocks here."""

from __future__ import annotations

import numpy as np
import pytest

import grace_selection.core.recall as recall_module
from grace_selection.core import acceleration
from grace_selection.core.graph import KnnGraph
from grace_selection.core.recall import sampled_recall
from tests.unit.test_descent import needs_numba


@needs_numba
def test_every_float16_converts_exactly() -> None:
    from grace_selection.core import join_kernels

    if not join_kernels.HALF_FLOATS:
        pytest.skip("this CPU converts half floats in software: float16 takes the numpy path")
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)  # 0, subnormal, normal, inf, nan
    want = bits.view(np.float16).astype(np.float32)
    got = np.empty(bits.shape, dtype=np.float32)
    join_kernels.widen_rows(bits, got)  # every element through as_float32
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@needs_numba
def test_the_kernels_read_c_ordered_float32_and_float16_without_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from grace_selection.core import join_kernels

    monkeypatch.setenv(acceleration.ENV_VAR, "1")
    full = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    half = full.astype(np.float16)
    same = acceleration.kernel_vectors(full)
    assert same is not None
    assert same.dtype == np.float32
    assert np.shares_memory(same, full)
    monkeypatch.setattr(join_kernels, "HALF_FLOATS", True)
    bits = acceleration.kernel_vectors(half)
    assert bits is not None
    assert bits.dtype == np.uint16
    assert np.shares_memory(bits, half)
    np.testing.assert_array_equal(bits.view(np.float16), half)
    # The numpy path for the rest: a CPU without the instruction, other dtypes, strided rows,
    # and numba switched off.
    monkeypatch.setattr(join_kernels, "HALF_FLOATS", False)
    assert acceleration.kernel_vectors(half) is None
    assert acceleration.kernel_vectors(full.astype(np.float64)) is None
    assert acceleration.kernel_vectors(full[:, ::2]) is None
    monkeypatch.setenv(acceleration.ENV_VAR, "0")
    assert acceleration.kernel_vectors(full) is None


@needs_numba
def test_a_named_cpu_target_converts_in_hardware_only_with_f16c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Compiled for a CPU without the instruction, LLVM would call a helper the JIT lacks.
    from numba.core import config

    from grace_selection.core import join_kernels

    monkeypatch.setattr(config, "CPU_NAME", "generic", raising=False)
    monkeypatch.setattr(config, "CPU_FEATURES", None, raising=False)
    assert not join_kernels._half_floats_in_hardware()
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+f16c", raising=False)
    assert join_kernels._half_floats_in_hardware()


@pytest.mark.parametrize("mode", [pytest.param("1", marks=needs_numba), "0"])
@pytest.mark.parametrize("share", [1.0, 0.8])  # every row embedded (slices), or gathered rows
@pytest.mark.parametrize("block_rows", [7, 100_000])
def test_the_recall_check_over_float16_rows_is_the_brute_force_share(
    monkeypatch: pytest.MonkeyPatch, mode: str, share: float, block_rows: int
) -> None:
    # Compiled ("1"), the float16 blocks are widened into one reused float32 block.
    monkeypatch.setenv(acceleration.ENV_VAR, mode)
    monkeypatch.setattr(recall_module, "_BLOCK_ROWS", block_rows)
    n, k = 300, 5
    rng = np.random.default_rng(6)
    full = rng.standard_normal((n, 12)).astype(np.float32)
    half = (full / np.linalg.norm(full, axis=1, keepdims=True)).astype(np.float16)
    present = rng.random(n) < share
    listed = rng.integers(0, n, (n, k)).astype(np.int32)
    got = sampled_recall(KnnGraph(listed, np.zeros((n, k), np.float32)), half, present, 3, n)
    ids = np.flatnonzero(present)
    rows = half[ids].astype(np.float32)
    sims = rows @ rows.T
    np.fill_diagonal(sims, -np.inf)
    true = ids[np.argsort(-sims, axis=1)[:, :k]]
    expected = sum(np.intersect1d(t, listed[i]).size for i, t in zip(ids, true, strict=True))
    assert got == pytest.approx(expected / (k * ids.size))
