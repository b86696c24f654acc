"""The Hugging Face Trainer integration on a tiny GPT-2 built locally (no hub, CPU).

Slices come from an in-memory source that also records reported losses, so the test sees
exactly which samples each step trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from grace_client.hf import (
    GraceIndexedDataset,
    GraceTrainer,
    per_sample_causal_lm_loss,
    per_sample_loss,
)
from grace_client.losses import causal_lm_token_sums
from tests.unit.test_reporter_queue import StandInClient
from tests.unit.test_sampler_properties import MemorySource

logging.getLogger("transformers").setLevel(logging.ERROR)


class ServiceStandIn(MemorySource, StandInClient):
    """Slices (MemorySource) and report ingest (StandInClient) in one object."""

    def __init__(self, coresets: dict[int, Any]) -> None:
        MemorySource.__init__(self, coresets)
        StandInClient.__init__(self)

    def trained(self) -> list[tuple[int, list[int]]]:
        """(step, ids) of every reported batch, in step order."""
        with self.lock:
            batches = [(b["step"], sorted(b["ids"])) for b in self.applied.values()]
        return sorted(batches)


class TokenDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int = 64, length: int = 12) -> None:
        gen = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, 64, (n, length), generator=gen)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config)


class PublishRound1(TrainerCallback):
    """Publishes round 1 during the first epoch, as the service would after a round."""

    def __init__(self, service: ServiceStandIn, trainer: GraceTrainer) -> None:
        self.service, self.trainer = service, trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2 and self.service.latest == 0:
            self.service.publish(1, np.arange(32, 52))
            if self.trainer.grace_sampler is not None:
                self.trainer.grace_sampler.poll()


def make_trainer(
    service: ServiceStandIn, out: Path, *, max_steps: int, save_steps: int = 1000
) -> GraceTrainer:
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        save_steps=save_steps,
        save_strategy="steps",
        logging_steps=1000,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        learning_rate=1e-3,
        seed=0,
    )
    trainer = GraceTrainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=GraceIndexedDataset(TokenDataset()),
        data_collator=default_data_collator,
        grace_client=service,  # type: ignore[arg-type]
        grace_job="job",
        grace_seed=1,
    )
    trainer.add_callback(PublishRound1(service, trainer))
    return trainer


def test_per_sample_loss_matches_the_model_loss_row_by_row() -> None:
    model = tiny_gpt2()
    model.train(False)
    tokens = TokenDataset(n=3).tokens
    labels = tokens.clone()
    labels[1, 7:] = -100  # a padded row: only its first tokens count
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
        per = per_sample_causal_lm_loss(logits, labels)
        for row in range(3):
            own = model(input_ids=tokens[row : row + 1], labels=labels[row : row + 1]).loss
            assert per[row].item() == pytest.approx(own.item(), rel=1e-5)
    nothing = torch.full_like(labels, -100)
    assert torch.isnan(per_sample_causal_lm_loss(logits, nothing)).all()
    classes = per_sample_loss(torch.randn(4, 3), torch.tensor([0, 2, 1, 0]), causal=False)
    assert classes is not None
    assert classes.shape == (4,)


@pytest.mark.slow
def test_trainer_trains_on_the_coreset_and_reports_losses_without_a_second_forward(
    tmp_path: Path,
) -> None:
    service = ServiceStandIn({0: np.arange(0, 24)})
    trainer = make_trainer(service, tmp_path / "run", max_steps=8)
    forwards = {"n": 0}
    model = trainer.model
    assert isinstance(model, torch.nn.Module)
    model.register_forward_hook(lambda *_: forwards.__setitem__("n", forwards["n"] + 1))
    trainer.train()
    trained = service.trained()
    assert [step for step, _ in trained] == list(range(8))
    assert forwards["n"] == 8  # one forward per step: the losses came from its logits
    first_epoch = [i for _, ids in trained[:6] for i in ids]
    assert sorted(first_epoch) == list(range(24))  # 24 coreset samples, 6 steps of 4
    assert all(set(ids) <= set(range(32, 52)) for _, ids in trained[6:])  # round 1 after it
    for batch in service.applied.values():
        assert np.isfinite(batch["loss"]).all()
        assert batch["source"] == "trainer"
    assert trainer.grace_reporter is not None
    assert trainer.grace_reporter.stats.sent_batches == 8


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, list[int]]]:
    """What an uninterrupted 8-step run trains on: epoch 1 on round 0, then round 1."""
    service = ServiceStandIn({0: np.arange(0, 24)})
    make_trainer(service, tmp_path_factory.mktemp("reference"), max_steps=8).train()
    return service.trained()


@pytest.mark.slow
@pytest.mark.parametrize("save_at", [4, 6])
def test_resume_from_a_checkpoint_trains_on_exactly_the_remaining_samples(
    tmp_path: Path, save_at: int, reference_run: list[tuple[int, list[int]]]
) -> None:
    # Step 4 is mid-epoch (the Trainer skips 4 batches); step 6 is an epoch boundary.
    interrupted = ServiceStandIn({0: np.arange(0, 24)})
    make_trainer(interrupted, tmp_path / "run", max_steps=save_at, save_steps=save_at).train()
    checkpoint = tmp_path / "run" / f"checkpoint-{save_at}"
    assert (checkpoint / "grace_sampler.json").exists()

    resumed = ServiceStandIn({0: np.arange(0, 24)})
    resumed.publish(1, np.arange(32, 52))  # by now the service has published round 1
    make_trainer(resumed, tmp_path / "run", max_steps=8).train(
        resume_from_checkpoint=str(checkpoint)
    )
    assert resumed.trained() == [(s, ids) for s, ids in reference_run if s >= save_at]


class Recorder(TrainerCallback):
    """What the report_to integrations receive: every on_log call's dict."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float]]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append((state.global_step, dict(logs or {})))


