"""The switch decisions of one epoch, kept so that a resumed epoch can repeat them exactly.

Whether the sampler moves to a newer round at a switch point depends on what was fetched by
then, which is timing, not data. A loop that resumes by fast-forwarding through the start of
an epoch (Hugging Face's Trainer skips the batches it already trained on) would otherwise
decide those switch points again and could switch where the first run did not. The epoch's
log says, for every switch point before `decided_until` (positions counted in samples from
the epoch's start), whether it switched and to which round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Replay:
    """decided_until: switch points at positions below it were decided. switches: position
    -> the round moved to there; every other decided switch point stayed."""

    decided_until: int = 0
    switches: Mapping[int, int] = field(default_factory=dict)

    def decided(self, position: int, moved_to: int | None) -> Replay:
        """This log plus the decision at `position` (None: stayed on the round)."""
        switches = dict(self.switches)
        if moved_to is not None:
            switches[position] = moved_to
        return Replay(max(self.decided_until, position + 1), switches)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"decided_until": int, "switches": [[position, round], ...]}."""
        return {
            "decided_until": self.decided_until,
            "switches": [[p, r] for p, r in sorted(self.switches.items())],
        }

    @classmethod
    def from_dict(cls, raw: Any, *, after: int) -> Replay:
        """Parse to_dict's form, checked; `after`: the round the epoch starts on."""
        fix = (
            'state_dict.replay: expected {"decided_until": int >= 0, "switches": '
            "[[position, round], ...]} with positions below decided_until and rounds "
            f"increasing after round {after}"
        )
        if not isinstance(raw, Mapping):
            raise ValueError(f"{fix}; got {raw!r}")
        until, pairs = raw.get("decided_until"), raw.get("switches")
        if not isinstance(until, int) or until < 0 or not isinstance(pairs, list):
            raise ValueError(f"{fix}; got {dict(raw)!r}")
        switches: dict[int, int] = {}
        last_position, last_round = -1, after
        for pair in pairs:
            if not (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(v, int) for v in pair)
                and last_position < pair[0] < until
                and pair[1] > last_round
            ):
                raise ValueError(f"{fix}; got switch {pair!r}")
            last_position, last_round = pair[0], pair[1]
            switches[pair[0]] = pair[1]
        return cls(until, switches)
