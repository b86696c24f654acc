"""GraceTrainer under `accelerate launch` (2 processes, gloo on CPU), run by
test_client_accelerate.py against a real `grace serve`; not collected by pytest.

    accelerate launch --multi_gpu --num_processes 2 accelerate_trainer.py URL JOB OUT

Each process:
1. makes a CoresetSampler before any process group exists: it must refuse (RANK and
   WORLD_SIZE are set by the launcher);
2. trains 8 steps with a switch every 2 steps; after step 2, rank 0 rescores and publishes
   round 1 on the service, and both ranks poll, so the switch lands at position 16;
3. resumes a second trainer from the step-3 checkpoint and trains steps 3-7 again;
and writes what it trained and logged to OUT/rank<k>.json.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from grace_client import CoresetClient, GraceError
from grace_client.hf import GraceIndexedDataset, GraceTrainer
from grace_client.sampler import CoresetSampler

N_SAMPLES = 160
logging.getLogger("transformers").setLevel(logging.ERROR)


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, 64, (N_SAMPLES, 12), generator=generator)

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


class RecordingTrainer(GraceTrainer):
    """Records (global step, ids) of every batch it trains on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[int, list[int]]] = []

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if model.training:
            self.batches.append((self.state.global_step, inputs["grace_ids"].tolist()))
        return super().compute_loss(model, inputs, *args, **kwargs)


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append({"step": state.global_step, **(logs or {})})


class PublishRoundOne(TrainerCallback):
    """After step 2: rank 0 rescores and publishes round 1, then every rank fetches it."""

    def __init__(self, trainer: RecordingTrainer, client: CoresetClient, job: str) -> None:
        self.trainer, self.client, self.job = trainer, client, job

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step != 2:
            return
        if state.is_world_process_zero:
            plan = self.client.get_rescore_plan(self.job, 1)
            scores = np.random.default_rng(1).random(plan.ids.shape[0])
            self.client.post_scores(self.job, plan.ids, importance=scores, round=1, batch_id="r1")
            self.client.trigger_round(self.job)
            self.client.wait_for_round(self.job, 1, timeout=60)
        self.trainer.accelerator.wait_for_everyone()
        assert self.trainer.grace_sampler is not None
        self.trainer.grace_sampler.poll()


def make_trainer(client: CoresetClient, job: str, out: Path, max_steps: int) -> RecordingTrainer:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,  # with it accelerate starts a gloo group on a machine without GPUs
        dataloader_num_workers=0,
        learning_rate=1e-3,
        seed=0,
    )
    return RecordingTrainer(
        model=model,
        args=args,
        train_dataset=GraceIndexedDataset(Tokens()),
        data_collator=default_data_collator,
        grace_client=client,
        grace_job=job,
        grace_seed=1,
        grace_every_steps=2,
        grace_poll_interval=60.0,  # the rounds are fetched by the explicit polls only
    )


def main(url: str, job: str, out_dir: str) -> None:
    out = Path(out_dir)
    result: dict[str, Any] = {}
    client = CoresetClient(url, cache_dir=out / f"cache-{os.environ['RANK']}")
    try:
        CoresetSampler(client, job)
        result["refused"] = None
    except GraceError as exc:
        result["refused"] = str(exc)

    first = make_trainer(client, job, out / "run", max_steps=8)
    logs = Logs()
    first.add_callback(logs)
    first.add_callback(PublishRoundOne(first, client, job))
    first.train()
    assert first.grace_sampler is not None
    result.update(
        rank=first.args.process_index,
        world=first.args.world_size,
        sampler=[first.grace_sampler.rank, first.grace_sampler.world],
        batches=first.batches,
        logs=logs.logs,
        sent=first.grace_reporter.stats.sent_samples if first.grace_reporter else 0,
    )
    first.grace_sampler.close()

    resumed = make_trainer(client, job, out / "run", max_steps=8)
    resumed.train(resume_from_checkpoint=str(out / "run" / "checkpoint-3"))
    result["resumed"] = resumed.batches
    if resumed.grace_sampler is not None:
        resumed.grace_sampler.close()
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    # Tear the process group down before the interpreter does: left to exit, its gloo threads
    # can be destroyed while joinable and abort a rank (seen once in CI-like runs: SIGABRT,
    # "terminate called without an active exception", after both ranks had finished).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