class PublishAt(TrainerCallback):
    """Publishes (and polls) the given rounds after the given steps, like a service would."""

    def __init__(self, service: ServiceStandIn, trainer: GraceTrainer, rounds: dict[int, Any]):
        self.service, self.trainer, self.rounds = service, trainer, rounds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for round_, (step, ids) in self.rounds.items():
            if state.global_step == step and (self.service.latest or 0) < round_:
                self.service.publish(round_, ids)
                assert self.trainer.grace_sampler is not None
                self.trainer.grace_sampler.poll()


def step_trainer(
    service: ServiceStandIn, out: Path, *, max_steps: int, save_steps: int = 1000, **grace: Any
) -> GraceTrainer:
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        save_steps=save_steps,
        save_strategy="steps",
        logging_steps=2,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        learning_rate=1e-3,
        seed=0,
    )
    return GraceTrainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=GraceIndexedDataset(TokenDataset()),
        data_collator=default_data_collator,
        grace_client=service,  # type: ignore[arg-type]
        grace_job="job",
        grace_seed=1,
        **grace,
    )


ROUND_1 = (1, np.arange(32, 56))  # published after step 1: the same 24 samples per round
ROUND_2 = (5, np.arange(4, 28))


@pytest.mark.slow
def test_every_n_steps_switches_mid_epoch_and_logs_the_round(tmp_path: Path) -> None:
    service = ServiceStandIn({0: np.arange(0, 24)})
    trainer = step_trainer(service, tmp_path / "run", max_steps=10, grace_every_steps=2)
    recorder = Recorder()
    trainer.add_callback(recorder)
    trainer.add_callback(PublishAt(service, trainer, {1: ROUND_1}))
    trainer.train()
    trained = service.trained()
    assert [step for step, _ in trained] == list(range(10))  # no epoch cut short
    assert all(set(ids) <= set(range(24)) for _, ids in trained[:2])  # 2 steps of round 0
    assert all(set(ids) <= set(range(32, 56)) for _, ids in trained[2:])  # then round 1
    assert trainer.state.epoch == pytest.approx(10 / 6)  # epochs of 6 steps, as on round 0

    steps = {step: logs for step, logs in recorder.logs if "loss" in logs}
    assert sorted(steps) == [2, 4, 6, 8, 10]
    assert steps[2]["grace/round"] == 0
    assert steps[2]["grace/coreset_size"] == 24
    assert steps[2]["grace/rescored_fraction"] == 0.0
    assert "grace/churn" not in steps[2]  # round 0 has nothing to differ from
    for step in (4, 6, 8, 10):
        assert steps[step]["grace/round"] == 1
        assert steps[step]["grace/churn"] == 1.0  # round 1 shares no sample with round 0
        assert steps[step]["grace/rescored_fraction"] == pytest.approx(0.1)
        assert steps[step]["grace/service_reachable"] == 1.0
    assert trainer.state.log_history[0]["grace/round"] == 0  # what the integrations read


