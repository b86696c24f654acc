"""Rank 0 of a process group decides, every rank follows: how samplers agree on rounds.

The collectives run on a private gloo group, so that they take CPU tensors whatever the
training backend is, and can never interleave with the model's NCCL collectives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from grace_client.errors import GraceError

_FAILED = -1


class Consensus:
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

    def decide(self, choose: Callable[[], int], *, what: str) -> int:
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
