"""The dashboard's 2D map: randomized PCA against exact PCA, invariances, errors, the cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grace_selection.core.projection import (
    apply_projection,
    choose_rows,
    fit_projection,
    project_embeddings,
    project_for_map,
)
from grace_selection.service.projection_cache import ProjectionCache


def exact_top2(data: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The oracle: top two right singular vectors of the centred data, (dim, 2)."""
    centred = data - data.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.asarray(vt[:2].T)


def planted(n: int, dim: int, seed: int, noise: float = 0.01) -> npt.NDArray[np.float32]:
    """Points on a random 2D plane (spreads 5 and 2) in `dim` dimensions, plus small noise."""
    rng = np.random.default_rng(seed)
    plane, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    coords = rng.normal(size=(n, 2)) * np.array([5.0, 2.0])
    points: npt.NDArray[np.float32] = (
        coords @ plane.T + noise * rng.normal(size=(n, dim)) + 3.0
    ).astype(np.float32)
    return points


matrices = st.integers(2, 60).flatmap(
    lambda n: st.integers(1, 12).flatmap(
        lambda d: hnp.arrays(
            np.float64,
            (n, d),
            elements=st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(data=matrices, seed=st.integers(0, 2**32 - 1))
def test_full_sample_spans_the_exact_top_two_components(
    data: npt.NDArray[np.float64], seed: int
) -> None:
    proj = fit_projection(data, np.random.default_rng(seed), sample_size=data.shape[0])
    comps = proj.components
    assert comps.shape == (data.shape[1], 2)
    # Columns are orthonormal, or zero where the data has fewer than two directions.
    gram = comps.T @ comps
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-8)
    assert set(np.round(np.diag(gram), 6)) <= {0.0, 1.0}
    # The captured variance equals the exact top-two variance (the spans agree, even when
    # the two top singular values tie and the vectors themselves are not unique).
    centred = data - data.mean(axis=0)
    exact = exact_top2(data)
    captured = np.sum((centred @ comps) ** 2)
    best = np.sum((centred @ exact[:, : min(2, exact.shape[1])]) ** 2)
    assert captured == pytest.approx(best, rel=1e-6, abs=1e-6 * max(1.0, float(best)))


@settings(max_examples=40, deadline=None)
@given(data=matrices, shift=st.floats(-1e3, 1e3), seed=st.integers(0, 2**16))
def test_map_ignores_translation_and_is_seed_deterministic(
    data: npt.NDArray[np.float64], shift: float, seed: int
) -> None:
    a = project_embeddings(data, seed, sample_size=data.shape[0])
    b = project_embeddings(data + shift, seed, sample_size=data.shape[0])
    assert a.dtype == np.float32
    assert a.shape == (data.shape[0], 2)
    np.testing.assert_array_equal(a, project_embeddings(data, seed, sample_size=data.shape[0]))
    scale = max(1.0, float(np.abs(data).max()), abs(shift))
    # A shift keeps the captured variance; the picture itself is only unique when the top
    # three singular values are apart (tied ones span a plane with no preferred axes).
    np.testing.assert_allclose(
        np.sum(a.astype(np.float64) ** 2),
        np.sum(b.astype(np.float64) ** 2),
        rtol=1e-3,
        atol=1e-3 * scale**2,
    )
    singular = np.linalg.svd(data - data.mean(axis=0), compute_uv=False)
    padded = np.concatenate([singular, np.zeros(3)])[:3]
    if padded[0] > 0 and np.min(np.abs(np.diff(padded))) > 1e-2 * padded[0]:
        np.testing.assert_allclose(a, b, atol=1e-3 * scale)


def test_sampled_fit_recovers_a_planted_plane_as_an_isometry() -> None:
    data = planted(30_000, 64, seed=3)
    xy = project_embeddings(data, seed=0, sample_size=2_000)
    # Pairwise distances on the plane survive: the map is the plane up to rotation.
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, data.shape[0], size=(2, 5_000))
    high = np.linalg.norm(data[a] - data[b], axis=1)
    low = np.linalg.norm(xy[a] - xy[b], axis=1)
    # The noise in the 62 dropped directions adds about 0.01 * sqrt(2 * 62) = 0.11 per pair.
    np.testing.assert_allclose(low, high, rtol=0.02, atol=0.15)
    # The first axis carries the larger spread (5 against 2).
    spread = xy.std(axis=0)
    assert spread[0] == pytest.approx(5.0, rel=0.05)
    assert spread[1] == pytest.approx(2.0, rel=0.05)


def test_sign_convention_keeps_the_map_from_mirroring() -> None:
    data = planted(5_000, 32, seed=4)
    first = fit_projection(data, np.random.default_rng(1), sample_size=1_000)
    second = fit_projection(data, np.random.default_rng(2), sample_size=1_000)
    # Different samples, same orientation: the axes point the same way.
    cosines = np.sum(first.components * second.components, axis=0)
    assert (cosines > 0.99).all(), cosines


def test_apply_is_chunk_independent_and_matches_a_plain_product() -> None:
    data = planted(70_000, 16, seed=5)  # more rows than one apply chunk
    proj = fit_projection(data, np.random.default_rng(0), sample_size=5_000)
    expected = (data.astype(np.float64) - proj.mean) @ proj.components
    np.testing.assert_allclose(apply_projection(data, proj), expected, rtol=1e-4, atol=1e-3)


def test_degenerate_inputs() -> None:
    assert project_embeddings(np.zeros((0, 8), dtype=np.float32), 0).shape == (0, 2)
    one = project_embeddings(np.ones((1, 8), dtype=np.float32), 0)
    np.testing.assert_array_equal(one, np.zeros((1, 2), dtype=np.float32))
    same = project_embeddings(np.tile(np.arange(4, dtype=np.float32), (10, 1)), 0)
    np.testing.assert_array_equal(same, np.zeros((10, 2), dtype=np.float32))
    line = project_embeddings(np.arange(10, dtype=np.float32)[:, None], 0)  # dim 1
    np.testing.assert_array_equal(line[:, 1], np.zeros(10, dtype=np.float32))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(5, dtype=np.float32), "expected an \\(n, dim\\) matrix"),
        (np.zeros((5, 3), dtype=np.int64), "expected floats"),
    ],
)
def test_bad_shapes_and_dtypes_name_the_field(bad: npt.NDArray[np.float32], message: str) -> None:
    with pytest.raises(ValueError, match=f"embeddings: {message}"):
        project_embeddings(bad, 0)


