"""What a job's graph keeper takes and gives: how to make and load its index (`IndexFactory`),
where it reads rows (`RowSource`), how a job takes saved vectors into its matrix
(`AdoptVectors`), and what an update did (`GraphUpdate`). service.graph_keeper keeps the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.ports import NeighborIndex
from grace_selection.core.graph import KnnGraph


class RowSource(Protocol):
    """(m, dim) rows read a slice at a time: an array, or the job's embeddings copied block by
    block under its lock (service.state.EmbeddedRows)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, rows: slice, /) -> npt.NDArray[np.floating]: ...


# (seq, in_index, vectors) -> the job's matrix holding them, or None (GraphKeeper.load)
AdoptVectors = Callable[
    [int, npt.NDArray[np.bool_], npt.NDArray[np.floating]], npt.NDArray[np.floating] | None
]


@dataclass(frozen=True, slots=True)
class IndexFactory:
    """How to make an empty index of a dimension, and how to load a saved one."""

    kind: str
    create: Callable[[int], NeighborIndex]
    load: Callable[[Path], NeighborIndex]
    vector_dtype: str = "float32"  # the keeper's copy of the unit vectors: float32 or float16
    # After a refresh, recall@k of the graph on a sample of rows against exact search over the
    # keeper's vectors; below this floor the graph is rebuilt (0 never rebuilds for it).
    recall_floor: float = 0.8
    # Below this (and at or above the floor) every row is joined once more, then measured
    # again: a pass reading whole lists costs about twice a round's joins (20 s at 1M), a
    # rebuild 15x that. 0.92, not 0.9: the 64-row sample read 0.900 in a 1M round whose
    # recall was 0.885 (docs/results/round_long.md).
    recall_target: float = 0.92
    # Keep the index after a build and answer re-queries from it. By default the build's
    # index is dropped (it holds its own copy of every vector, 1.16x the raw ones at d = 384)
    # and the graph answers them itself (core.graph_search).
    keep_index: bool = False
    # A build inserts the samples into this many indexes, one after the other (each queried
    # by every sample, then dropped): the index alive at once holds 1/parts of the vectors.
    build_parts: int = 1

    def __post_init__(self) -> None:
        if self.build_parts < 1:
            raise ValueError(f"build_parts: must be >= 1, got {self.build_parts}")
        if self.keep_index and self.build_parts > 1:
            raise ValueError("keep_index needs build_parts=1: a build in parts keeps no index")


@dataclass(frozen=True, slots=True)
class GraphUpdate:
    """upserted: samples whose new place the graph took in (new, or moved beyond tau; all
    embedded samples on a rebuild); requeried: rows the index answered afresh (all N on a
    rebuild); joined: rows rebuilt by local joins."""

    graph: KnnGraph
    seconds: float
    upserted: int
    requeried: int
    rebuilt: bool
    joined: int = 0
    # recall@k of the refreshed graph on a sample of rows (None after a build, which is exact
    # or as good as the index makes it); a refresh that fell below the floor is rebuilt.
    recall: float | None = None