@pytest.fixture(scope="module")
def step_reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, list[int]]]:
    """An uninterrupted 10-step run, switching every 2 steps when a round is ready."""
    service = ServiceStandIn({0: np.arange(0, 24)})
    trainer = step_trainer(
        service, tmp_path_factory.mktemp("steps"), max_steps=10, grace_every_steps=2
    )
    trainer.add_callback(PublishAt(service, trainer, {1: ROUND_1, 2: ROUND_2}))
    trainer.train()
    return service.trained()


@pytest.mark.slow
@pytest.mark.parametrize("save_at", [4, 6])
def test_resume_under_a_step_schedule_repeats_the_first_runs_switches(
    tmp_path: Path, save_at: int, step_reference: list[tuple[int, list[int]]]
) -> None:
    # Round 1 came at step 2 (position 8), round 2 at position 24 (the second epoch's
    # start). Resuming at step 4 fast-forwards through the switch at position 8 and past
    # position 16, where round 2, now out, must not be taken: the first run had not seen it.
    rounds = {r: ids for r, (_, ids) in {1: ROUND_1, 2: ROUND_2}.items()}
    interrupted = ServiceStandIn({0: np.arange(0, 24)})
    first = step_trainer(
        interrupted, tmp_path / "run", max_steps=save_at, save_steps=save_at, grace_every_steps=2
    )
    first.add_callback(PublishAt(interrupted, first, {1: ROUND_1}))
    first.train()
    checkpoint = tmp_path / "run" / f"checkpoint-{save_at}"

    resumed = ServiceStandIn({0: np.arange(0, 24), **rounds})  # by now rounds 1 and 2 are out
    step_trainer(resumed, tmp_path / "run", max_steps=10, grace_every_steps=2).train(
        resume_from_checkpoint=str(checkpoint)
    )
    assert resumed.trained() == [(s, ids) for s, ids in step_reference if s >= save_at]
    assert all(set(ids) <= set(range(4, 28)) for s, ids in step_reference if s >= 6)


def _weighted_batch(trainer: GraceTrainer, ids: list[int]) -> dict[str, Any]:
    """The collated batch of `ids`, with the model in training mode minus dropout (so that
    a second forward pass gives the same logits)."""
    assert isinstance(trainer.model, torch.nn.Module)
    trainer.model.train()
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    dataset = trainer.train_dataset
    assert dataset is not None
    batch: dict[str, Any] = default_data_collator([dataset[i] for i in ids])
    return batch


@pytest.mark.parametrize("num_items", [None, 37])
def test_a_weighted_round_trains_on_the_weighted_token_mean(
    tmp_path: Path, num_items: int | None
) -> None:
    service = ServiceStandIn({0: np.arange(1, 25)})
    service.weighted = True  # sample i weighs 10 * i
    trainer = step_trainer(service, tmp_path / "run", max_steps=1)
    trainer._get_train_sampler()
    model = trainer.model
    assert isinstance(model, torch.nn.Module)
    ids = [3, 7, 20, 1]
    batch = _weighted_batch(trainer, ids)
    batch["labels"][1, 6:] = -100  # rows of different lengths: weights multiply tokens
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()

    logits = model(input_ids=batch["input_ids"]).logits
    sums, counts = causal_lm_token_sums(logits, batch["labels"])
    w = torch.tensor([10.0 * i for i in ids])
    if num_items is None:
        expected = (w * sums).sum() / (w * counts).sum()  # the weighted token mean
    else:  # the Trainer divides by the accumulated batch's tokens: the same batch weight
        expected = (w * sums).sum() * (counts.sum() / (w * counts).sum()) / num_items
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    expected.backward()  # type: ignore[no-untyped-call]
    want = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_an_unweighted_round_or_grace_weighted_off_keeps_the_trainers_loss(tmp_path: Path) -> None:
    for weighted, grace_weighted in ((False, True), (True, False)):
        service = ServiceStandIn({0: np.arange(1, 25)})
        service.weighted = weighted
        trainer = step_trainer(
            service, tmp_path / f"run{weighted}", max_steps=1, grace_weighted=grace_weighted
        )
        trainer._get_train_sampler()
        model = trainer.model
        assert isinstance(model, torch.nn.Module)
        batch = _weighted_batch(trainer, [3, 7, 20, 1])
        loss = trainer.compute_loss(model, dict(batch))
        plain = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