def test_non_finite_rows_are_refused_with_the_row_named() -> None:
    data = planted(100, 8, seed=6)
    data[42, 3] = np.inf
    proj = fit_projection(planted(100, 8, seed=7), np.random.default_rng(0))
    with pytest.raises(ValueError, match="embeddings: row 42 contains NaN or Inf"):
        apply_projection(data, proj)
    with pytest.raises(ValueError, match="embeddings: contain NaN or Inf"):
        fit_projection(data, np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not match the projection's 8"):
        apply_projection(np.zeros((3, 9), dtype=np.float32), proj)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 500), cap=st.integers(0, 600), seed=st.integers(0, 2**16))
def test_choose_rows_is_a_sorted_uniform_subset(n: int, cap: int, seed: int) -> None:
    rows = choose_rows(n, cap, np.random.default_rng(seed))
    assert rows.dtype == np.int64
    assert rows.shape == (min(n, cap),)
    assert (np.diff(rows) > 0).all()
    assert rows.size == 0 or (rows[0] >= 0 and rows[-1] < n)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), cap=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_map_rows_keep_their_ids(n: int, cap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, 6)).astype(np.float32)
    ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)  # arbitrary distinct ids
    shown, xy = project_for_map(ids, data, seed, max_points=cap)
    assert shown.shape == (min(n, cap),)
    assert xy.shape == (min(n, cap), 2)
    assert set(shown.tolist()) <= set(ids.tolist())
    if n and n <= cap:
        # Every row is shown, so the map is the plain projection of all rows.
        np.testing.assert_array_equal(shown, ids)
        full = project_embeddings(data, seed, sample_size=20_000)
        np.testing.assert_allclose(np.abs(xy), np.abs(full), atol=1e-4)
    with pytest.raises(ValueError, match="ids: expected shape"):
        project_for_map(ids[:-1] if n else np.zeros(1, np.int64), data, seed)


def test_cache_computes_once_per_key_and_evicts_least_recent() -> None:
    cache: ProjectionCache[int] = ProjectionCache(max_entries=2)
    calls: list[str] = []

    def compute(key: str) -> int:
        calls.append(key)
        return len(calls)

    assert cache.get_or_compute("a", lambda: compute("a")) == 1
    assert cache.get_or_compute("a", lambda: compute("a")) == 1
    cache.get_or_compute("b", lambda: compute("b"))
    cache.get_or_compute("a", lambda: compute("a"))  # a is now the most recent
    cache.get_or_compute("c", lambda: compute("c"))  # evicts b
    assert "a" in cache
    assert "b" not in cache
    assert calls == ["a", "b", "c"]
    assert cache.discard(lambda key: key == "a") == 1
    assert len(cache) == 1


def test_cache_single_flight_under_concurrency_and_errors_are_not_cached() -> None:
    cache: ProjectionCache[str] = ProjectionCache()
    count = 0
    count_lock = threading.Lock()

    def slow() -> str:
        nonlocal count
        with count_lock:
            count += 1
        time.sleep(0.05)
        return "map"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["map"] * 8
    assert count == 1

    def broken() -> str:
        raise RuntimeError("fit failed")

    with pytest.raises(RuntimeError, match="fit failed"):
        cache.get_or_compute("bad", broken)
    assert "bad" not in cache
    assert cache.get_or_compute("bad", lambda: "recovered") == "recovered"
