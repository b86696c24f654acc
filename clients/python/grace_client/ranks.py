"""Which slice a trainer process takes: its rank and world size, from torch or the launcher.

torchrun, `accelerate launch` and DeepSpeed's launcher start each process with RANK and
WORLD_SIZE in its environment (the global rank and the number of processes), and the
training script then creates the process group. A sampler made before that group exists
must not quietly act as rank 0 of 1: every process would train on the whole coreset and
decide on rounds alone. So the environment is read the way those launchers write it, and
where ranks would have to agree on rounds without a group to agree over, construction
refuses with the fix.

Pure functions of their arguments (the environment comes in as a mapping), no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from grace_client.errors import GraceError

RANK_VARIABLE = "RANK"
WORLD_VARIABLE = "WORLD_SIZE"


class LaunchError(GraceError):
    """The process's rank and world size are missing, contradictory or cannot be agreed on."""


@dataclass(frozen=True, slots=True)
class Ranks:
    """rank, world: this process's place in the slicing. source: where they came from
    ("argument", "torch.distributed", "environment" or "default")."""

    rank: int
    world: int
    source: str


def ranks_from_environment(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) as a launcher set them, None when neither is set.

    Raises LaunchError when only one is set, either is not an integer, or they do not fit.
    """
    raw_rank, raw_world = env.get(RANK_VARIABLE), env.get(WORLD_VARIABLE)
    if raw_rank is None and raw_world is None:
        return None
    if raw_rank is None or raw_world is None:
        present, missing = RANK_VARIABLE, WORLD_VARIABLE
        if raw_rank is None:
            present, missing = missing, present
        raise LaunchError(
            f"{present} is set but {missing} is not: launchers (torchrun, accelerate launch) set "
            f"both; set {missing} too, or pass rank= and world= to the sampler"
        )
    values: dict[str, int] = {}
    for name, raw in ((RANK_VARIABLE, raw_rank), (WORLD_VARIABLE, raw_world)):
        try:
            values[name] = int(raw.strip())
        except ValueError:
            raise LaunchError(f"{name}={raw!r} is not an integer; unset it or fix it") from None
    rank, world = values[RANK_VARIABLE], values[WORLD_VARIABLE]
    if not (world >= 1 and 0 <= rank < world):
        raise LaunchError(
            f"{RANK_VARIABLE}={rank}, {WORLD_VARIABLE}={world}: need 0 <= RANK < WORLD_SIZE"
        )
    return rank, world


def resolve_ranks(
    rank: int | None,
    world: int | None,
    *,
    distributed: tuple[int, int] | None,
    consensus: bool,
    env: Mapping[str, str],
) -> Ranks:
    """This process's (rank, world) for slicing, checked.

    rank, world: what the caller passed (None: work it out). distributed: (rank, world) of
    the initialised default process group, None when there is none. consensus: whether the
    ranks are to agree on rounds (they need a process group for that when world > 1).
    """
    if (rank is None) != (world is None):
        raise ValueError(
            f"rank, world: pass both or neither (got rank={rank}, world={world}); with neither, "
            "they come from torch.distributed or the launcher's RANK and WORLD_SIZE"
        )
    launched = ranks_from_environment(env)
    if rank is not None and world is not None:
        found = Ranks(rank, world, "argument")
    elif distributed is not None:
        found = Ranks(distributed[0], distributed[1], "torch.distributed")
    elif launched is not None:
        found = Ranks(launched[0], launched[1], "environment")
    else:
        found = Ranks(0, 1, "default")
    if not (found.world >= 1 and 0 <= found.rank < found.world):
        raise ValueError(f"rank, world: need 0 <= rank < world, got {found.rank}, {found.world}")
    if consensus and distributed is None and max(found.world, (launched or (0, 1))[1]) > 1:
        where = (
            f"{RANK_VARIABLE}={launched[0]} and {WORLD_VARIABLE}={launched[1]} are set "
            "(a torchrun or accelerate launch)"
            if launched is not None
            else f"world={found.world}"
        )
        raise LaunchError(
            f"{where}, but torch.distributed has no process group yet, so the ranks cannot "
            "agree on which round to train on. Create the sampler after "
            "torch.distributed.init_process_group() (accelerate's Accelerator() and the "
            "Hugging Face Trainer create it; on a machine without GPUs only with cpu=True, "
            "or TrainingArguments(use_cpu=True)), or pass consensus=False if each process "
            "may decide alone"
        )
    return found
