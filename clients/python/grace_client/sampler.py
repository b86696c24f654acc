"""CoresetSampler: a torch Sampler over the GRACE service's coreset rounds.

The stream a rank yields is a pure function of (round data, seed, round, offset):

    element at `offset` of round r = slice_r[ pass_order(seed, r, offset // L)[offset % L] ]

where slice_r is this rank's share of round r (the service's seeded slicing, API.md) and
L = len(slice_r), equal on every rank. One epoch is one pass over the slice. At switch
points (RoundSchedule) the sampler moves to the newest round that every rank already has
in hand, with offset 0; it never waits for the service during training. `state_dict()` is
{job, round, offset, seed, world}; loading it continues with exactly the samples that
were still to come.

With torch.distributed initialised, rank 0 decides (which round to start on, whether to
switch) and broadcasts over a private gloo group, so every rank stays on the same round
even while the service comes and goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from grace_client.client import CoresetClient
from grace_client.errors import GraceError
from grace_client.feed import ClientSliceSource, RoundFeed, SliceSource
from grace_client.order import pass_order
from grace_client.payloads import IndexSlice
from grace_client.schedule import RoundSchedule

log = logging.getLogger("grace_client")

STATE_KEYS = ("job", "round", "offset", "seed", "world")
_FAILED = -1
_RUN = 4096  # samples converted to Python ints at a time


class CoresetSampler(Sampler[int]):
    """Yields this rank's sample ids of the current coreset round, round after round.

    source: a CoresetClient (or any SliceSource, e.g. for tests). job: the job id.
    rank, world: this rank's place in the slicing; default: torch.distributed's, else 0, 1.
    seed: seeds each pass's shuffle (with the round and pass number).
    schedule: when to consider a newer round (default: at every epoch start).
    start_round: start on this round instead of the newest published one.
    poll_interval: seconds between the background checks for a new round.
    startup_timeout: how long construction / load_state_dict may wait for the service.
    process_group: the group whose rank 0 decides; default: a new gloo group over all ranks
        when torch.distributed is initialised with more than one process. Pass
        `consensus=False` to make each rank decide alone (only for independent processes).
    """

    def __init__(
        self,
        source: CoresetClient | SliceSource,
        job: str,
        *,
        rank: int | None = None,
        world: int | None = None,
        seed: int = 0,
        schedule: RoundSchedule | None = None,
        start_round: int | None = None,
        poll_interval: float = 5.0,
        startup_timeout: float = 600.0,
        prefetch: bool = True,
        process_group: Any = None,
        consensus: bool = True,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world = world if world is not None else (dist.get_world_size() if distributed else 1)
        if not (self.world >= 1 and 0 <= self.rank < self.world):
            raise ValueError(f"rank, world: need 0 <= rank < world, got {self.rank}, {self.world}")
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.job = job
        self.seed = seed
        self.schedule = schedule or RoundSchedule()
        self.startup_timeout = startup_timeout
        slices = ClientSliceSource(source, job) if isinstance(source, CoresetClient) else source
        self._feed = RoundFeed(
            slices, rank=self.rank, world=self.world, poll_interval=poll_interval, name=job
        )
        self._consensus = _Consensus(process_group if consensus else False)
        self._generation = 0
        self._orders: dict[tuple[int, int], npt.NDArray[np.int64]] = {}
        self._previous: IndexSlice | None = None
        self._epoch_start = (0, 0)
        first = self._consensus.decide(
            lambda: (
                self._feed.initial_round(startup_timeout) if start_round is None else start_round
            ),
            what="choose the starting round",
        )
        self._slice = self._obtain_everywhere(first)
        self._offset = 0
        if prefetch:
            self._feed.start()

    # -- the Sampler protocol ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slice)

    def __iter__(self) -> Iterator[int]:
        self._generation += 1
        return self._epoch(self._generation)

    def _epoch(self, generation: int) -> Iterator[int]:
        yielded = 0
        self._epoch_start = (self._slice.round, self._offset)
        while generation == self._generation:
            length = len(self._slice)
            if length == 0:
                return
            if self._offset > 0 and self._offset % length == 0 and yielded > 0:
                return  # one pass over the slice is one epoch
            if self.schedule.is_switch_point(self._offset, length) and self._switch():
                if yielded > 0:
                    return  # a mid-pass switch (step schedule) ends the epoch
                self._epoch_start = (self._slice.round, 0)
                continue
            # A run with no boundary inside: up to the pass end, the next switch point, or a
            # chunk (so that a huge slice is never copied whole); ids come out as Python ints.
            offset = self._offset
            stop = min(
                (offset // length + 1) * length,
                self.schedule.next_switch_point(offset, length),
                offset + _RUN,
            )
            for sample in self._run(offset, stop):
                if generation != self._generation:
                    return  # load_state_dict() or a new iterator took over
                self._offset += 1
                yielded += 1
                yield sample

    # -- state -------------------------------------------------------------------------

    @property
    def round(self) -> int:
        """The round the next sample comes from."""
        return self._slice.round

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def current_slice(self) -> IndexSlice:
        return self._slice

    def state_dict(self) -> dict[str, Any]:
        """{job, round, offset, seed, world}: where the stream stands now."""
        return {
            "job": self.job,
            "round": self._slice.round,
            "offset": self._offset,
            "seed": self.seed,
            "world": self.world,
        }

    def epoch_state_dict(self, *, completed: bool = False) -> dict[str, Any]:
        """The state at the start of the current epoch, or with `completed`, at its end.

        For loops that fast-forward through an epoch themselves on resume (Hugging Face's
        Trainer skips the batches it already trained on): they need the epoch's start, or
        when the checkpoint falls exactly on an epoch boundary, the next epoch's start.
        """
        round_, offset = self._epoch_start
        if completed and round_ == self._slice.round:
            length = len(self._slice)
            offset = (offset // length + 1) * length if length else 0
        return {**self.state_dict(), "round": round_, "offset": offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where `state` stood: same round, same offset, same seed."""
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"state_dict: missing {missing}; expected keys {list(STATE_KEYS)}")
        if state["job"] != self.job:
            raise ValueError(f"state_dict.job: saved for job {state['job']!r}, not {self.job!r}")
        if int(state["world"]) != self.world:
            raise ValueError(
                f"state_dict.world: saved with world={state['world']}, now world={self.world}; "
                "an exact resume needs the same world size (or start fresh with start_round=)"
            )
        offset, seed, round_ = int(state["offset"]), int(state["seed"]), int(state["round"])
        if offset < 0 or seed < 0 or round_ < 0:
            raise ValueError(f"state_dict: round/offset/seed must be >= 0, got {dict(state)}")
        self._slice = self._obtain_everywhere(round_)
        self.seed = seed
        self._offset = offset
        self._epoch_start = (round_, offset)
        self._orders.clear()
        self._generation += 1  # an iterator handed out before the load stops here

    # -- weights -----------------------------------------------------------------------

    def weights_for(self, ids: npt.ArrayLike) -> npt.NDArray[np.float32] | None:
        """CRAIG-style weights of `ids` from the current (or just previous) round, else 1.0.

        None when the round is unweighted.
        """
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.ones(wanted.shape[0], dtype=np.float32)
        found = np.zeros(wanted.shape[0], dtype=bool)
        any_weights = False
        for piece in (self._slice, self._previous):
            if piece is None or piece.weights is None or len(piece) == 0:
                continue
            any_weights = True
            order = np.argsort(piece.indices, kind="stable")
            sorted_ids = piece.indices[order]
            pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
            hit = ~found & (sorted_ids[pos] == wanted)
            out[hit] = piece.weights[order[pos[hit]]]
            found |= hit
        return out if any_weights else None

    def poll(self) -> None:
        """Look for a newer round now (the background thread does this every poll_interval)."""
        self._feed.poll_once()

    @property
    def service_reachable(self) -> bool:
        """False while the last look at the service failed (training goes on regardless)."""
        return self._feed.reachable

    def close(self) -> None:
        """Stop the background prefetch thread."""
        self._feed.close()

    # -- internals ---------------------------------------------------------------------

    def _run(self, start: int, stop: int) -> list[int]:
        """The samples at offsets [start, stop), all within one pass of the current round."""
        length = len(self._slice)
        key = (self._slice.round, start // length)
        order = self._orders.get(key)
        if order is None:
            self._orders = {key: pass_order(self.seed, key[0], key[1], length)}
            order = self._orders[key]
        first = start % length
        positions = order[first : first + (stop - start)]
        ids: list[int] = self._slice.indices[positions].tolist()
        return ids

    def _switch(self) -> bool:
        """Move to the newest round every rank holds, if it is newer; never blocks on HTTP."""
        current = self._slice.round
        newest = self._consensus.decide(lambda: self._feed.newest_ready() or current, what="")
        if newest <= current:
            return False
        piece = self._feed.ready(newest)
        if piece is None:
            self._feed.want(newest)
        if not self._consensus.all_true(piece is not None) or piece is None:
            return False
        self._previous, self._slice, self._offset = self._slice, piece, 0
        self._orders.clear()
        self._feed.forget_below(current)
        log.info(
            "GRACE %s: rank %d switches from round %d to round %d (%d samples per rank)",
            self.job,
            self.rank,
            current,
            newest,
            len(piece),
        )
        return True

    def _obtain_everywhere(self, round_: int) -> IndexSlice:
        """This rank's slice of `round_` (blocking), raising on every rank if any rank fails."""
        piece: IndexSlice | None = None
        error: Exception | None = None
        try:
            piece = self._feed.obtain(round_, self.startup_timeout)
        except GraceError as exc:
            error = exc
        if not self._consensus.all_true(error is None) or piece is None:
            raise GraceError(
                f"{self.job}: could not get round {round_} for every rank "
                f"(this rank {self.rank}: {error or 'ok'}); is the service reachable?"
            ) from error
        return piece


class _Consensus:
    """Rank 0 of a group decides and broadcasts; without torch.distributed, a pass-through."""

    def __init__(self, group: Any) -> None:
        self.group: Any = None
        self.active = False
        if group is False or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() <= 1 and group is None:
            return
        # A private gloo group: CPU tensors whatever the training backend is, and sampler
        # collectives can never interleave with the model's NCCL collectives.
        self.group = group if group is not None else dist.new_group(backend="gloo")
        self.active = dist.get_world_size(self.group) > 1
        self._src = dist.get_global_rank(self.group, 0) if self.active else 0
        self._is_root = dist.get_rank(self.group) == 0 if self.active else True

    def decide(self, choose: Any, *, what: str) -> int:
        """The value rank 0's `choose()` returns, on every rank (errors raise on every rank)."""
        if not self.active:
            return int(choose())
        value = _FAILED
        error: Exception | None = None
        if self._is_root:
            try:
                value = int(choose())
            except Exception as exc:
                error = exc
        box = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(box, src=self._src, group=self.group)
        decided = int(box.item())
        if decided == _FAILED:
            if error is not None:
                raise error
            raise GraceError(f"rank 0 could not {what or 'decide'}; see its log")
        return decided

    def all_true(self, flag: bool) -> bool:
        if not self.active:
            return flag
        box = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(box, op=dist.ReduceOp.MIN, group=self.group)
        return bool(box.item())
