"""CoresetSampler: a torch Sampler over the GRACE service's coreset rounds.

The stream a rank yields is a pure function of (round data, seed, round, offset):

    element at `offset` of round r = slice_r[ pass_order(seed, r, offset // L)[offset % L] ]

where slice_r is this rank's share of round r (the service's seeded slicing, API.md) and
L = len(slice_r), equal on every rank. One epoch is one pass over the slice, or with
`fixed_epochs`, the next L samples of the stream whatever round they come from. At switch
points (RoundSchedule) the sampler moves to the newest round that every rank already has
in hand, with offset 0; it never waits for the service during training. `state_dict()` is
{job, round, offset, seed, world}; loading it continues with exactly the samples that
were still to come.

With torch.distributed initialised, rank 0 decides (which round to start on, whether to
switch) and broadcasts over a private gloo group, so every rank stays on the same round
even while the service comes and goes. Without a process group, rank and world come from
the launcher's RANK and WORLD_SIZE (ranks.py), or construction refuses with the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from grace_client.client import CoresetClient
from grace_client.consensus import Consensus
from grace_client.errors import GraceError
from grace_client.feed import ClientSliceSource, RoundFeed, SliceSource
from grace_client.order import pass_order
from grace_client.payloads import IndexSlice
from grace_client.ranks import resolve_ranks
from grace_client.replay import Replay
from grace_client.schedule import RoundSchedule
from grace_client.weights import ids_array, lookup_weights, weighted_mean
from grace_proto.models import RoundManifest

log = logging.getLogger("grace_client")

STATE_KEYS = ("job", "round", "offset", "seed", "world")
_RUN = 4096  # samples converted to Python ints at a time


class CoresetSampler(Sampler[int]):
    """Yields this rank's sample ids of the current coreset round, round after round.

    source: a CoresetClient (or any SliceSource, e.g. for tests). job: the job id.
    rank, world: this rank's place in the slicing; default: torch.distributed's, else the
        launcher's RANK and WORLD_SIZE (torchrun, accelerate launch), else 0 and 1.
    seed: seeds each pass's shuffle (with the round and pass number).
    schedule: when to consider a newer round (default: at every epoch start).
    fixed_epochs: every epoch yields exactly len(sampler) samples (the length at its
        start), also when a step schedule switches rounds inside it; by default a mid-pass
        switch ends the epoch. Loops that count steps per epoch (the Hugging Face Trainer)
        need fixed epochs.
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
        fixed_epochs: bool = False,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        ranks = resolve_ranks(
            rank,
            world,
            distributed=(dist.get_rank(), dist.get_world_size()) if distributed else None,
            consensus=consensus,
            env=os.environ,
        )
        self.rank, self.world = ranks.rank, ranks.world
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.job = job
        self.seed = seed
        self.schedule = schedule or RoundSchedule()
        self.fixed_epochs = fixed_epochs
        self.startup_timeout = startup_timeout
        slices = ClientSliceSource(source, job) if isinstance(source, CoresetClient) else source
        self._feed = RoundFeed(
            slices, rank=self.rank, world=self.world, poll_interval=poll_interval, name=job
        )
        self._consensus = Consensus(process_group if consensus else False)
        self._generation = 0
        self._orders: dict[tuple[int, int], npt.NDArray[np.int64]] = {}
        self._previous: IndexSlice | None = None
        self._epoch_start = (0, 0)
        self._epoch_log = Replay()  # the decisions of the current epoch, for epoch_state_dict
        self._epoch_done = False
        self._epoch_target: int | None = None  # samples per epoch when fixed_epochs
        self._replay: Replay | None = None  # decisions to repeat (load_state_dict)
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
        self._epoch_log, self._epoch_done = Replay(), False
        replay, self._replay = self._replay, None
        target = len(self._slice) if self.fixed_epochs else None
        self._epoch_target = target
        while generation == self._generation:
            length = len(self._slice)
            if length == 0:
                return
            if target is not None and yielded >= target:
                self._epoch_done = True
                return
            if target is None and self._offset > 0 and self._offset % length == 0 and yielded:
                self._epoch_done = True
                return  # one pass over the slice is one epoch
            if self.schedule.is_switch_point(self._offset, length):
                switched = self._decide_switch(yielded, replay)
                self._epoch_log = self._epoch_log.decided(
                    yielded, self._slice.round if switched and yielded else None
                )
                if switched:
                    if yielded == 0:  # the epoch starts on the new round after all
                        self._epoch_start = (self._slice.round, 0)
                        if target is not None:
                            target = self._epoch_target = len(self._slice)
                    elif target is None:
                        self._epoch_done = True
                        return  # a mid-pass switch (step schedule) ends the epoch
                    continue
            # A run with no boundary inside: up to the pass end, the next switch point, the
            # epoch's end or a chunk (so that a huge slice is never copied whole).
            offset = self._offset
            stop = min(
                (offset // length + 1) * length,
                self.schedule.next_switch_point(offset, length),
                offset + (_RUN if target is None else min(_RUN, target - yielded)),
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
        The start state carries "replay": the switch decisions this epoch has made so far
        (a DataLoader reads ahead of training), so that fast-forwarding repeats them
        exactly instead of asking the service again.
        """
        round_, offset = self._epoch_start
        if completed:
            if self._epoch_done:
                return self.state_dict()
            if self._epoch_target is not None:
                # L samples from the start, or from the last switch: a switch starts its round
                # at offset 0 (and a DataLoader may not have asked past the last sample yet).
                moves = sorted(self._epoch_log.switches.items())
                if moves:
                    round_, offset = moves[-1][1], self._epoch_target - moves[-1][0]
                else:
                    offset += self._epoch_target
            elif round_ == self._slice.round:
                length = len(self._slice)
                offset = (offset // length + 1) * length if length else 0
            return {**self.state_dict(), "round": round_, "offset": offset}
        state = {**self.state_dict(), "round": round_, "offset": offset}
        if self._epoch_log.decided_until > 0:
            state["replay"] = self._epoch_log.to_dict()
        return state

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
        replay = Replay.from_dict(state["replay"], after=round_) if "replay" in state else None
        self._slice = self._obtain_everywhere(round_)
        self.seed = seed
        self._offset = offset
        self._epoch_start = (round_, offset)
        self._replay = replay
        self._orders.clear()
        self._generation += 1  # an iterator handed out before the load stops here

    # -- weights -----------------------------------------------------------------------

    def weights_for(self, ids: Any, round_: int | None = None) -> npt.NDArray[np.float32] | None:
        """CRAIG-style weights of `ids` from the current (or just previous) round, else 1.0.

        round_: the round the batch came from, when known (`round_at`): its weights win for
        ids that are in both rounds. None when the round is unweighted. The raw weights sum
        to N over a round; for a loss, use weighted_mean (it normalises them in the batch).
        """
        pieces = (self._slice, self._previous)
        if self._previous is not None and round_ == self._previous.round:
            pieces = (self._previous, self._slice)
        return lookup_weights(ids, pieces)

    def weighted_mean(self, ids: Any, losses: torch.Tensor) -> torch.Tensor:
        """The batch loss the round's weights call for: sum(w * loss) / sum(w), a scalar.

        ids: the batch's sample ids (B,), as the sampler yielded them (list, array or
        tensor); losses: their per-sample losses (B,), with grad. The plain mean when the
        round is unweighted. Use it in place of `losses.mean()`.
        """
        wanted = ids_array(ids)
        if wanted.shape[0] != losses.numel():
            raise ValueError(
                f"losses: {losses.numel()} per-sample losses for {wanted.shape[0]} ids; pass "
                "one loss per id (reduction='none'), in the order of the ids"
            )
        return weighted_mean(losses, self.weights_for(wanted))

    def round_manifest(self, round_: int | None = None) -> RoundManifest | None:
        """A round's manifest (count, churn, rescored share) once the background thread has
        fetched it; default: the current round's. Never a request."""
        return self._feed.manifest(self._slice.round if round_ is None else round_)

    def round_at(self, position: int) -> int:
        """The round of the sample `position` samples into the current epoch.

        A DataLoader reads ahead, so `round` may already name a round the training loop has
        not reached; a loop that counts the samples it trained this epoch asks this instead.
        """
        round_ = self._epoch_start[0]
        for switched_at, moved_to in sorted(self._epoch_log.switches.items()):
            if switched_at > position:
                break
            round_ = moved_to
        return round_

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

    def _decide_switch(self, position: int, replay: Replay | None) -> bool:
        """At a switch point `position` samples into the epoch: move to a newer round?

        While a loaded replay covers the position, its recorded decision is repeated (the
        same on every rank, since all load the same state); otherwise rank 0 decides.
        """
        if replay is not None and position < replay.decided_until:
            target = replay.switches.get(position)
            if target is None or target <= self._slice.round:
                return False
            self._move_to(self._obtain_everywhere(target))
            return True
        return self._switch()

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
        self._move_to(piece)
        return True

    def _move_to(self, piece: IndexSlice) -> None:
        current = self._slice.round
        self._previous, self._slice, self._offset = self._slice, piece, 0
        self._orders.clear()
        self._feed.forget_below(current)
        log.info(
            "GRACE %s: rank %d switches from round %d to round %d (%d samples per rank)",
            self.job,
            self.rank,
            current,
            piece.round,
            len(piece),
        )

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
