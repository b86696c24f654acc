"""Train a tiny GPT on real text with the GRACE coreset service, in a plain PyTorch loop.

    grace serve &                                            # the service (another terminal)
    python examples/train_tiny_lm.py --service http://127.0.0.1:8765 --steps 300

About two minutes on a laptop CPU. The text is Debian's (WordNet glosses, the King James
Bible, fortunes: `apt-get install wordnet-base bible-kjv fortunes`). What the trainer adds to
an ordinary loop is four lines: a CoresetSampler in the DataLoader, the round's weights in
the loss, `reporter.report(...)` after each step, and the sampler's state in the checkpoint.

Scoring is normally done by the Ray workers (`grace score`); so that this file runs alone,
it also plays the worker: it scores the warm-up (every sample) once, and then every
`--rescore-every` steps the service's rescore plan with the current model, and asks for the
next round. The sampler takes each new round at its next epoch, without waiting for it.
Run it again with `--resume` to continue exactly where the last run's checkpoint stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from grace_client import CoresetClient, NotFoundError
from grace_client.sampler import CoresetSampler
from grace_lab.debian_corpus import SOURCES, build_corpus
from grace_lab.lm_training import collate, evaluate_perplexity, make_optimizer, train_step
from grace_proto.models import CreateJobRequest, JobStatus, SelectionConfigModel
from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import build_dataset, train_bpe_tokenizer
from grace_workers.projection import make_projection, project_embeddings
from grace_workers.scoring import score_batch
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

log = logging.getLogger("train_tiny_lm")
BLOCK = 64  # tokens per sample the model sees
DIM = 32  # the job's embedding dimension (hidden states are projected to it)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", default="http://127.0.0.1:8765", help="GRACE service URL")
    parser.add_argument("--token", default=None, help="the service's bearer token, if any")
    parser.add_argument("--job", default="tiny-lm", help="job id on the service")
    parser.add_argument("--work-dir", type=Path, default=Path("var/train_tiny_lm"))
    parser.add_argument("--per-source", type=int, default=2000, help="training texts per source")
    parser.add_argument("--eval-per-source", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of this run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--budget", type=float, default=0.2, help="coreset share of the data")
    parser.add_argument("--rescore-every", type=int, default=60, help="steps; 0 = never")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wait-for-rounds",
        action="store_true",
        help="after requesting a round, wait until it is published (reproducible round switches; "
        "by default training never waits and picks the round up when it is ready)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    return parser.parse_args(argv)


def prepare_data(args: argparse.Namespace) -> tuple[TokenDataset, TokenDataset]:
    """Train/held-out token datasets built once from Debian's texts (cached in work_dir)."""
    train_dir, eval_dir = args.work_dir / "train", args.work_dir / "eval"
    if not (train_dir.exists() and eval_dir.exists()):
        split = build_corpus(
            args.work_dir / "corpus",
            dict.fromkeys(SOURCES, args.per_source),
            args.eval_per_source,
            seed=args.seed,
        )
        lines = split.train_path.read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines]
        tokenizer = train_bpe_tokenizer(texts, vocab_size=2048)
        build_dataset(split.train_path, train_dir, tokenizer, max_tokens=BLOCK, overwrite=True)
        build_dataset(split.eval_path, eval_dir, tokenizer, max_tokens=BLOCK, overwrite=True)
    return TokenDataset.open(train_dir), TokenDataset.open(eval_dir)


def ensure_job(client: CoresetClient, args: argparse.Namespace, data: TokenDataset) -> None:
    """Create the job (creating the same job again is a no-op) with a stratum per source."""
    request = CreateJobRequest(
        job_id=args.job,
        n_samples=len(data),
        dim=DIM,
        seed=args.seed,
        config=SelectionConfigModel(budget_fraction=args.budget, k=10, rescore_fraction=0.3),
        strata=None if data.strata is None else [int(s) for s in data.strata],
        stratum_names=dict(enumerate(SOURCES)),
    )
    client.create_job(request)


class Scorer:
    """The worker's part, in-process: losses, gradient importance and embeddings of samples."""

    def __init__(self, model: TinyGPT, data: TokenDataset, seed: int) -> None:
        self.model, self.data = model, data
        self.projection = torch.from_numpy(make_projection(model.config.n_embd, DIM, seed))

    def post(
        self, client: CoresetClient, job: str, ids: npt.NDArray[np.int64], round_: int
    ) -> None:
        self.model.eval()
        for start in range(0, ids.shape[0], 256):
            chunk = ids[start : start + 256]
            input_ids, mask = collate(self.data, chunk, BLOCK)
            scores = score_batch(self.model, input_ids, mask)
            vectors = project_embeddings(scores.pooled, self.projection)  # (B, DIM) unit rows
            tag = f"example-r{round_}-{start}"
            client.post_embeddings(job, chunk, vectors.numpy(), batch_id=f"{tag}-e", round=round_)
            client.post_scores(
                job,
                chunk,
                importance=scores.importance.numpy(),
                loss=scores.loss.numpy(),
                round=round_,
                batch_id=f"{tag}-s",
            )


