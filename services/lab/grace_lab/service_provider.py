"""GRACE through the real system: the selection service, the Ray scoring pool and the client.

Each round the trainer publishes its checkpoint through the service, the pool scores the
round's rescore plan with it (every sample for round 0, about rho*N after), the service
selects and publishes the round, and the trainer fetches its slice with the client. The losses
training computes anyway are reported back with a background ScoreReporter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_client import CoresetClient
from grace_client.reporter import ScoreReporter
from grace_lab.coreset_training import RoundPlan
from grace_proto.models import CreateJobRequest, SelectionConfigModel
from grace_workers.pool import ScoringPool
from grace_workers.tiny_gpt import TinyGPT, save_tiny_gpt

log = logging.getLogger(__name__)


class GraceServiceProvider:
    """A CoresetProvider whose rounds come from a running GRACE service."""

    def __init__(
        self,
        name: str,
        client: CoresetClient,
        pool: ScoringPool,
        job: CreateJobRequest,
        checkpoint_dir: Path,
        *,
        round_timeout: float = 600.0,
        report_losses: bool = True,
    ) -> None:
        self.name = name
        self.client = client
        self.pool = pool
        self.job = job
        self.checkpoint_dir = checkpoint_dir
        self.round_timeout = round_timeout
        self.report_losses = report_losses
        self._reporter: ScoreReporter | None = None

    @staticmethod
    def job_request(
        job_id: str,
        n: int,
        dim: int,
        config: SelectionConfigModel,
        strata: npt.NDArray[np.int32],
        stratum_names: tuple[str, ...],
        seed: int,
        text_source: Path | None = None,
    ) -> CreateJobRequest:
        return CreateJobRequest(
            job_id=job_id,
            n_samples=n,
            dim=dim,
            config=config,
            seed=seed,
            strata=[int(s) for s in strata],
            stratum_names=dict(enumerate(stratum_names)),
            text_source=None if text_source is None else str(text_source),
        )

    def begin(self, model: TinyGPT, step: int) -> None:
        self.client.create_job(self.job)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if self.report_losses:
            self._reporter = self.client.reporter(self.job.job_id, run="train")

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        job = self.job.job_id
        path = save_tiny_gpt(model, self.checkpoint_dir / f"round-{round_}.pt", step=step)
        self.client.put_checkpoint(job, str(path), step, round=round_)
        scored = self.pool.score_round(round_)
        if self._reporter is not None:
            self._reporter.flush(timeout=60.0)
        self.client.trigger_round(job)
        manifest = self.client.wait_for_round(job, round_, timeout=self.round_timeout)
        piece = self.client.get_indices(job, round_)
        ids = np.sort(piece.indices)
        order = np.argsort(piece.indices)
        weights = None if piece.weights is None else piece.weights[order]
        return RoundPlan(
            ids.astype(np.int64),
            weights,
            scored_samples=scored.samples,
            info={
                "rescored_fraction": manifest.rescored_fraction,
                "select_seconds": manifest.timings.select_seconds,
                "graph_seconds": manifest.timings.graph_seconds,
                "round_seconds": manifest.timings.total_seconds,
                "scoring_seconds": scored.seconds,
                "service_churn": manifest.churn,
            },
        )

    def observe(
        self, round_: int, step: int, ids: npt.NDArray[np.int64], losses: npt.NDArray[np.float32]
    ) -> None:
        if self._reporter is not None:
            self._reporter.report(ids, losses, step=step, round=round_)

    def close(self) -> None:
        if self._reporter is not None:
            stats = self._reporter.close(timeout=60.0)
            log.info("trainer loss reports: %s", stats)
            self._reporter = None
