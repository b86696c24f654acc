"""Hugging Face `Trainer` integration: train on the service's coreset, report losses for free.

    from grace_client import CoresetClient
    from grace_client.hf import GraceTrainer, GraceIndexedDataset

    trainer = GraceTrainer(
        model=model, args=args, train_dataset=GraceIndexedDataset(train_dataset),
        grace_client=CoresetClient("http://127.0.0.1:8765"), grace_job="my-job",
    )
    trainer.train()

- The training sampler is a CoresetSampler (this rank's slice of the current round; a newer
  round is taken at an epoch start once every rank has it).
- Per-sample losses are computed from the logits of the forward pass the Trainer already ran
  (no second forward) and handed to a background ScoreReporter.
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
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from grace_client.client import CoresetClient
from grace_client.reporter import ScoreReporter
from grace_client.sampler import CoresetSampler
from grace_client.schedule import RoundSchedule

log = logging.getLogger("grace_client")

ID_COLUMN = "grace_ids"
STATE_FILE = "grace_sampler.json"
IGNORE_INDEX = -100


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


def per_sample_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, (B,) float32; NaN if no token counts.

    logits: (B, T, V); labels: (B, T) with -100 where a token does not count (padding,
    prompt). Token t predicts label t + 1, the shift every causal LM applies.
    """
    shifted_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX
    token_loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        targets.reshape(-1).clamp_min(0),  # masked positions are zeroed below anyway
        reduction="none",
    ).view_as(targets)
    counts = mask.sum(dim=1)
    total = (token_loss * mask).sum(dim=1)
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.nan)


def per_sample_loss(
    logits: torch.Tensor, labels: torch.Tensor | None, *, causal: bool
) -> torch.Tensor | None:
    """(B,) losses from the model's own logits, or None when the task shape is not known."""
    if labels is None:
        return None
    if causal and logits.dim() == 3 and labels.dim() == 2:
        return per_sample_causal_lm_loss(logits, labels)
    if logits.dim() == 2 and labels.dim() == 1 and not labels.is_floating_point():
        return F.cross_entropy(logits.float(), labels, reduction="none")  # classification
    if logits.dim() == 3 and labels.dim() == 2:  # token classification: mean over tokens
        flat = F.cross_entropy(
            logits.float().transpose(1, 2), labels.clamp_min(0), reduction="none"
        )  # (B, T)
        mask = labels != IGNORE_INDEX
        counts = mask.sum(dim=1)
        return torch.where(counts > 0, (flat * mask).sum(dim=1) / counts.clamp_min(1), torch.nan)
    return None


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
    grace_every_epochs: take a newer round every k epochs. grace_report: send per-sample
    losses (source "trainer"). grace_run: names this run in the report batch ids.
    grace_causal_lm: force (or deny) the causal next-token loss; default: detected from
    the model class like the Trainer itself does.
    """

    def __init__(
        self,
        *args: Any,
        grace_client: CoresetClient,
        grace_job: str,
        grace_seed: int = 0,
        grace_every_epochs: int = 1,
        grace_report: bool = True,
        grace_run: str = "default",
        grace_causal_lm: bool | None = None,
        grace_poll_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.grace_client = grace_client
        self.grace_job = grace_job
        self.grace_seed = grace_seed
        self.grace_schedule = RoundSchedule.epochs(grace_every_epochs)
        self.grace_run = grace_run
        self.grace_poll_interval = grace_poll_interval
        self.grace_sampler: CoresetSampler | None = None
        self.grace_reporter: ScoreReporter | None = None
        self._grace_report = grace_report
        self._grace_causal = grace_causal_lm
        self._grace_pending_state: dict[str, Any] | None = None
        self.add_callback(GraceCallback(self))

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
            )
        if self._grace_pending_state is not None:
            self.grace_sampler.load_state_dict(self._grace_pending_state)
            self._grace_pending_state = None
        return self.grace_sampler

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
            else:
                log.warning("%s has no %s: the sampler starts fresh", folder, STATE_FILE)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    # -- free per-sample losses --------------------------------------------------------

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
        if ids is not None and model.training and self._grace_report:
            self._report(model, outputs, labels, ids)
        return (loss, outputs) if return_outputs else loss

    def _report(self, model: torch.nn.Module, outputs: Any, labels: Any, ids: Any) -> None:
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None or not isinstance(labels, torch.Tensor):
            return
        with torch.no_grad():
            losses = per_sample_loss(logits.detach(), labels, causal=self._is_causal(model))
        if losses is None:
            return
        if self.grace_reporter is None:
            sampler = self.grace_sampler
            self.grace_reporter = ScoreReporter(
                self.grace_client,
                self.grace_job,
                rank=self.args.process_index,
                run=self.grace_run,
                round=(lambda: sampler.round) if sampler is not None else 0,
            )
        self.grace_reporter.report(ids, losses, step=self.state.global_step)

    def _is_causal(self, model: torch.nn.Module) -> bool:
        if self._grace_causal is not None:
            return self._grace_causal
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def _at_epoch_boundary(args: TrainingArguments, state: TrainerState, loader: Any) -> bool:
    """Whether the Trainer, resuming at this global step, starts a fresh epoch (mirrors it)."""
    try:
        batches = len(loader)
    except TypeError:
        return False
    accumulation = args.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return state.global_step > 0 and state.global_step % per_epoch == 0
