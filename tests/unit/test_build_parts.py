"""GRACE_GRAPH_BUILD_PARTS: a graph built with several indexes, one after the other, is the
graph one index builds (exact indexes: the same lists), and the settings refuse a kept index
with parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from grace_selection.api.app import make_index_factory
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.round_step import step_round
from grace_selection.service.state import JobArrays
from grace_selection.settings import ServiceSettings

N, DIM, K = 500, 12, 6


def built_graph(tmp_path: Path, kind: str, parts: int, embedded: np.ndarray) -> GraphKeeper:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(10, DIM))
    rows = (centres[rng.integers(0, 10, N)] + 0.4 * rng.normal(size=(N, DIM))).astype(np.float32)
    arrays = JobArrays(N, DIM, shared=True)
    arrays.apply(EmbeddingBatch("e", 0, embedded, rows[embedded], b""), 1)
    keeper = GraphKeeper(N, DIM, make_index_factory(kind, build_parts=parts), tmp_path / kind)
    config = SelectionConfig(k=K, budget_fraction=0.1)
    step_round(arrays, keeper, config, np.full(N, np.nan, np.float32), round_=0, seed=0)
    return keeper


@pytest.mark.parametrize("parts", [2, 3])
def test_exact_parts_build_the_graph_of_one_index(tmp_path: Path, parts: int) -> None:
    embedded = np.setdiff1d(np.arange(N), np.arange(0, N, 11)).astype(np.int64)
    one = built_graph(tmp_path / "one", "brute", 1, embedded)._built
    many = built_graph(tmp_path / "many", "brute", parts, embedded)._built
    assert one is not None
    assert many is not None
    assert many.index is None
    np.testing.assert_array_equal(many.in_index, one.in_index)
    np.testing.assert_allclose(many.graph.similarities, one.graph.similarities, atol=1e-5)
    same = many.graph.neighbors == one.graph.neighbors
    assert same.mean() > 0.99  # ties may order differently
    absent = np.arange(0, N, 11)
    assert not np.isin(many.graph.neighbors, absent).any()  # no edge to a sample not embedded


def test_hnsw_parts_find_the_neighbours(tmp_path: Path) -> None:
    embedded = np.arange(N, dtype=np.int64)
    exact = built_graph(tmp_path / "exact", "brute", 1, embedded)._built
    parts = built_graph(tmp_path / "parts", "hnsw", 2, embedded)._built
    assert exact is not None
    assert parts is not None
    hits = [
        np.intersect1d(a[:K], b[:K]).size
        for a, b in zip(exact.graph.neighbors, parts.graph.neighbors, strict=True)
    ]
    assert sum(hits) / (K * N) > 0.98


def test_a_kept_index_with_parts_is_refused() -> None:
    with pytest.raises(ValidationError, match="GRACE_GRAPH_BUILD_PARTS=1"):
        ServiceSettings(graph_keep_index=True, graph_build_parts=2)
    with pytest.raises(ValueError, match="build_parts=1"):
        make_index_factory("hnsw", keep_index=True, build_parts=2)
