"""What every fine-tuning study shares: the options, one seed's setup, the methods by name.

`Study` holds the choices made once for a study (data recipe, schedule, model shape, where
things are cached, the GRACE recipes) and starts the service and Ray when a GRACE row needs
them. `prepare_setup` builds a seed's data and pretrained base model (both cached).
`make_provider` turns a method's name into its provider.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from grace_lab.base_model import pretrain_base
from grace_lab.compute import matmul_params
from grace_lab.finetune_data import FinetuneData, FinetuneRecipe, prepare_finetune_data
from grace_lab.finetune_methods import (
    FinetuneGrace,
    GraceRecipe,
    Legacy,
    RhoLoss,
    StaticSelection,
)
from grace_lab.finetune_training import FinetuneSchedule, reference_compute
from grace_selection.core.budget import budget_size
from grace_selection.core.config import SelectionConfig
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

# GRACE for fine-tuning under a compute budget (chosen on seeds 10-12, docs/results/
# finetune_tuning.md): no scoring pass at all. Round 0's graph comes from the input token
# embeddings (no forward pass); every later round's scores are the losses training computed
# anyway, reported for the next round; unseen samples rank first (optimism) and the coreset
# is drawn in proportion to utility, not taken as a top-k.
GRACE_CONFIG = SelectionConfig(
    selector="importance_sampling",
    sampling_power=3.0,
    rescore_fraction=0.0,
    estimation_rule="delta",
    unscored_rank=1.0,
    weighted=False,
)
GRACE_RECIPE = GraceRecipe(GRACE_CONFIG, signals="trainer", embedding="input", importance="loss")
# Full re-scoring: the service's defaults with every sample scored by the workers each round.
FULL_RESCORING_RECIPE = GraceRecipe(SelectionConfig(rescore_fraction=1.0), signals="workers")


@dataclass(frozen=True, slots=True)
class Study:
    recipe: FinetuneRecipe
    schedule: FinetuneSchedule
    work_dir: Path
    threads: int = 1
    workers: int = 1
    n_layer: int = 2
    n_embd: int = 128
    pretrain_epochs: float = 1.0
    grace: GraceRecipe = GRACE_RECIPE
    full_rescoring: GraceRecipe = FULL_RESCORING_RECIPE
    store: str = ""  # the service's store: "" embedded, or a redis:// URL
    service_url: list[str] = field(default_factory=list)  # set while services() runs

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--work-dir", type=Path, default=Path("var/finetune"))
        parser.add_argument("--threads", type=int, default=1, help="torch threads")
        parser.add_argument("--workers", type=int, default=1, help="Ray scoring actors")
        parser.add_argument("--train-synsets", type=int, default=1500)
        parser.add_argument("--held-out-pairs", type=int, default=400)
        parser.add_argument(
            "--label-noise",
            type=float,
            default=None,
            help="share of training pairs given another synset's definition (default 0.2 on "
            "the WordNet task, 0 on --jsonl pairs)",
        )
        parser.add_argument(
            "--pos-weights", help="another stratum mix: weights of noun,verb,adjective,adverb"
        )
        parser.add_argument("--jsonl", help='your training pairs: {"prompt","response","stratum"}')
        parser.add_argument("--held-out-jsonl", help="your held-out pairs (needed with --jsonl)")
        parser.add_argument("--pretrain-documents", type=int, default=20_000)
        parser.add_argument("--pretrain-epochs", type=float, default=1.0)
        parser.add_argument("--epochs", type=int, default=3, help="full data's passes: C")
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--lr", type=float, default=3e-3)
        parser.add_argument("--eval-points", type=int, default=5)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Study:
        noise = args.label_noise if args.label_noise is not None else (0.0 if args.jsonl else 0.2)
        weights = None
        if args.pos_weights:
            weights = tuple(float(w) for w in args.pos_weights.split(","))
        recipe = FinetuneRecipe(
            train_synsets=args.train_synsets,
            held_out_pairs=args.held_out_pairs,
            label_noise=noise,
            pos_weights=weights,
            pretrain_documents=args.pretrain_documents,
            jsonl=args.jsonl,
            held_out_jsonl=args.held_out_jsonl,
        )
        schedule = FinetuneSchedule(
            epochs=args.epochs, rounds=args.rounds, lr=args.lr, eval_points=args.eval_points
        )
        return cls(
            recipe,
            schedule,
            args.work_dir,
            threads=args.threads,
            workers=args.workers,
            pretrain_epochs=args.pretrain_epochs,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "recipe": asdict(self.recipe),
            "schedule": asdict(self.schedule),
            "model": {"n_layer": self.n_layer, "n_embd": self.n_embd},
            "pretrain_epochs": self.pretrain_epochs,
            "grace": _recipe_json(self.grace),
            "grace_full_rescoring": _recipe_json(self.full_rescoring),
        }

    @contextlib.contextmanager
    def services(self, *, needs_service: bool) -> Iterator[None]:
        """The selection service and a local Ray cluster, for as long as the study runs."""
        import torch

        torch.set_num_threads(self.threads)
        if not needs_service:
            yield
            return
        import ray

        from grace_selection.local_service import start_local_service

        service_dir = self.work_dir / f"service-{os.getpid()}-{int(time.time())}"
        service = start_local_service(service_dir, store=self.store, index="hnsw")
        own_ray = not ray.is_initialized()
        if own_ray:
            ray.init(
                address="local",
                num_cpus=max(2, self.workers),
                num_gpus=0,
                include_dashboard=False,
                configure_logging=False,
                log_to_driver=False,
            )
        self.service_url.append(service.url)
        try:
            yield
        finally:
            self.service_url.clear()
            if own_ray:
                ray.shutdown()
            service.stop()


def _recipe_json(recipe: GraceRecipe) -> dict[str, Any]:
    out = asdict(recipe)
    out["config"] = recipe.config.to_dict()
    return out


def unwind_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so that the service and Ray a study
    started are stopped by its `finally` blocks instead of being left behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@dataclass(frozen=True, slots=True, eq=False)
class FinetuneSetup:
    seed: int
    data: FinetuneData
    model_config: TinyGPTConfig
    base_state: dict[str, Any]
    reference: float  # C, FLOPs


def prepare_setup(study: Study, seed: int) -> FinetuneSetup:
    recipe = replace(study.recipe, seed=seed)
    data = prepare_finetune_data(study.work_dir / _data_folder(recipe), recipe)
    model_config = TinyGPTConfig(
        vocab_size=data.train.vocab_size,
        block_size=study.schedule.block,
        n_layer=study.n_layer,
        n_embd=study.n_embd,
    )
    base = pretrain_base(
        data.pretrain, model_config, seed, study.work_dir / "base", epochs=study.pretrain_epochs
    )
    params = matmul_params(TinyGPT(model_config))
    return FinetuneSetup(
        seed, data, model_config, base, reference_compute(data, params, study.schedule)
    )


# The proxy scorer: one layer of width 32, about a sixth of the main model's matrix-product
# parameters (the 4k-token output layer dominates both), pretrained like the base model.
PROXY_LAYERS, PROXY_WIDTH = 1, 32


def proxy_model(study: Study, setup: FinetuneSetup) -> TinyGPT:
    """A smaller model pretrained on the same general corpus (cached), never fine-tuned."""
    config = replace(setup.model_config, n_layer=PROXY_LAYERS, n_embd=PROXY_WIDTH)
    state = pretrain_base(
        setup.data.pretrain,
        config,
        setup.seed,
        study.work_dir / "base",
        epochs=study.pretrain_epochs,
    )
    model = TinyGPT(config)
    model.load_state_dict(state)
    return model


def _data_folder(recipe: FinetuneRecipe) -> str:
    """One folder per recipe: a seed's data is shared by every study that asks for it."""
    import hashlib

    return "data-" + hashlib.sha256(recipe.to_json().encode()).hexdigest()[:10]


