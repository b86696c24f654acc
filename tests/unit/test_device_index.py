"""The GPU path's exact index, run on the CPU (device="cpu") against the brute-force oracle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from grace_proto.usage import MissingExtraError
from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.adapters.device_index import DeviceExactIndex, import_backend
from grace_selection.api.app import make_index_factory
from grace_selection.settings import ServiceSettings

pytest.importorskip("torch")


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("block_bytes", [1 << 30, 4 * 3000 * 7])  # one block; blocks of 7 rows
def test_torch_search_matches_brute_force(block_bytes: int) -> None:
    data = vectors(3000, 24, seed=0)
    ids = np.arange(0, 6000, 2, dtype=np.int64)  # gaps: absent ids must never be answered
    device = DeviceExactIndex(24, "torch", "cpu", block_bytes=block_bytes)
    exact = BruteForceIndex(24)
    device.upsert(ids, data)
    exact.upsert(ids, data)
    graph, oracle = device.knn_graph(10), exact.knn_graph(10)
    # Same values in the same order; ids may swap only where two similarities tie to rounding
    # (torch and numpy sum the products in different orders).
    assert np.allclose(graph.similarities, oracle.similarities, atol=1e-5)
    swapped = graph.neighbors != oracle.neighbors
    assert swapped.mean() < 1e-3
    assert np.array_equal(graph.neighbors == -1, oracle.neighbors == -1)
    queries = vectors(50, 24, seed=1)
    (got_ids, got_sims), (want_ids, want_sims) = device.query(queries, 7), exact.query(queries, 7)
    assert (got_ids != want_ids).mean() < 1e-2
    assert np.allclose(got_sims, want_sims, atol=1e-5)


def test_short_index_pads_and_snapshot_round_trips(tmp_path: Path) -> None:
    index = DeviceExactIndex(8, "torch", "cpu")
    index.upsert(np.array([3, 5], dtype=np.int64), vectors(2, 8, seed=2))
    ids, sims = index.query(vectors(4, 8, seed=3), 4)
    assert (ids[:, 2:] == -1).all()
    assert np.isneginf(sims[:, 2:]).all()
    index.save(tmp_path / "snap")
    loaded = DeviceExactIndex.load(tmp_path / "snap", "torch", "cpu")
    assert len(loaded) == 2
    assert np.array_equal(loaded.knn_graph(1).neighbors, index.knn_graph(1).neighbors)


def test_the_service_wires_it_by_setting_and_it_is_off_by_default() -> None:
    assert ServiceSettings().index == "hnsw"
    factory = make_index_factory("torch", device="cpu")
    assert isinstance(factory.create(4), DeviceExactIndex)


def test_a_missing_torch_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ValidationError, match=r"grace-coresets\[gpu\]"):
        ServiceSettings(index="torch")
    monkeypatch.setitem(sys.modules, "torch", None)  # the import itself fails
    with pytest.raises(MissingExtraError, match=r"pip install 'grace-coresets\[gpu\]'"):
        import_backend("torch", "cpu")


def test_no_visible_gpu_is_a_clear_error_at_start() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(RuntimeError, match="GRACE_INDEX_DEVICE=cpu"):
        make_index_factory("torch", device="cuda")


def test_faiss_matches_brute_force_where_installed() -> None:
    pytest.importorskip("faiss")
    data = vectors(500, 16, seed=4)
    device, exact = DeviceExactIndex(16, "faiss", "cpu"), BruteForceIndex(16)
    for index in (device, exact):
        index.upsert(np.arange(500, dtype=np.int64), data)
    assert np.array_equal(device.knn_graph(5).neighbors, exact.knn_graph(5).neighbors)
