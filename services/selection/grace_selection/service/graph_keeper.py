"""A job's k-NN graph and the neighbour index behind it, kept current round after round.

Only the round thread calls `update`; readers (the dashboard's neighbour lists) read `graph`,
an immutable KnnGraph that is replaced whole, so a build never blocks or tears a read.

Embeddings arrive at ingest time but enter the graph only here, at round time: HTTP ingest
costs storage alone. The first update builds the graph with an index (hnswlib, or exact
search), and then drops the index: it holds its own copy of every vector (1.16x the raw ones
at d = 384). Later updates refresh the graph in place (core.descent), and the graph answers
what a local join cannot do itself (core.graph_search):
- `vectors` holds the current unit vector of every sample in the graph: the one copy the
  refresh reads, and the anchor that drift is measured against (float32, or float16 to halve
  it: cosines move by ~1e-3, far below any useful tau);
- a round's fresh vectors first lose the move they share (`core.repair.realign`:
  training shifts every hidden state alike, and without this fresh rows would link only to
  fresh rows), so that rows embedded by different models stay in one frame;
- every re-embedded sample's vector is replaced and every edge from or to it re-scored, so no
  row keeps a similarity from an older model;
- each row lists 2k neighbours, of which the published graph is the first k: when a
  neighbour moves away, the next one is already listed and re-scored, so the top k stay true
  without a join (measured at 100k on the fine-tuning drift: recall@10 0.87-0.92 over three
  rounds with k listed, 0.99 with 2k);
- a sample that moved beyond tau (or beyond a quarter of its neighbourhood radius, the
  distance to its farthest listed neighbour) but stayed inside that radius gets its row
  rebuilt by a local join over neighbours of neighbours plus random picks, and then every row
  that lists it is joined too, reading the rows of its first k / 2 neighbours;
- the joins of a round rebuild their rows in the order of one depth-first walk of the graph
  (`descent.walk_ranks`), so consecutive rows read overlapping rows while those are in the
  cache; any order gives the same graph;
- after a refresh, recall@k is measured on 64 rows against exact search over `vectors`:
  below the target (0.92) one pass of NN-descent's local join runs over every node's
  neighbourhood (`core.neighborhood_join`), and if recall is still below it, one pass that
  rebuilds every row from its neighbours' whole lists (dearer, and it lifts recall further:
  the local join alone let the modelled drift fall to 0.88 at 1M); below the floor (0.8)
  the graph is rebuilt from `vectors`;
- a new sample, and a sample that moved beyond tau and beyond its radius, are searched for:
  seeded from a random routing sample, then a walk over the graph (`IndexFactory.keep_index`
  keeps the build's index and re-queries it instead, the answers re-ranked by `vectors`:
  the index keeps the places samples had when they were inserted, since hnswlib updates a
  label ~8-16x slower than it inserts one); when more than 6% of N are new, or more than a
  quarter of N need a search, a fresh build from the stored embeddings is cheaper or more
  faithful.

The graph is snapshotted to `folder` after each round: `graph/` (graph, vectors and a meta),
and `index-<seq>/` (the index's own snapshot) when the index is kept, so a restart loads them
instead of rebuilding; if they are missing or damaged, the next round rebuilds from the
stored embeddings.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.descent import join_rows, rescore_edges, walk_ranks
from grace_selection.core.graph import NO_NEIGHBOR, KnnGraph
from grace_selection.core.graph_search import search_rows
from grace_selection.core.recall import sampled_recall
from grace_selection.core.repair import find_relink_rows, realign
from grace_selection.service.built_graph import (
    BUILD_BLOCK,
    BuiltGraph,
    drift_distances,
    empty_graph,
    full_graph,
    graph_in_parts,
    join_every_neighborhood,
    join_every_row,
    requery_rows,
    unit_rows_in_place,
    upsert_rows,
    write_rows,
)
from grace_selection.service.graph_snapshot import load_graph, save_graph
from grace_selection.service.keeper_types import (
    AdoptVectors,
    GraphUpdate,
    IndexFactory,
    RowSource,
)

log = logging.getLogger(__name__)
# hnswlib updates an existing label ~16x slower than it inserts a new one (measured here:
# 6000 x 32, 25 s to update all, 1.6 s to build afresh), so past ~1/16 of N to upsert a fresh
# build from the stored embeddings is cheaper than updating in place.
_REBUILD_MOVED_SHARE = 0.06
# A sample that moved far is only re-queried (no index write): a query costs about a third of
# an insert (DESIGN: ~3k inserts/s, 5k-13k queries/s), so a re-query of any share of N is
# cheaper than a rebuild. Past a quarter of N, though, the index (which keeps the places
# samples were inserted at) no longer leads a search near the new ones: rebuild. The 6% that
# counted re-queries too made the round benchmark's 1M later round rebuild (6.7% of N moved
# beyond their radius, 100k: 4.5%) for a ~20-minute build.
_REBUILD_QUERY_SHARE = 0.25
# A sample that moved by more than this share of its neighbourhood radius (the distance to its
# k-th neighbour) gets its rows joined even below tau. Measured on the round benchmark's
# drift model (10k x 384, rho 0.3, tau 0.1): recall@10 0.93 -> 0.99, 2.5x the joined samples.
_JOIN_RADIUS_SHARE = 0.25
# Each row lists this many times k neighbours; the published graph is the first k of them.
_LIST_WIDTH = 2
# A join reads the rows of a row's first k neighbours (not all 2k: half the candidates, the
# same recall on the round benchmark at 100k), in one pass (a second added ~0.001 recall for
# ~1.5x the time).
_JOIN_ITERATIONS = 1
# The whole-list pass (after the local join fell short): this many random nodes per row.
_JOIN_ALL_RANDOM = 8


class GraphKeeper:
    def __init__(self, n: int, dim: int, factory: IndexFactory, folder: Path) -> None:
        self.n, self.dim = n, dim
        self.factory = factory
        self.folder = folder
        self.seq = 0  # the log seq of the newest embedding the graph reflects
        self._built: BuiltGraph | None = None
        self._dirty = False  # changed since the last snapshot
        self._deleted = False
        self._files_lock = threading.Lock()  # save against delete

    @property
    def graph(self) -> KnnGraph | None:
        """The current graph (None before the first round); replaced whole by `update`."""
        return None if self._built is None else self._built.published

    @property
    def loaded(self) -> bool:
        return self._built is not None

    def held_vectors(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """Which of `ids` the graph holds, and their current unit vectors (float32 copies)."""
        if self._built is None:
            return np.zeros(ids.size, np.bool_), np.zeros((0, self.dim), np.float32)
        held = self._built.in_index[ids]
        return held, self._built.vectors[ids[held]].astype(np.float32)

    def update(
        self,
        ids: npt.NDArray[np.int64],
        vectors: RowSource,
        seq: int,
        k: int,
        drift_threshold: float,
        fetch_all: Callable[[], tuple[npt.NDArray[np.int64], RowSource, int]],
        *,
        matrix: npt.NDArray[np.floating] | None = None,
    ) -> GraphUpdate:
        """Bring the graph up to the newest embeddings `vectors` of the unique `ids`.

        fetch_all() returns every embedded sample (ids, their rows, seq); it is called when a
        fresh build is cheaper than updating the index in place, and the build reads the rows
        a block at a time.

        matrix: the job's (N, dim) embeddings, held by the graph as its vectors (one copy:
        service.state.JobArrays); fetch_all then reads it, and a build normalises its rows in
        place. Without it the keeper keeps its own copy.
        """
        start = time.perf_counter()
        built = self._built
        if built is not None and matrix is not None and built.vectors is not matrix:
            built = self._built = None  # a matrix that is not the graph's: build on it
        if built is not None and built.k == k and built.graph.k == _LIST_WIDTH * k:
            # Read only when refreshing: a build reads every embedded row itself, block by
            # block, and a whole copy here (all N on round 0) would double its peak.
            rows = vectors[0 : ids.size]
            # A block the source copied for us (the job's rows), or rows given away with the
            # matrix (the job's taken rows), is normalised in place; a view of the caller's
            # array is copied first.
            owned = matrix is not None or rows.base is None
            unit = unit_rows_in_place(np.array(rows, np.float32, copy=None if owned else True))
            # The re-embedded (not new) rows: their old vectors are the keeper's.
            held = np.flatnonzero(built.in_index[ids]).astype(np.int64)
            # `unit` is ours (copied above, or by the source): aligned in place, no second
            # copy of the fresh rows alive through the refresh.
            unit = realign(built.vectors, ids[held], unit, held, unit, overwrite=True)
            # One walk of the graph orders every join of the round (last round's lists: the
            # order only decides what is in the cache, never what a join finds).
            ranks = walk_ranks(built.graph)
            done = self._refresh(built, ids, unit, k, drift_threshold, seq, ranks)
            if done is not None:
                self._built, self._dirty = built, True
                self.seq = max(self.seq, seq)
                upserted, requeried, joined = done
                published = built.publish()
                recall = sampled_recall(published, built.vectors, built.in_index, seq)
                # Below the target: the local join over every neighbourhood; still below, the
                # dearer pass that rebuilds every row from its neighbours' whole lists.
                passes: tuple[tuple[str, Callable[[], KnnGraph]], ...] = (
                    ("every neighbourhood", partial(join_every_neighborhood, built, ranks)),
                    ("every row", partial(join_every_row, built, seq, _JOIN_ALL_RANDOM, ranks)),
                )
                floor, target = self.factory.recall_floor, self.factory.recall_target
                for attempt, (what, join_all) in enumerate(passes, start=1):
                    if recall is None or not floor <= recall < target:
                        break
                    log.info(
                        "graph recall@%d fell to %.3f (target %.2f): joining %s",
                        k,
                        recall,
                        target,
                        what,
                    )
                    built.graph = join_all()
                    joined = int(np.count_nonzero(built.in_index))
                    published = built.publish()
                    recall = sampled_recall(published, built.vectors, built.in_index, seq + attempt)
                if recall is None or recall >= floor:
                    seconds = time.perf_counter() - start
                    return GraphUpdate(
                        published, seconds, upserted, requeried, False, joined, recall
                    )
                log.warning(
                    "graph recall@%d fell to %.3f (floor %.2f): rebuilding from the keeper's "
                    "vectors",
                    k,
                    recall,
                    floor,
                )
                # The keeper's own vectors: they hold the frame the drift correction kept.
                embedded = np.flatnonzero(built.in_index).astype(np.int64)
                # All embedded (the usual case): read the keeper's rows in place, no copy.
                source = built.vectors if embedded.size == self.n else built.vectors[embedded]
                rebuilt = self._rebuild(embedded, source, k, matrix)
                self._built = rebuilt
                seconds = time.perf_counter() - start
                return GraphUpdate(
                    rebuilt.publish(), seconds, embedded.size, self.n, True, 0, recall
                )
            if matrix is not None:  # the build reads the fresh rows from the matrix
                write_rows(matrix, ids, unit)
        elif matrix is not None and ids.size:
            fresh = unit_rows_in_place(np.array(vectors[0 : ids.size], np.float32, copy=None))
            write_rows(matrix, ids, fresh)
        all_ids, all_vectors, all_seq = fetch_all()
        built = self._rebuild(all_ids, all_vectors, k, matrix)
        self._built, self._dirty = built, True
        self.seq = max(self.seq, seq, all_seq)
        seconds = time.perf_counter() - start
        return GraphUpdate(built.publish(), seconds, all_ids.size, self.n, True)

    def _refresh(
        self,
        built: BuiltGraph,
        ids: npt.NDArray[np.int64],
        unit: npt.NDArray[np.float32],
        k: int,
        drift_threshold: float,
        seq: int,
        ranks: npt.NDArray[np.int64] | None = None,
    ) -> tuple[int, int, int] | None:
        """Refresh `built` in place for the re-embedded `ids`; None when a rebuild is cheaper.

        Returns (upserted, re-queried, joined) counts.
        """
        graph = built.graph
        width = graph.k
        new = ~built.in_index[ids]
        old_ids = ids[~new]
        if not np.isfinite(drift_threshold) or not 0.0 <= drift_threshold <= 2.0:
            raise ValueError(
                f"threshold: must be a cosine distance in [0, 2], got {drift_threshold!r}"
            )
        # (m,) against the rows' places in `unit`: `unit[~new]` was a copy of every fresh row.
        distances = drift_distances(built.vectors, old_ids, unit, np.flatnonzero(~new))
        # Beyond the k-th neighbour's distance the old neighbourhood no longer holds the new
        # one, so a local join has nothing to start from; a row without edges has radius 0.
        last = graph.neighbors[old_ids, -1] if width else np.full(old_ids.size, NO_NEIGHBOR)
        radius = np.where(last != NO_NEIGHBOR, 1.0 - graph.similarities[old_ids, -1], 0.0)
        far = (distances > drift_threshold) & (distances > radius)
        query_ids = np.union1d(old_ids[far], ids[new]).astype(np.int64)
        inserts = int(np.count_nonzero(new))
        if (
            inserts > _REBUILD_MOVED_SHARE * self.n
            or query_ids.size > _REBUILD_QUERY_SHARE * self.n
        ):
            return None
        moved = np.zeros(self.n, dtype=np.bool_)
        moved[old_ids[distances > 0]] = True
        moved[ids[new]] = True
        built.vectors[ids] = unit
        built.in_index[ids] = True
        rng = np.random.default_rng(seq)  # same inputs, same graph
        # The keeper's own lists are rewritten in place (the published graph is a copy): a
        # copy per step held two more (N, 2k) lists at once, 0.2x the raw vectors at 1M.
        graph = rescore_edges(graph, built.vectors, moved, in_place=True)
        if built.index is None:
            graph = search_rows(
                graph, built.vectors, query_ids, built.in_index, rng, expand=k, in_place=True
            )
        else:
            if np.any(new):
                # Only new samples are inserted: hnswlib updates an existing label ~8-16x
                # slower than it inserts, and a far-moved sample is found through its fresh
                # query and the reverse edges; the index keeps its old place, re-ranked on
                # every answer.
                built.index.upsert(ids[new], unit[new])
            graph = requery_rows(built, graph, query_ids, width)
        # The rows around every node that moved beyond tau, or beyond a quarter of its own
        # radius (then its neighbours' order has changed whatever tau says, and a join costs
        # little): its own row and those that list it.
        joined = distances > np.minimum(drift_threshold, _JOIN_RADIUS_SHARE * radius)
        drifted = np.union1d(old_ids[joined], query_ids).astype(np.int64)
        drifted = drifted[built.in_index[drifted]]
        # First the drifted rows, from the rows of their first k neighbours; then every row
        # that lists one, from the rows of its first k / 2 (it reads the drifted rows fresh).
        # The second join is what keeps recall across rounds: each round it refreshes the
        # rows around everything that moved (at 1M on the fine-tuning drift, ~80% of rows),
        # so that a sample that drifted in a little at a time is found. Joining only the
        # drifted rows lost 0.03-0.05 of recall@10 a round (100k, five rounds).
        graph = join_rows(
            graph,
            built.vectors,
            drifted,
            built.in_index,
            rng,
            iterations=_JOIN_ITERATIONS,
            expand=k,
            current=True,
            in_place=True,
            ranks=ranks,
        )
        around = find_relink_rows(graph, drifted)
        around = np.setdiff1d(around[built.in_index[around]], drifted, assume_unique=True)
        built.graph = join_rows(
            graph,
            built.vectors,
            around,
            built.in_index,
            rng,
            iterations=_JOIN_ITERATIONS,
            expand=max(1, k // 2),
            current=True,
            in_place=True,
            ranks=ranks,
        )
        upserted = int(np.count_nonzero(distances > drift_threshold)) + inserts
        return upserted, int(query_ids.size), int(drifted.size + around.size)

    def empty_graph(self, k: int) -> KnnGraph:
        return empty_graph(self.n, k)

    # -- snapshots -------------------------------------------------------------------------

    def save(self, round_: int) -> None:
        """Snapshot index and graph to `folder`; a crash leaves the previous pair usable."""
        with self._files_lock:
            built = self._built
            if built is not None and self._dirty and not self._deleted:
                save_graph(self.folder, built, self.factory.kind, self.seq, round_)
                self._dirty = False

    def load(self, adopt: AdoptVectors | None = None) -> bool:
        """Load the last snapshot; False (and a clean slate) if there is none or it is unusable.

        adopt(seq, in_index, vectors): the job takes the snapshot's vectors (memory-mapped)
        into its matrix and returns it, which the graph then holds (None: the job holds newer
        rows, and the graph is rebuilt from them). Without it the keeper loads its own copy."""
        loaded = load_graph(
            self.folder,
            self.factory.kind,
            self.factory.load if self.factory.keep_index else None,
            self.n,
            self.dim,
        )
        if loaded is None:
            return False
        built, seq = loaded
        if adopt is None:
            built.vectors = np.array(built.vectors, dtype=self.factory.vector_dtype)
        else:
            matrix = adopt(seq, built.in_index, built.vectors)
            if matrix is None:
                log.info("the job holds newer vectors than its saved graph: it will be rebuilt")
                return False
            built.vectors = matrix
        self._built, self.seq = built, seq
        return True

    def delete(self) -> None:
        with self._files_lock:
            self._deleted = True
            shutil.rmtree(self.folder, ignore_errors=True)

    def _rebuild(
        self,
        ids: npt.NDArray[np.int64],
        vectors: RowSource,
        k: int,
        matrix: npt.NDArray[np.floating] | None = None,
    ) -> BuiltGraph:
        """A fresh index and graph; the vectors are normalised block by block, so that the
        build holds no second full-size copy of them. matrix: where they are written (the
        job's, which `vectors` may read), or None for a copy of the keeper's own."""
        index = self.factory.create(self.dim)
        if matrix is None:
            matrix = np.zeros((self.n, self.dim), dtype=self.factory.vector_dtype)
        built = BuiltGraph(
            index=index,
            vectors=matrix,
            in_index=np.zeros(self.n, dtype=bool),
            graph=empty_graph(self.n, _LIST_WIDTH * k),
            k=k,
        )
        if self.factory.build_parts > 1:
            built.index = None
            graph_in_parts(self.factory.create, built, ids, vectors, self.factory.build_parts)
            return built
        for start in range(0, ids.size, BUILD_BLOCK):
            block = slice(start, start + BUILD_BLOCK)
            upsert_rows(
                index, built, ids[block], normalize_rows(np.asarray(vectors[block], np.float32))
            )
        built.graph = full_graph(index, built, self.n, _LIST_WIDTH * k)
        if not self.factory.keep_index:
            built.index = None
        return built
