"""GRACE in the fine-tuning table through the real system: the service, Ray workers, the client.

The job is created with the recipe's config. Round 0's embeddings come from the Ray scoring
pool: with `embedding="model"` the workers score every sample with the base model (one
charged forward pass over N, which also gives round-0 scores); with `"input"` they post the
mean of each sample's input token embeddings (no forward pass, no charge). Each later round the
trainer publishes its checkpoint; with worker signals the pool scores the round's rescore plan
(charged: 2P per token read); with trainer signals the client's ScoreReporter has been sending
what training computed anyway (free), for the next round. Then the service selects and
publishes, and the trainer fetches its slice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from grace_client import CoresetClient
from grace_client.reporter import ScoreReporter
from grace_lab.compute import ComputeMeter, matmul_params
from grace_lab.coreset_training import RoundPlan
from grace_lab.finetune_data import FinetuneData
from grace_lab.finetune_methods import DIM, GraceRecipe
from grace_lab.finetune_training import StepSignals
from grace_proto.models import CreateJobRequest, SelectionConfigModel
from grace_workers.pool import PoolSettings, ScoringPool
from grace_workers.tiny_gpt import TinyGPT, save_tiny_gpt
from grace_workers.worker import WorkerSettings

log = logging.getLogger(__name__)


class ServiceGrace:
    """A FinetuneProvider whose rounds come from a running GRACE service."""

    def __init__(
        self,
        name: str,
        data: FinetuneData,
        recipe: GraceRecipe,
        url: str,
        work_dir: Path,
        seed: int,
        *,
        workers: int = 1,
        round_timeout: float = 900.0,
    ) -> None:
        self.name, self.data, self.recipe, self.seed = name, data, recipe, seed
        self.round_timeout = round_timeout
        slug = name.lower().replace("_", "-")
        self.job = f"ft-{slug}-s{seed}-{int(time.time() * 1000) % 10**9}"
        self.checkpoints = work_dir / "ckpt" / self.job
        self.client = CoresetClient(url, cache_dir=work_dir / "client-cache")
        worker = WorkerSettings(
            url,
            self.job,
            str(data.train.path.resolve()),
            batch_size=64,
            device="cpu",
            embedding="hidden" if recipe.embedding == "model" else "input",
        )
        # A study shares its cores with others: a Ray worker importing torch may take minutes.
        settings = PoolSettings(workers=workers, progress=False, start_timeout=900.0)
        self.pool = ScoringPool(worker, settings)
        self._reporter: ScoreReporter | None = None
        self._round = 0
        self._lengths = np.minimum(np.asarray(data.train.lengths), 64)

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        config = SelectionConfigModel(**self.recipe.config.to_dict())
        self.client.create_job(
            CreateJobRequest(
                job_id=self.job,
                n_samples=len(self.data.train),
                dim=DIM,
                config=config,
                seed=self.seed,
                strata=[int(s) for s in self.data.train_strata],
                stratum_names=dict(enumerate(self.data.stratum_names)),
                text_source=str(self.data.train_jsonl.resolve()),
            )
        )
        self.pool.start()
        self._publish_checkpoint(model, 0)
        self.pool.score_round(0)
        if self.recipe.embedding == "model":
            meter.charge_scoring(matmul_params(model), int(self._lengths.sum()))
        if self.recipe.signals in ("trainer", "both"):
            self._reporter = self.client.reporter(self.job, run="train")

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        self._round = round_
        started = time.perf_counter()
        scored, skipped = 0, False
        if round_ > 0:
            self._publish_checkpoint(model, round_)
            if self.recipe.signals in ("workers", "both"):
                plan = self.client.get_rescore_plan(self.job, round_).ids
                tokens = int(self._lengths[plan].sum())
                if plan.size and not meter.can_score(matmul_params(model), tokens):
                    skipped = True  # the plan's pass would overrun the budget: estimate
                elif plan.size:
                    meter.charge_scoring(matmul_params(model), tokens)
                    scored = self.pool.score_round(round_).samples
        if self._reporter is not None:
            self._reporter.flush(timeout=120.0)
        self.client.trigger_round(self.job)
        manifest = self.client.wait_for_round(self.job, round_, timeout=self.round_timeout)
        piece = self.client.get_indices(self.job, round_)
        order = np.argsort(piece.indices)
        weights = None if piece.weights is None else piece.weights[order]
        return RoundPlan(
            np.asarray(piece.indices, dtype=np.int64)[order],
            weights,
            scored_samples=scored,
            info={
                "service_round_seconds": manifest.timings.total_seconds,
                "graph_seconds": manifest.timings.graph_seconds,
                "select_seconds": manifest.timings.select_seconds,
                "rescored_fraction": manifest.rescored_fraction,
                "churn": manifest.churn,
                "round_seconds": time.perf_counter() - started,
                "scoring_skipped": skipped,
            },
        )

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        if self._reporter is None:
            return
        importance: Any = signals.loss if self.recipe.importance == "loss" else signals.importance
        # Measured while round r trains: the newest values for round r + 1.
        self._reporter.report(signals.ids, signals.loss, importance, step=step, round=round_ + 1)

    def close(self) -> None:
        try:
            if self._reporter is not None:
                stats = self._reporter.close(timeout=120.0)
                log.info("trainer reports of %s: %s", self.job, stats)
        finally:
            self.pool.shutdown()
            self.client.close()

    def _publish_checkpoint(self, model: TinyGPT, round_: int) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path = save_tiny_gpt(model, self.checkpoints / f"round-{round_}.pt", step=round_)
        self.client.put_checkpoint(self.job, str(path), round_, round=round_)
