"""Two real processes in a gloo process group: rank 0 decides, every rank follows.

Each rank has its own view of the service (an in-memory source), and the views disagree
on purpose: a round only one rank has fetched, a rank 0 that lost the service. The
sampler must keep both ranks on the same round, epoch after epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from tests.conftest import free_port

CORESETS = {0: np.arange(0, 61), 1: np.arange(100, 140), 2: np.arange(200, 230)}


def _run_rank(rank: int, port: int, out_dir: str) -> None:
    from grace_client.sampler import CoresetSampler
    from tests.unit.test_sampler_properties import MemorySource

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        source = MemorySource({0: CORESETS[0]})
        if rank == 1:
            source.publish(1, CORESETS[1])  # rank 1 sees a newer round: rank 0 still decides
        sampler = CoresetSampler(source, "job", seed=3, prefetch=False)  # type: ignore[arg-type]
        epochs: list[dict[str, Any]] = []

        def epoch() -> None:
            samples = list(sampler)
            epochs.append({"round": sampler.round, "samples": samples})

        epoch()  # 1: round 0 everywhere
        if rank == 0:
            source.publish(1, CORESETS[1])
            sampler.poll()  # only rank 0 holds round 1 now
        epoch()  # 2: rank 1 lacks round 1, so nobody switches (rank 1 is asked to fetch it)
        if rank == 1:
            sampler.poll()  # fetches the wanted round 1
        epoch()  # 3: both hold round 1: both switch
        if rank == 0:
            source.up = False
            sampler.poll()
        else:
            source.publish(2, CORESETS[2])
            sampler.poll()
        epoch()  # 4: rank 0 cannot see round 2, so both stay on round 1
        if rank == 0:
            source.up = True
            source.publish(2, CORESETS[2])
            sampler.poll()
        epoch()  # 5: the service is back for rank 0: both move to round 2
        state = sampler.state_dict()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"epochs": epochs, "state": state}))
    finally:
        dist.destroy_process_group()


def test_rank_zero_decides_and_every_rank_follows(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    spawn(_run_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)  # type: ignore[no-untyped-call]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    rounds = [[e["round"] for e in result["epochs"]] for result in ranks]
    assert rounds[0] == rounds[1] == [0, 0, 1, 1, 2]
    assert ranks[0]["state"] == ranks[1]["state"]
    for i, expected_round in enumerate(rounds[0]):
        a, b = (result["epochs"][i]["samples"] for result in ranks)
        assert len(a) == len(b)  # equal lengths, so no rank waits at a collective
        assert set(a) | set(b) == set(CORESETS[expected_round].tolist())
