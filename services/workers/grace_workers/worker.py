"""ScoringWorker: scores one shard of a round's rescore plan and streams it to the service.

A plain class (the pool makes it a Ray actor in one place, `grace_workers.pool`), usable
without Ray too. Everything it holds is rebuilt by its constructor or reloaded on demand, so a
restarted actor (Ray reruns the constructor) behaves exactly like a fresh one; and every batch it
posts carries an idempotency key derived from (job, round, shard, batch index, ids), so that a
retried shard re-sends byte-identical batches the service applies once.

Retries of single requests (connection errors, 429, 5xx) with capped exponential backoff and
jitter are the client's (`grace_client.CoresetClient(retries=, backoff_cap=)`); a shard that
still fails is retried, or reported, by the pool.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from grace_client import CoresetClient
from grace_proto.models import CheckpointInfo
from grace_workers.batching import batch_key, collate, plan_batches, response_mask
from grace_workers.checkpoints import HuggingFaceCausalLM, LoadedModel, load_model
from grace_workers.dataset import DatasetFormatError, TokenDataset
from grace_workers.projection import make_projection, project_embeddings
from grace_workers.scoring import exact_grad_norms, pool_input_embeddings, score_batch
from grace_workers.tiny_gpt import TinyGPT


class NoCheckpointError(RuntimeError):
    """The service has no checkpoint for the round and no fallback model path was given."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker reaches the service and what it scores with.

    model_path: the model used while the service has no published checkpoint (the warm-up
        round, typically); a checkpoint the trainer published through the service wins.
    device: "cpu", "cuda", "cuda:1"...; "auto" takes a GPU when torch sees one.
    max_tokens: cut samples to this many tokens (default: the model's context).
    retries, backoff_cap: the client's per-request retry policy (capped exponential backoff).
    plan_wait: seconds to wait for a plan whose previous round is still computing.
    exact_params: parameter names (e.g. "head.weight", a LoRA adapter's) whose exact
        per-sample gradient norm replaces the closed-form importance; slower, see scoring.
    embedding: "hidden" scores every sample (loss, importance, pooled final hidden state: one
        forward pass each); "input" posts only the mean of each sample's input token
        embeddings, no forward pass, for jobs whose scores come from the trainer's reports.
    """

    service_url: str
    job: str
    data_path: str
    model_path: str | None = None
    token: str | None = None
    batch_size: int = 32
    device: str = "auto"
    max_tokens: int | None = None
    request_timeout: float = 60.0
    retries: int = 6
    backoff_cap: float = 8.0
    plan_wait: float = 600.0
    exact_params: tuple[str, ...] = ()
    embedding: Literal["hidden", "input"] = "hidden"

    def __post_init__(self) -> None:
        if self.embedding not in ("hidden", "input"):
            raise ValueError(f"embedding: must be 'hidden' or 'input', got {self.embedding!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ValueError(
                f"max_tokens: must be >= 2 (one predicted token), got {self.max_tokens}"
            )


@dataclass(frozen=True, slots=True)
class ShardReport:
    """What one `score_shard` call did.

    round: the round scored for (its rescore plan); accepted: samples the service newly
    applied; duplicates: requests it already had (a retried shard re-sends them).
    """

    job: str
    round: int
    shard: int
    of: int
    samples: int
    batches: int
    accepted: int
    duplicates: int
    checkpoint_path: str
    checkpoint_step: int
    device: str
    pid: int
    seconds: float
    seconds_model: float
    seconds_score: float
    seconds_post: float


@dataclass(slots=True)
class _Timer:
    model: float = 0.0
    score: float = 0.0
    post: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def score_arrays(
    model: TinyGPT | HuggingFaceCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    projection: torch.Tensor,
    *,
    loss_mask: torch.Tensor | None = None,
    exact_params: Sequence[str] = (),
) -> dict[str, npt.NDArray[np.float32]]:
    """What a batch sends: embeddings (B, dim), loss (B,), importance (B,), float32 numpy.

    importance is the closed-form output-layer proxy, or with `exact_params` the exact norm of
    each sample's gradient w.r.t. those parameters (torch.func: one backward per sample).
    """
    scores = score_batch(model, input_ids, attention_mask, loss_mask=loss_mask)
    embeddings = project_embeddings(scores.pooled, projection)  # (B, dim)
    importance = (
        exact_grad_norms(model, input_ids, attention_mask, exact_params, loss_mask=loss_mask)
        if exact_params
        else scores.importance
    )  # (B,)
    return {
        "embeddings": embeddings.float().cpu().numpy(),
        "loss": scores.loss.float().cpu().numpy(),
        "importance": importance.detach().float().cpu().numpy(),
    }


def resolve_device(device: str) -> torch.device:
    """ "auto" means the first GPU when torch has one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ScoringWorker:
    """Loads the dataset and (lazily) the round's model; `score_shard` does one shard."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dataset = TokenDataset.open(settings.data_path)
        self.client = CoresetClient(
            settings.service_url,
            token=settings.token,
            timeout=settings.request_timeout,
            retries=settings.retries,
            backoff_cap=settings.backoff_cap,
        )
        self._loaded: LoadedModel | None = None
        self._loaded_key: tuple[str, int | None] | None = None
        self._projections: dict[tuple[int, int, int], torch.Tensor] = {}

    def info(self) -> dict[str, Any]:
        """Where this worker runs: for logs, and for tests that need its process id."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": str(self.device)}

    def score_shard(self, round_: int, shard: int, of: int) -> ShardReport:
        """Score shard `shard` of `of` of round `round_`'s rescore plan and post the results."""
        timer = _Timer()
        job = self.client.get_job(self.settings.job)
        if job.n_samples != len(self.dataset):
            raise DatasetFormatError(
                f"job {job.job_id!r} has {job.n_samples} samples but the dataset "
                f"{self.settings.data_path} has {len(self.dataset)}; score it with the dataset "
                "the job was created for"
            )
        # The plan of round r is what to score *for* round r (round 0: every sample; r >= 1: the
        # plan published with round r - 1); while r - 1 computes, the client waits.
        plan = self.client.get_rescore_plan(
            job.job_id, round_, shard, of, wait=self.settings.plan_wait
        )
        ids = np.asarray(plan.ids, dtype=np.int64)
        self.dataset.check_ids(ids)
        t0 = time.perf_counter()
        loaded, step = self._model_for(plan.checkpoint)
        timer.model += time.perf_counter() - t0
        projection = self._projection(job.seed, loaded.model.output_layer.in_features, job.dim)
        limit = min(
            (n for n in (self.settings.max_tokens, loaded.max_positions) if n is not None),
            default=None,
        )
        accepted = duplicates = 0
        batches = plan_batches(ids, self.dataset.lengths, self.settings.batch_size)
        for index, batch_ids in enumerate(batches):
            t0 = time.perf_counter()
            input_ids, mask = collate(self.dataset, batch_ids, limit)
            if self.settings.embedding == "input":
                pooled = pool_input_embeddings(
                    loaded.model.input_embeddings, input_ids.to(self.device), mask.to(self.device)
                )
                arrays = {"embeddings": project_embeddings(pooled, projection).cpu().numpy()}
                timer.score += time.perf_counter() - t0
                t0 = time.perf_counter()
                key = batch_key(job.job_id, round_, shard, of, index, batch_ids.tolist())
                fresh, dup = self.post_batch(key, round_, step, batch_ids, arrays)
                accepted += fresh
                duplicates += dup
                timer.post += time.perf_counter() - t0
                continue
            targets = response_mask(self.dataset, batch_ids, input_ids.shape[1])
            arrays = score_arrays(
                loaded.model,
                input_ids.to(self.device),
                mask.to(self.device),
                projection,
                loss_mask=None if targets is None else targets.to(self.device),
                exact_params=self.settings.exact_params,
            )
            timer.score += time.perf_counter() - t0
            t0 = time.perf_counter()
            key = batch_key(job.job_id, round_, shard, of, index, batch_ids.tolist())
            fresh, dup = self.post_batch(key, round_, step, batch_ids, arrays)
            accepted += fresh
            duplicates += dup
            timer.post += time.perf_counter() - t0
        return ShardReport(
            job=job.job_id,
            round=round_,
            shard=shard,
            of=of,
            samples=int(ids.size),
            batches=len(batches),
            accepted=accepted,
            duplicates=duplicates,
            checkpoint_path=loaded.path,
            checkpoint_step=step,
            device=str(self.device),
            pid=os.getpid(),
            seconds=time.perf_counter() - timer.started,
            seconds_model=timer.model,
            seconds_score=timer.score,
            seconds_post=timer.post,
        )

    def post_batch(
        self,
        key: str,
        round_: int,
        step: int,
        ids: npt.NDArray[np.int64],
        arrays: dict[str, npt.NDArray[np.float32]],
    ) -> tuple[int, int]:
        """Post one batch's embeddings and scores (when it has them); (samples newly applied,
        duplicate requests)."""
        job = self.settings.job
        emb = self.client.post_embeddings(
            job, ids, arrays["embeddings"], batch_id=f"{key}/emb", round=round_
        )
        if "importance" not in arrays:
            return emb.accepted, int(emb.duplicate)
        scores = self.client.post_scores(
            job,
            ids,
            loss=arrays["loss"],
            importance=arrays["importance"],
            source="worker",
            round=round_,
            step=step,
            batch_id=f"{key}/scores",
        )
        return emb.accepted, int(emb.duplicate) + int(scores.duplicate)

    def _model_for(self, checkpoint: CheckpointInfo | None) -> tuple[LoadedModel, int]:
        """The model the service names for this round (or the fallback), loaded once per version."""
        if checkpoint is not None:
            path, step = str(checkpoint.path), int(checkpoint.step)
        elif self.settings.model_path is not None:
            path, step = self.settings.model_path, None
        else:
            raise NoCheckpointError(
                f"job {self.settings.job!r} has no published checkpoint; publish one with "
                "PUT /v1/jobs/{job}/checkpoint (CoresetClient.put_checkpoint) or pass --model"
            )
        key = (path, step)
        if self._loaded is None or self._loaded_key != key:
            self._loaded = None  # free the old weights before loading new ones
            self._loaded = load_model(path, self.device)
            self._loaded_key = key
        used_step = step if step is not None else (self._loaded.step or 0)
        return self._loaded, used_step

    def _projection(self, seed: int, in_dim: int, out_dim: int) -> torch.Tensor:
        key = (seed, in_dim, out_dim)
        if key not in self._projections:
            matrix = make_projection(in_dim, out_dim, seed)  # (C, dim)
            self._projections[key] = torch.from_numpy(matrix).to(self.device)
        return self._projections[key]

    def close(self) -> None:
        self.client.close()
