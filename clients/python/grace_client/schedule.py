"""When a sampler may move on to a newer round: after whole epochs or after a number of steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoundSchedule:
    """every_epochs: consider a newer round at the start of every k-th pass over the slice.
    every_steps: instead, consider one after every k optimizer steps of `batch_size` samples
        (counted from the start of the current round); a switch then ends the epoch early.

    "Consider": the newer round is taken only if it is already prefetched on every rank;
    otherwise training goes on with the current round and the next switch point tries again.
    """

    every_epochs: int = 1
    every_steps: int | None = None
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {self.every_epochs}")
        if self.every_steps is not None and self.every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or None, got {self.every_steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def steps(cls, every: int, batch_size: int) -> RoundSchedule:
        return cls(every_steps=every, batch_size=batch_size)

    @classmethod
    def epochs(cls, every: int = 1) -> RoundSchedule:
        return cls(every_epochs=every)

    def period(self, slice_len: int) -> int:
        """Samples between two switch points (at least 1)."""
        if self.every_steps is not None:
            return self.every_steps * self.batch_size
        return max(self.every_epochs * slice_len, 1)

    def is_switch_point(self, offset: int, slice_len: int) -> bool:
        """Whether position `offset` (samples into the current round) may start a new round."""
        if offset <= 0 or slice_len <= 0:
            return False
        return offset % self.period(slice_len) == 0

    def next_switch_point(self, offset: int, slice_len: int) -> int:
        """The first switch point after `offset`."""
        period = self.period(slice_len)
        return (offset // period + 1) * period
