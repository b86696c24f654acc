"""Hugging Face `Trainer` integration: train on the service's coreset, report losses for free.

    from grace_client import CoresetClient
    from grace_client.hf import GraceTrainer, GraceIndexedDataset

    trainer = GraceTrainer(
        model=model, args=args, train_dataset=GraceIndexedDataset(train_dataset),
        grace_client=CoresetClient("http://127.0.0.1:8765"), grace_job="my-job",
    )
    trainer.train()

- The training sampler is a CoresetSampler (this rank's slice of the current round; a newer
  round is taken every k epochs or every n steps, once every rank has it; epochs keep their
  length, so the Trainer's step arithmetic holds).
- The loss is weighted by the round's weights (the Trainer's own loss when unweighted), and
  per-sample losses are computed from the logits of the forward pass the Trainer already ran
  (no second forward) and handed to a background ScoreReporter.
- Every `Trainer.log` carries the round's figures (grace/round, grace/churn, ...), so the
  report_to integrations chart them.
- Checkpoints carry the sampler's position (`grace_sampler.json`), so that
  `trainer.train(resume_from_checkpoint=...)` continues with exactly the samples still due.

Importing this module imports transformers and torch; `import grace_client` does not.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from grace_client.client import CoresetClient
from grace_client.losses import (
    IGNORE_INDEX,
    per_sample_causal_lm_loss,
    per_sample_loss,
    per_sample_loss_sums,
    reweight_loss,
)
from grace_client.reporter import ScoreReporter
from grace_client.sampler import CoresetSampler
from grace_client.schedule import RoundSchedule

log = logging.getLogger("grace_client")

ID_COLUMN = "grace_ids"
STATE_FILE = "grace_sampler.json"
__all__ = [
    "ID_COLUMN",
    "IGNORE_INDEX",
    "GraceCallback",
    "GraceIndexedDataset",
    "GraceTrainer",
    "per_sample_causal_lm_loss",
    "per_sample_loss",
]


class GraceIndexedDataset(Dataset[dict[str, Any]]):
    """Adds each item's dataset index under "grace_ids", so losses can be reported per sample."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise TypeError(
                f"GraceIndexedDataset needs items that are dicts (feature -> value), got "
                f"{type(item).__name__}; wrap a dataset of tokenised examples"
            )
        return {**item, ID_COLUMN: index}


class GraceCallback(TrainerCallback):
    """Saves the sampler's position with every checkpoint and flushes reports at the end."""

    def __init__(self, trainer: GraceTrainer) -> None:
        self.trainer = trainer

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        sampler = self.trainer.grace_sampler
        if sampler is None or not args.should_save or args.output_dir is None:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            return
        # On resume the Trainer starts the epoch it was in and skips the batches already
        # trained; at an exact epoch boundary it starts the next epoch without skipping.
        completed = _at_epoch_boundary(args, state, kwargs.get("train_dataloader"))
        with open(os.path.join(folder, STATE_FILE), "w") as handle:
            json.dump(sampler.epoch_state_dict(completed=completed), handle)

    def on_epoch_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # Count the samples trained this epoch, so that each batch is credited to the round
        # it came from (the sampler's own round runs ahead with the loader). A resumed epoch
        # starts after the batches the Trainer skips.
        trainer = self.trainer
        trainer._grace_position = 0
        if trainer._grace_resuming:
            trainer._grace_resuming = False
            trainer._grace_position = _skipped_samples(
                args, state, kwargs.get("train_dataloader"), trainer._train_batch_size
            )

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.trainer.grace_reporter is not None:
            stats = self.trainer.grace_reporter.close()
            log.info("GRACE reporter closed: %s", stats)


