"""Fine-tuning under a compute budget: the schedule, batching, one step, the held-out loss, a
whole run with a provider that charges its scoring, and the benchmark's charged methods.

Everything runs a TinyGPT of one layer, width 16, on a few dozen random pairs: seconds on a CPU.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grace_lab.compute import ComputeMeter, matmul_params
from grace_lab.coreset_training import RoundPlan
from grace_lab.finetune_data import FinetuneData, _open
from grace_lab.finetune_methods import (
    DIM,
    EmbeddingSource,
    FinetuneGrace,
    GraceRecipe,
    RhoLoss,
    StaticSelection,
    charged_scores,
    input_embeddings,
)
from grace_lab.finetune_training import (
    CurvePoint,
    FinetuneRun,
    FinetuneSchedule,
    StepSignals,
    _next_batch,
    _weights_by_id,
    evaluate,
    reference_compute,
    run_finetune,
    train_pairs_step,
)
from grace_lab.lm_training import make_optimizer
from grace_selection.core.config import SelectionConfig
from grace_workers.dataset import write_dataset
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

I64 = npt.NDArray[np.int64]
VOCAB, BLOCK, N_TRAIN, N_HELD = 40, 16, 48, 12
CONFIG = TinyGPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
NAMES = ("noun", "verb", "adverb")


def _pairs_dataset(path: Path, n: int, seed: int, strata: list[int], longest: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, longest + 1, size=n)
    samples = [rng.integers(0, VOCAB, size=int(length)) for length in lengths]
    # The response starts inside the block, as prepared pairs' do (a long one is cut in it).
    starts = [int(rng.integers(1, min(int(length), BLOCK))) for length in lengths]
    write_dataset(
        path,
        samples,
        vocab_size=VOCAB,
        strata=np.asarray(strata),
        target_starts=np.asarray(starts),
        extra_meta={"noisy": [0, 5, 9], "groups": list(range(n))},
    )


def _finetune_data(root: Path, longest: int) -> FinetuneData:
    """48 training pairs (strata 30/12/6) and 12 held-out ones, laid out as the lab has them."""
    train_strata = [0] * 30 + [1] * 12 + [2] * 6
    _pairs_dataset(root / "train", N_TRAIN, longest, train_strata, longest=longest)
    _pairs_dataset(root / "held_out", N_HELD, 1, [0, 1, 2] * 4, longest=BLOCK)
    _pairs_dataset(root / "pretrain", 4, 2, [0] * 4, longest=BLOCK)
    (root / "strata.json").write_text(json.dumps(list(NAMES)))
    (root / "train.text.jsonl").write_text("")
    return _open(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> FinetuneData:
    """Some training pairs are longer than the block, as real pairs can be."""
    return _finetune_data(tmp_path_factory.mktemp("finetune"), longest=BLOCK + 4)


@pytest.fixture(scope="module")
def short_data(tmp_path_factory: pytest.TempPathFactory) -> FinetuneData:
    """No pair is longer than the block."""
    return _finetune_data(tmp_path_factory.mktemp("finetune_short"), longest=BLOCK)


@pytest.fixture(scope="module")
def base_state() -> dict[str, Any]:
    torch.manual_seed(0)
    return TinyGPT(CONFIG).state_dict()


def _model(state: dict[str, Any]) -> TinyGPT:
    model = TinyGPT(CONFIG)
    model.load_state_dict(state)
    return model


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: no thread fights
    yield
    torch.set_num_threads(threads)


# The schedule ----------------------------------------------------------------------------------


@given(
    lr=st.floats(1e-5, 1.0),
    warmup=st.floats(0.01, 0.5),
    a=st.floats(0.0, 1.0),
    b=st.floats(0.0, 1.0),
)
def test_lr_warms_up_to_its_peak_then_decays_to_a_tenth(
    lr: float, warmup: float, a: float, b: float
) -> None:
    schedule = FinetuneSchedule(lr=lr, warmup_share=warmup)
    lo, hi = sorted((a, b))
    assert schedule.lr_at(warmup) == pytest.approx(lr)
    assert schedule.lr_at(1.0) == pytest.approx(0.1 * lr)
    assert schedule.lr_at(1.5) == pytest.approx(0.1 * lr)  # a step past the budget stays there
    assert 0.0 < schedule.lr_at(lo) <= lr * (1 + 1e-9)
    if hi <= warmup:
        assert schedule.lr_at(lo) <= schedule.lr_at(hi)
    if lo >= warmup:
        assert schedule.lr_at(lo) >= schedule.lr_at(hi)
        assert schedule.lr_at(hi) >= 0.1 * lr * (1 - 1e-9)


@pytest.mark.parametrize("field", ["epochs", "rounds", "tokens_per_step"])
def test_a_schedule_needs_at_least_one_epoch_round_and_token(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FinetuneSchedule(**{field: 0})  # type: ignore[arg-type]


# Batches ---------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    lengths=hnp.arrays(np.int64, st.integers(1, 12), elements=st.integers(1, 20)),
    data_=st.data(),
)
def test_next_batch_fills_up_to_the_token_limit_in_order_and_wraps(
    lengths: I64, data_: st.DataObject
) -> None:
    n = lengths.size
    order = np.asarray(data_.draw(st.permutations(range(n))), dtype=np.int64)
    cursor = data_.draw(st.integers(0, 3 * n))
    tokens = data_.draw(st.integers(0, 80))
    ids, after = _next_batch(order, cursor, lengths, tokens)
    taken = int(lengths[ids].sum())
    assert taken <= tokens
    assert after - cursor == ids.size
    # The ids are the next ones of `order`, wrapping around its end.
    assert ids.tolist() == [int(order[(cursor + k) % n]) for k in range(ids.size)]
    following = int(lengths[order[after % n]])
    if ids.size == 0:
        assert following > tokens  # empty only when not even the next sample fits
    elif after - cursor < 4 * n:
        assert taken + following > tokens  # full: the next sample would not fit


def test_next_batch_continues_where_the_last_one_ended() -> None:
    order = np.array([2, 0, 1], dtype=np.int64)
    lengths = np.array([3, 3, 3], dtype=np.int64)
    seen: list[int] = []
    cursor = 0
    for _ in range(4):
        ids, cursor = _next_batch(order, cursor, lengths, 7)
        assert ids.size == 2
        seen += ids.tolist()
    assert seen == [2, 0, 1, 2, 0, 1, 2, 0]  # every id once per pass, in order


@given(
    weights=hnp.arrays(np.float32, st.integers(1, 10), elements=st.floats(0.125, 8.0, width=32)),
    n=st.integers(10, 30),
    seed=st.integers(0, 100),
)
def test_weights_by_id_have_mean_one_on_the_plan_and_zero_elsewhere(
    weights: npt.NDArray[np.float32], n: int, seed: int
) -> None:
    ids = np.random.default_rng(seed).choice(n, size=weights.size, replace=False).astype(np.int64)
    by_id = _weights_by_id(RoundPlan(ids, weights), n)
    assert by_id is not None
    assert by_id.shape == (n,)
    assert float(by_id[ids].mean()) == pytest.approx(1.0, rel=1e-5)
    assert np.allclose(by_id[ids] / by_id[ids][0], weights / weights[0], rtol=1e-5)
    assert not np.delete(by_id, ids).any()
    assert _weights_by_id(RoundPlan(ids), n) is None


# One step, the held-out loss -------------------------------------------------------------------


def test_a_step_reads_every_token_up_to_the_block_and_reports_per_sample_signals(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    ids = np.array([3, 7, 11, 20], dtype=np.int64)
    signals, tokens = train_pairs_step(model, make_optimizer(model, 1e-3), data.train, ids, BLOCK)
    assert tokens == int(np.minimum(data.train.lengths[ids], BLOCK).sum())
    assert signals.ids.tolist() == ids.tolist()
    assert signals.loss.shape == signals.importance.shape == (4,)
    assert signals.pooled.shape == (4, CONFIG.n_embd)
    assert bool((signals.loss > 0).all())
    assert bool((signals.importance >= 0).all())
    assert np.isfinite(signals.pooled).all()


def _after_step(
    data: FinetuneData, state: dict[str, Any], ids: I64, weights: list[float] | None
) -> list[torch.Tensor]:
    model = _model(state)
    w = None if weights is None else torch.tensor(weights)
    # Plain SGD: the update is the gradient itself (Adam's first step would amplify rounding).
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    train_pairs_step(model, sgd, data.train, ids, BLOCK, w)
    return [p.detach().clone() for p in model.parameters()]


def test_a_zero_weight_drops_a_sample_and_equal_weights_change_nothing(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    lengths = data.train.lengths
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    both = np.array([short, long], dtype=np.int64)  # the first row gets padding
    alone = _after_step(data, base_state, both[:1], None)
    dropped = _after_step(data, base_state, both, [1.0, 0.0])
    plain = _after_step(data, base_state, both, None)
    scaled = _after_step(data, base_state, both, [3.0, 3.0])
    for a, b in zip(alone, dropped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(plain, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(alone, plain, strict=True))


def test_the_held_out_loss_does_not_depend_on_batching_and_weighs_strata_by_training_share(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    whole = evaluate(model, data, BLOCK)
    pieces = evaluate(model, data, BLOCK, batch_size=5)
    assert set(whole.by_stratum) == set(NAMES)
    for name in NAMES:
        assert pieces.by_stratum[name] == pytest.approx(whole.by_stratum[name], rel=1e-5)
    shares = data.stratum_shares
    assert shares.tolist() == pytest.approx([30 / 48, 12 / 48, 6 / 48])
    weighted = sum(s * whole.by_stratum[name] for s, name in zip(shares, NAMES, strict=True))
    assert whole.loss == pytest.approx(weighted, rel=1e-6)
    assert whole.worst == max(whole.by_stratum.values())
    assert whole.perplexity == pytest.approx(np.exp(whole.loss))


# A whole run -----------------------------------------------------------------------------------


class ChargingProvider:
    """Each round: a random half of the pairs, scored first (2PT charged) while it still fits."""

    name = "charging"

    def __init__(self, data: FinetuneData, seed: int, weighted: bool = False) -> None:
        self.data, self.seed, self.weighted = data, seed, weighted
        self.plans: list[I64] = []
        self.observed: list[tuple[int, StepSignals]] = []
        self.charges: list[float] = []
        self.began = self.closed = False

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        self.began = True

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        rng = np.random.default_rng([self.seed, round_])
        ids = np.sort(
            rng.choice(len(self.data.train), size=len(self.data.train) // 2, replace=False)
        )
        tokens = int(np.minimum(self.data.train.lengths[ids], model.max_positions).sum())
        if meter.can_score(matmul_params(model), tokens):
            before = meter.scoring
            meter.charge_scoring(matmul_params(model), tokens)
            self.charges.append(meter.scoring - before)
        self.plans.append(ids.astype(np.int64))
        weights = rng.uniform(0.5, 2.0, ids.size).astype(np.float32) if self.weighted else None
        return RoundPlan(ids.astype(np.int64), weights, scored_samples=ids.size)

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        self.observed.append((round_, signals))

    def close(self) -> None:
        self.closed = True


SCHEDULE = FinetuneSchedule(epochs=3, rounds=3, tokens_per_step=64, eval_points=4, block=BLOCK)


def _run(
    data: FinetuneData,
    state: dict[str, Any],
    provider: Any,
    share: float,
    points: list[CurvePoint] | None = None,
) -> FinetuneRun:
    params = matmul_params(TinyGPT(CONFIG))
    budget = share * reference_compute(data, params, SCHEDULE)
    return run_finetune(
        data,
        CONFIG,
        state,
        provider,
        budget,
        SCHEDULE,
        seed=0,
        on_point=points.append if points is not None else None,
    )


@pytest.fixture(scope="module")
def charged_run(
    data: FinetuneData, base_state: dict[str, Any]
) -> tuple[FinetuneRun, ChargingProvider, list[CurvePoint]]:
    provider = ChargingProvider(data, seed=0, weighted=True)
    points: list[CurvePoint] = []
    return _run(data, base_state, provider, 0.3, points), provider, points


def test_reference_compute_is_full_data_for_every_epoch(data: FinetuneData) -> None:
    params = matmul_params(TinyGPT(CONFIG))
    assert reference_compute(data, params, SCHEDULE) == 6.0 * params * data.train.lengths.sum() * 3


def test_a_run_spends_its_budget_without_overrunning_it(
    charged_run: tuple[FinetuneRun, ChargingProvider, list[CurvePoint]],
) -> None:
    run, provider, _ = charged_run
    meter = run.meter
    step = 6.0 * matmul_params(TinyGPT(CONFIG))  # one trained token
    assert meter.total <= run.budget + 1e-6
    # What is left is less than one more sample: the loop stops only when nothing fits.
    assert meter.total > run.budget - step * BLOCK
    assert provider.began
    assert provider.closed


def test_a_run_charges_its_providers_scoring_out_of_training(
    charged_run: tuple[FinetuneRun, ChargingProvider, list[CurvePoint]],
) -> None:
    run, provider, _ = charged_run
    meter = run.meter
    assert provider.charges
    assert meter.scoring == pytest.approx(sum(provider.charges))
    assert meter.by_model == {"main": pytest.approx(sum(provider.charges))}
    assert meter.train == pytest.approx(meter.total - meter.scoring)
    trained = sum(r["trained_tokens"] for r in run.rounds)
    assert meter.train == pytest.approx(6.0 * matmul_params(TinyGPT(CONFIG)) * trained)


def test_a_run_trains_each_round_only_on_its_plan(
    charged_run: tuple[FinetuneRun, ChargingProvider, list[CurvePoint]],
) -> None:
    run, provider, _ = charged_run
    assert [r["round"] for r in run.rounds] == [0, 1, 2]
    assert provider.observed
    for round_, signals in provider.observed:
        assert set(signals.ids.tolist()) <= set(provider.plans[round_].tolist())
    for info, plan in zip(run.rounds, provider.plans, strict=True):
        assert info["coreset"] == plan.size
        assert info["noisy_share"] == pytest.approx(float(np.isin(plan, [0, 5, 9]).mean()))
    spent = [r["spent"] for r in run.rounds]
    assert spent == sorted(spent)
    assert spent[-1] == run.meter.total


def test_the_curve_starts_untrained_and_rises_in_compute_to_the_total(
    charged_run: tuple[FinetuneRun, ChargingProvider, list[CurvePoint]],
) -> None:
    run, provider, streamed = charged_run
    compute = [p.compute for p in run.curve]
    assert compute[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(compute))
    assert compute[-1] == pytest.approx(run.meter.total)
    assert len(run.curve) == SCHEDULE.eval_points + 1
    # Each measured point is the first at or past its share of the budget.
    marks = [run.budget * (k + 1) / SCHEDULE.eval_points for k in range(SCHEDULE.eval_points)]
    # Measured after the step that reaches its mark (a round's scoring may jump past it first).
    step = 6.0 * matmul_params(TinyGPT(CONFIG)) * SCHEDULE.tokens_per_step
    for point, mark in zip(run.curve[1:-1], marks, strict=False):
        assert mark - 1e-6 <= point.compute < mark + step + max(provider.charges)
    assert streamed == run.curve[1 : 1 + len(streamed)]
    assert len(streamed) >= len(run.curve) - 2
    assert run.final == run.curve[-1].held_out
    assert all(np.isfinite(p.held_out.loss) for p in run.curve)


def test_a_provider_with_nothing_to_train_on_leaves_an_evaluated_curve(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    class Empty(ChargingProvider):
        def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
            return RoundPlan(np.zeros(0, np.int64))

    run = _run(data, base_state, Empty(data, 0), 0.2)
    assert run.meter.total == 0.0
    assert [p.compute for p in run.curve] == [0.0, 0.0]  # the start, and the (same) end
    assert all(r["noisy_share"] == 0.0 for r in run.rounds)


# The charged methods ---------------------------------------------------------------------------


def test_charged_scores_charge_two_p_per_token_read(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    ids = np.arange(N_TRAIN, dtype=np.int64)
    meter = ComputeMeter(budget=1e12)
    scored = charged_scores(model, data, ids, meter, seed=0, label="proxy")
    read = int(np.minimum(data.train.lengths, BLOCK).sum())
    assert read < int(data.train.lengths.sum())  # some pairs are longer than the block
    assert meter.scoring == 2.0 * matmul_params(model) * read
    assert meter.by_model == {"proxy": meter.scoring}
    assert meter.train == meter.reference == 0.0
    assert scored.loss.shape == (N_TRAIN,)
    assert scored.embeddings.shape == (N_TRAIN, DIM)


def test_input_embeddings_are_unit_vectors_and_need_no_forward_pass(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    ids = np.arange(N_TRAIN, dtype=np.int64)
    vectors = input_embeddings(model, data, ids, seed=0)
    assert vectors.shape == (N_TRAIN, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors, input_embeddings(model, data, ids, seed=0))


def test_static_selection_pays_one_scoring_pass_over_every_pair(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    config = SelectionConfig(budget_fraction=0.5)
    method = StaticSelection("facility_location_static", data, config, seed=0)
    meter = ComputeMeter(budget=1e12)
    method.begin(model, meter)
    read = int(np.minimum(data.train.lengths, BLOCK).sum())
    assert meter.total == meter.scoring == 2.0 * matmul_params(model) * read
    plan = method.next_round(0, model, meter)
    assert 0 < plan.ids.size < N_TRAIN
    assert plan.scored_samples == N_TRAIN
    assert method.next_round(1, model, meter) is plan  # chosen once, kept
    assert meter.total == 2.0 * matmul_params(model) * read  # later rounds are free


def test_a_run_whose_selection_pass_overruns_its_budget_is_refused(
    short_data: FinetuneData, base_state: dict[str, Any]
) -> None:
    # Scoring every pair costs C/9 with 3 epochs: a budget of 0.08 C cannot pay for it.
    method = StaticSelection("facility_location_static", short_data, SelectionConfig(), seed=0)
    with pytest.raises(ValueError, match="facility_location_static: choosing its data cost"):
        _run(short_data, base_state, method, 0.08)


class RecordedRhoLoss(RhoLoss):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plans: list[I64] = []

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        plan = super().next_round(round_, model, meter)
        self.plans.append(plan.ids)
        return plan


def test_rho_loss_charges_its_reference_model_and_stays_within_the_budget(
    short_data: FinetuneData, base_state: dict[str, Any]
) -> None:
    method = RecordedRhoLoss(
        short_data, 12, CONFIG, base_state, seed=0, reference_epochs=1, tokens_per_step=64
    )
    assert set(method.holdout.tolist()).isdisjoint(method.candidates.tolist())
    run = _run(short_data, base_state, method, 0.5)
    meter = run.meter
    params = matmul_params(TinyGPT(CONFIG))
    # The reference model trained once over its holdout (6PT) and scored the candidates (2PT).
    holdout_tokens = int(short_data.train.lengths[method.holdout].sum())
    assert meter.reference == pytest.approx(6.0 * params * holdout_tokens)
    candidates = int(short_data.train.lengths[method.candidates].sum())
    assert meter.by_model["reference"] == pytest.approx(2.0 * params * candidates)
    assert meter.total <= run.budget + 1e-6
    # Each round keeps at most its budget of pairs, never one its reference model learnt from.
    for plan in method.plans:
        assert 0 < plan.size <= 12
        assert set(plan.tolist()) <= set(method.candidates.tolist())


def test_rho_loss_reference_training_cuts_pairs_at_the_models_block(
    data: FinetuneData, base_state: dict[str, Any]
) -> None:
    assert int(data.train.lengths.max()) > BLOCK  # some pairs are longer than the block
    method = RhoLoss(data, 12, CONFIG, base_state, seed=0, reference_epochs=1)
    meter = ComputeMeter(budget=1e12)
    method.begin(_model(base_state), meter)
    assert meter.reference > 0


@pytest.mark.parametrize("embedding", ["input", "model"])
def test_grace_in_process_charges_its_round_zero_pass_only_when_it_runs_the_model(
    short_data: FinetuneData, base_state: dict[str, Any], embedding: EmbeddingSource
) -> None:
    model = _model(base_state)
    config = SelectionConfig(budget_fraction=0.25, k=5)
    grace = FinetuneGrace("grace", short_data, GraceRecipe(config, embedding=embedding), seed=0)
    meter = ComputeMeter(budget=1e12)
    try:
        grace.begin(model, meter)
        read = int(short_data.train.lengths.sum())
        expected = 2.0 * matmul_params(model) * read if embedding == "model" else 0.0
        assert meter.total == meter.scoring == expected
        plan = grace.next_round(0, model, meter)
        assert plan.ids.size == pytest.approx(0.25 * N_TRAIN, abs=3)
        assert set(plan.ids.tolist()) <= set(range(N_TRAIN))
        assert meter.total == expected  # round 0 reuses the pass begin made
    finally:
        grace.close()


def test_grace_in_process_skips_a_rescoring_pass_it_cannot_afford(
    short_data: FinetuneData, base_state: dict[str, Any]
) -> None:
    model = _model(base_state)
    config = SelectionConfig(budget_fraction=0.25, k=5, rescore_fraction=0.5)
    grace = FinetuneGrace("grace", short_data, GraceRecipe(config, signals="workers"), seed=0)
    params = matmul_params(model)
    first_pass = 2.0 * params * int(short_data.train.lengths.sum())
    meter = ComputeMeter(budget=first_pass * 1.5)
    try:
        grace.begin(model, meter)
        grace.next_round(0, model, meter)
        rescore = grace.plan
        assert rescore.size > 0
        plan = grace.next_round(1, model, meter)  # the plan's pass fits: charged
        assert not plan.info["scoring_skipped"]
        assert plan.scored_samples == rescore.size
        assert meter.scoring == pytest.approx(
            first_pass + 2.0 * params * int(short_data.train.lengths[rescore].sum())
        )
        meter.charge_training(params, int(meter.remaining // (6.0 * params)))
        spent = meter.total
        skipped = grace.next_round(2, model, meter)  # it no longer fits: estimated instead
        assert skipped.info["scoring_skipped"]
        assert skipped.scored_samples == 0
        assert meter.total == spent
        assert meter.total <= meter.budget
    finally:
        grace.close()