def make_provider(
    study: Study, setup: FinetuneSetup, method: str, budget: float, grace_path: str
) -> Any:
    from grace_lab.paper_methods import InfoBatchStyle
    from grace_lab.providers import (
        FullDataProvider,
        LengthWeightedRandomPerRound,
        RandomPerRoundProvider,
        RandomStaticProvider,
    )

    data, seed = setup.data, setup.seed
    n = len(data.train)
    size = budget_size(n, budget)  # the service's own rounding: every method's coreset alike
    if method == "full_data":
        return Legacy(method, FullDataProvider(n))
    if method == "random_per_round":
        return Legacy(method, RandomPerRoundProvider(n, size, seed))
    if method == "random_static":
        return Legacy(method, RandomStaticProvider(n, size, seed))
    if method == "random_by_length":
        lengths = np.minimum(np.asarray(data.train.lengths), study.schedule.block)
        return Legacy(method, LengthWeightedRandomPerRound(lengths, size, seed))
    if method == "infobatch":
        return Legacy(method, InfoBatchStyle(n, size, seed))
    if method == "rho_loss":
        return RhoLoss(data, size, setup.model_config, setup.base_state, seed, lr=study.schedule.lr)
    if method in ("facility_location_static", "message_passing_static"):
        selector = "facility_location" if method.startswith("facility") else "graph_message_passing"
        config = SelectionConfig(budget_fraction=budget, selector=selector)  # type: ignore[arg-type]
        return StaticSelection(method, data, config, seed)
    if method in ("grace", "grace_full_rescoring"):
        chosen = study.grace if method == "grace" else study.full_rescoring
        recipe = replace(chosen, config=replace(chosen.config, budget_fraction=budget))
        if grace_path == "inprocess":
            proxy = proxy_model(study, setup) if recipe.scorer == "proxy" else None
            return FinetuneGrace(method, data, recipe, seed, proxy)
        if recipe.scorer == "proxy":
            raise ValueError(f"{method}: a proxy scorer runs in-process only (the tuning study)")
        from grace_lab.finetune_service import ServiceGrace

        return ServiceGrace(
            method,
            data,
            recipe,
            study.service_url[0],
            study.work_dir,
            seed,
            workers=study.workers,
        )
    raise ValueError(f"unknown method {method!r}")


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