class GraceTrainer(Trainer):
    """A Trainer whose training sampler is the GRACE coreset and whose losses are reported.

    grace_client, grace_job: the service and job. grace_seed: the sampler's shuffle seed.
    grace_every_epochs: take a newer round every k epochs (the default, k=1).
    grace_every_steps: instead, take one every n optimizer steps (n x the per-device batch
        x the accumulation steps of this rank's samples, counted from the round's start);
        an epoch stays len(dataloader) batches long either way.
    grace_weighted: on a weighted round, train on the weighted loss: each sample's tokens
        count with its round weight, normalised so the batch weighs as many tokens as
        before (the Trainer's own loss when the round is unweighted or the weights equal).
    grace_report: send per-sample losses (source "trainer"). grace_run: names this run in
    the report batch ids. grace_causal_lm: force (or deny) the causal next-token loss;
    default: detected from the model class like the Trainer itself does.

    Every `Trainer.log` call (each `logging_steps`) carries the round's figures, so that the
    report_to integrations (W&B, MLflow, TensorBoard) chart them: grace/round,
    grace/coreset_size, grace/churn, grace/rescored_fraction, grace/service_reachable.
    """

    def __init__(
        self,
        *args: Any,
        grace_client: CoresetClient,
        grace_job: str,
        grace_seed: int = 0,
        grace_every_epochs: int | None = None,
        grace_every_steps: int | None = None,
        grace_weighted: bool = True,
        grace_report: bool = True,
        grace_run: str = "default",
        grace_causal_lm: bool | None = None,
        grace_poll_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        if grace_every_epochs is not None and grace_every_steps is not None:
            raise ValueError(
                "grace_every_epochs, grace_every_steps: pass one of them (a newer round is "
                f"taken on one schedule), got {grace_every_epochs} and {grace_every_steps}"
            )
        if grace_every_epochs is not None and grace_every_epochs < 1:
            raise ValueError(f"grace_every_epochs: must be >= 1, got {grace_every_epochs}")
        if grace_every_steps is not None and grace_every_steps < 1:
            raise ValueError(f"grace_every_steps: must be >= 1, got {grace_every_steps}")
        super().__init__(*args, **kwargs)
        self.grace_client = grace_client
        self.grace_job = grace_job
        self.grace_seed = grace_seed
        self.grace_every_epochs = grace_every_epochs
        self.grace_every_steps = grace_every_steps
        self.grace_run = grace_run
        self.grace_poll_interval = grace_poll_interval
        self.grace_sampler: CoresetSampler | None = None
        self.grace_reporter: ScoreReporter | None = None
        self._grace_weighted = grace_weighted
        self._grace_report = grace_report
        self._grace_causal = grace_causal_lm
        self._grace_pending_state: dict[str, Any] | None = None
        self._grace_unweighted_said = False
        self._grace_resuming = False
        self._grace_position = 0  # samples trained this epoch (GraceCallback resets it)
        self._grace_batch_round: int | None = None  # the round of the last trained batch
        self.add_callback(GraceCallback(self))

    @property
    def grace_schedule(self) -> RoundSchedule:
        """When the sampler considers a newer round, in this rank's samples."""
        if self.grace_every_steps is None:
            return RoundSchedule.epochs(self.grace_every_epochs or 1)
        per_step = self._train_batch_size * self.args.gradient_accumulation_steps
        return RoundSchedule.steps(self.grace_every_steps, batch_size=per_step)

    # -- the sampler hook --------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> CoresetSampler:
        if self.grace_sampler is None:
            self.grace_sampler = CoresetSampler(
                self.grace_client,
                self.grace_job,
                rank=self.args.process_index,
                world=self.args.world_size,
                seed=self.grace_seed,
                schedule=self.grace_schedule,
                poll_interval=self.grace_poll_interval,
                # The Trainer counts len(dataloader) batches per epoch (its resume arithmetic
                # too), so a round switched mid-epoch must not end the epoch early.
                fixed_epochs=True,
            )
        if self._grace_pending_state is not None:
            self.grace_sampler.load_state_dict(self._grace_pending_state)
            self._grace_pending_state = None
        return self.grace_sampler

    # -- what the loggers chart --------------------------------------------------------

    def grace_metrics(self) -> dict[str, float]:
        """The figures of the last trained batch's round, from memory (never a request)."""
        sampler = self.grace_sampler
        if sampler is None:
            return {}
        piece = sampler.current_slice
        round_ = piece.round if self._grace_batch_round is None else self._grace_batch_round
        metrics: dict[str, float] = {
            "grace/round": float(round_),
            "grace/service_reachable": 1.0 if sampler.service_reachable else 0.0,
        }
        manifest = sampler.round_manifest(round_)
        if manifest is None:  # not fetched yet: what the slice itself says
            if piece.round == round_:
                metrics["grace/coreset_size"] = float(piece.total)
            return metrics
        metrics["grace/coreset_size"] = float(manifest.count)
        metrics["grace/rescored_fraction"] = float(manifest.rescored_fraction)
        if manifest.churn is not None:  # round 0 has no previous round to differ from
            metrics["grace/churn"] = float(manifest.churn)
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs.update(self.grace_metrics())
        super().log(logs, start_time)

    def get_train_dataloader(self) -> Any:
        loader = super().get_train_dataloader()
        # Accelerate shards batches across processes; our sampler already gives each rank
        # its own slice, so the shard wrapper must pass batches through untouched.
        shard = getattr(loader, "batch_sampler", None)
        inner = getattr(shard, "batch_sampler", None)
        if shard is not None and getattr(inner, "sampler", None) is self.grace_sampler:
            shard.num_processes = 1
            shard.process_index = 0
        return loader

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and ID_COLUMN not in self._signature_columns:
            self._signature_columns.append(ID_COLUMN)  # keep the ids through column removal

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        folder = resume_from_checkpoint
        if folder is True:
            folder = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
        if isinstance(folder, str):
            path = os.path.join(folder, STATE_FILE)
            if os.path.exists(path):
                with open(path) as handle:
                    self._grace_pending_state = json.load(handle)
                self._grace_resuming = not self.args.ignore_data_skip
            else:
                log.warning("%s has no %s: the sampler starts fresh", folder, STATE_FILE)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    # -- free per-sample losses, and the round's weights --------------------------------

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        ids = inputs.pop(ID_COLUMN, None)
        labels = inputs.get("labels")
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if ids is not None and model.training:
            loss = self._grace_step(model, loss, outputs, labels, ids)
        return (loss, outputs) if return_outputs else loss

    def _grace_step(
        self, model: torch.nn.Module, loss: torch.Tensor, outputs: Any, labels: Any, ids: Any
    ) -> torch.Tensor:
        """Weight the batch's loss by the round and report its per-sample losses."""
        sampler = self.grace_sampler
        if sampler is not None:
            self._grace_batch_round = sampler.round_at(self._grace_position)
            self._grace_position += int(ids.numel()) if isinstance(ids, torch.Tensor) else len(ids)
        weights = self._grace_weights(ids)
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if (weights is None and not self._grace_report) or logits is None:
            return loss
        if not isinstance(labels, torch.Tensor):
            return loss
        causal = self._is_causal(model)
        if weights is None:
            with torch.no_grad():
                found = per_sample_loss_sums(logits.detach(), labels, causal=causal)
        else:
            found = per_sample_loss_sums(logits, labels, causal=causal)  # with grad
        if found is None:
            return loss
        sums, counts = found
        if weights is not None:
            loss = reweight_loss(loss, sums, counts, torch.from_numpy(weights).to(sums.device))
        if self._grace_report:
            per_sample = torch.where(counts > 0, sums.detach() / counts.clamp_min(1), torch.nan)
            self._report(per_sample, ids)
        return loss

    def _grace_weights(self, ids: Any) -> Any:
        """The batch's round weights (numpy), or None when the loss stays unweighted."""
        sampler = self.grace_sampler
        if not self._grace_weighted or sampler is None:
            return None
        weights = sampler.weights_for(ids, self._grace_batch_round)
        if weights is not None and (
            self.label_smoother is not None or self.compute_loss_func is not None
        ):
            if not self._grace_unweighted_said:
                log.warning(
                    "GRACE %s: the round is weighted, but the loss is the Trainer's own "
                    "(label_smoothing_factor or compute_loss_func is set), which these weights "
                    "cannot be folded into; training on the unweighted loss",
                    self.grace_job,
                )
                self._grace_unweighted_said = True
            return None
        return weights

    def _report(self, losses: torch.Tensor, ids: Any) -> None:
        if self.grace_reporter is None:
            self.grace_reporter = ScoreReporter(
                self.grace_client, self.grace_job, rank=self.args.process_index, run=self.grace_run
            )
        self.grace_reporter.report(
            ids, losses, step=self.state.global_step, round=self._grace_batch_round or 0
        )

    def _is_causal(self, model: torch.nn.Module) -> bool:
        if self._grace_causal is not None:
            return self._grace_causal
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def _skipped_samples(
    args: TrainingArguments, state: TrainerState, loader: Any, batch_size: int
) -> int:
    """How many samples the Trainer skips at the start of a resumed epoch (mirrors it)."""
    try:
        batches = len(loader)
    except TypeError:
        return 0
    accumulation = args.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return (state.global_step % per_epoch) * accumulation * batch_size


def _at_epoch_boundary(args: TrainingArguments, state: TrainerState, loader: Any) -> bool:
    """Whether the Trainer, resuming at this global step, starts a fresh epoch (mirrors it)."""
    try:
        batches = len(loader)
    except TypeError:
        return False
    accumulation = args.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return state.global_step > 0 and state.global_step % per_epoch == 0