def warm_up(client: CoresetClient, job: str, scorer: Scorer) -> None:
    """Round 0: every sample scored with the initial model, then the first coreset."""
    try:
        client.get_round(job, "latest")
        return  # a round exists already: nothing to warm up
    except NotFoundError:
        pass
    started = time.perf_counter()
    plan = client.get_rescore_plan(job, 0)
    scorer.post(client, job, plan.ids, 0)
    client.trigger_round(job)
    manifest = client.wait_for_round(job, 0, timeout=600)
    log.info(
        "warm-up: %d samples scored, round 0 has %d samples (%.1fs)",
        plan.ids.shape[0],
        manifest.count,
        time.perf_counter() - started,
    )


def rescore_next_round(
    client: CoresetClient, job: str, scorer: Scorer, *, wait: bool = False
) -> None:
    """Score the plan for the next round with the current model and ask for that round."""
    status = client.get_job(job)
    if status.status == JobStatus.SELECTING or status.current_round is None:
        return  # a round is still being computed; try again later
    next_round = status.current_round + 1
    plan = client.get_rescore_plan(job, next_round)
    scorer.post(client, job, plan.ids, next_round)
    client.trigger_round(job)
    log.info("rescored %d samples; round %d requested", plan.ids.shape[0], next_round)
    if wait:
        client.wait_for_round(job, next_round, timeout=600)


class SampleIds(Dataset[int]):
    """Item i is i: the loop turns ids into token batches itself (see `collate`)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def to_weights(sampler: CoresetSampler, ids: list[int]) -> torch.Tensor | None:
    """The round's weights of a batch (rounds are weighted by default): train_step trains on
    sum(w * loss) / sum(w), the loss `sampler.weighted_mean(ids, losses)` gives a loop that
    runs its own backward."""
    weights = sampler.weights_for(ids)
    return None if weights is None else torch.from_numpy(weights)


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    train_data, eval_data = prepare_data(args)
    config = TinyGPTConfig(vocab_size=2048, block_size=BLOCK, n_layer=2, n_head=4, n_embd=64)
    model = TinyGPT(config)
    optimizer = make_optimizer(model, lr=3e-3)
    checkpoint_path = args.work_dir / "checkpoint.pt"
    with CoresetClient(args.service, token=args.token, cache_dir=args.work_dir / "cache") as client:
        ensure_job(client, args, train_data)
        scorer = Scorer(model, train_data, args.seed)
        warm_up(client, args.job, scorer)

        sampler = CoresetSampler(client, args.job, seed=args.seed)
        step = 0
        if args.resume and checkpoint_path.exists():
            saved = torch.load(checkpoint_path, weights_only=True)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            sampler.load_state_dict(saved["sampler"])
            step = int(saved["step"])
            log.info("resumed at step %d, round %d, offset %d", step, sampler.round, sampler.offset)
        reporter = client.reporter(args.job, run=f"seed{args.seed}", round=lambda: sampler.round)
        # The sampler yields sample ids; the collate function turns ids into token batches.
        loader: DataLoader[int] = DataLoader(
            SampleIds(len(train_data)),
            batch_size=args.batch_size,
            sampler=sampler,
            collate_fn=list,
        )
        first_step, last_step, started = step, step + args.steps, time.perf_counter()
        trained = 0
        while step < last_step:
            for ids in loader:
                input_ids, mask = collate(train_data, ids, BLOCK)
                losses = train_step(model, optimizer, input_ids, mask, to_weights(sampler, ids))
                reporter.report(ids, losses, step=step)  # free: computed by the step anyway
                step += 1
                trained += len(ids)
                if step % 25 == 0:
                    log.info(
                        "step %d  round %d  loss %.3f  (%.2fs/step)",
                        step,
                        sampler.round,
                        float(losses.mean()),
                        (time.perf_counter() - started) / (step - first_step),
                    )
                if args.rescore_every and step % args.rescore_every == 0:
                    rescore_next_round(client, args.job, scorer, wait=args.wait_for_rounds)
                    if args.wait_for_rounds:
                        sampler.poll()  # take the published round at the next epoch
                if step >= last_step:
                    break
        stats = reporter.close()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(),
                "step": step,
            },
            checkpoint_path,
        )
        sampler.close()
        strata = np.asarray(eval_data.strata) if eval_data.strata is not None else None
        if strata is None:
            strata = np.zeros(len(eval_data), dtype=np.int32)
        ppl = evaluate_perplexity(model, eval_data, strata, SOURCES, BLOCK)
    summary = {
        "steps": step,
        "round": sampler.round,
        "perplexity": round(ppl.overall, 2),
        "perplexity_by_source": {k: round(v, 2) for k, v in ppl.by_stratum.items()},
        "trained_samples": trained,
        "reported_samples": stats.sent_samples,
        "dropped_samples": stats.dropped_samples,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("done: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is too many
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    summary = train(args)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
