"""Scoring workers: what closed-form importance costs, and samples/s with 1 and 2 Ray actors.

    python benchmarks/scoring.py --json docs/results/scoring.json

Side by side in one run (issue 4), on real text (fortune cookies, Debian package `fortunes`)
tokenized with a BPE trained here, and a TinyGPT of the demo's shape (random weights: the
cost does not depend on them):

1. cost, in this process: the same length-sorted padded batches through
   (a) a plain forward pass, `model(ids, mask)` -> hidden states and (B, T, V) logits,
   (b) the forward plus the mean token loss (what a trainer computes anyway),
   (c) scoring: loss + closed-form gradient importance + projected embedding, as a worker does,
   interleaved batch by batch, medians over repetitions; goal (c) / (a) <= 1.2. With 1 thread
   (what a Ray actor with num_cpus=1 gets) and with every core. For scale, the exact
   per-sample gradient norm of the output layer (torch.func) on a few batches.
2. throughput, end to end: `grace serve` with a Redis store on loopback, a ScoringPool of 1
   and then 2 actors scoring a job's warm-up round (every sample: embeddings and scores posted
   with idempotency keys). Each repetition scores a fresh job; actor start-up is not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from grace_lab.debian_corpus import read_fortunes
from grace_selection.local_service import free_loopback_port, stop_child
from grace_workers.batching import collate, plan_batches
from grace_workers.dataset import TokenDataset
from grace_workers.dataset_builder import build_dataset, train_bpe_tokenizer
from grace_workers.projection import make_projection, project_embeddings
from grace_workers.scoring import exact_grad_norms, mean_token_loss, score_batch
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig, save_tiny_gpt

Batch = tuple[Tensor, Tensor]
# The demo's model shape (grace_lab.demo): the output layer is about half of its FLOPs,
# the hardest case for the closed form's overhead. The wider one is for contrast.
MODELS = {
    "demo": TinyGPTConfig(vocab_size=4096, block_size=128, n_layer=2, n_head=4, n_embd=128),
    "wider": TinyGPTConfig(vocab_size=8192, block_size=128, n_layer=4, n_head=4, n_embd=256),
}


def log(message: str) -> None:
    print(f"[scoring-bench] {message}", file=sys.stderr, flush=True)


def build_corpus(root: Path, samples: int, vocab: int) -> TokenDataset:
    texts = [t for t in read_fortunes() if 40 <= len(t) <= 600][:samples]
    if len(texts) < samples:
        raise SystemExit(f"only {len(texts)} fortunes of 40-600 characters; lower --samples")
    jsonl = root / "fortunes.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab)
    return build_dataset(jsonl, root / "tokens", tokenizer)


def make_batches(ds: TokenDataset, batch_size: int, max_tokens: int, count: int) -> list[Batch]:
    """`count` of the batches a worker makes of the whole dataset (longest first,
    right-padded), evenly spaced so that short and long batches are both represented."""
    ids = np.arange(len(ds), dtype=np.int64)
    planned = plan_batches(ids, ds.lengths, batch_size)
    picks = np.unique(np.linspace(0, len(planned) - 1, min(count, len(planned))).round())
    return [collate(ds, planned[int(i)], max_tokens) for i in picks]


def time_interleaved(
    passes: dict[str, Callable[[Batch], object]], batches: list[Batch], reps: int
) -> dict[str, list[float]]:
    """Seconds per pass over all batches, per repetition; passes alternate batch by batch
    (in a rotating order) so that load from other processes hits them alike."""
    totals = {name: [0.0] * reps for name in passes}
    names = list(passes)
    for rep in range(reps):
        for i, batch in enumerate(batches):
            shift = (rep + i) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                passes[name](batch)
                totals[name][rep] += time.perf_counter() - started
    return totals


def measure_cost(model: TinyGPT, batches: list[Batch], reps: int, dim: int) -> dict[str, Any]:
    projection = torch.from_numpy(make_projection(model.config.n_embd, dim, 0))

    def forward(batch: Batch) -> object:
        with torch.inference_mode():
            return model(*batch)

    def forward_loss(batch: Batch) -> object:
        with torch.inference_mode():
            _, logits = model(*batch)
            return mean_token_loss(logits, *batch)

    def scoring(batch: Batch) -> object:
        scores = score_batch(model, *batch)
        emb = project_embeddings(scores.pooled, projection)
        return emb.numpy(), scores.loss.numpy(), scores.importance.numpy()

    passes: dict[str, Callable[[Batch], object]] = {
        "forward": forward,
        "forward_loss": forward_loss,
        "scoring": scoring,
    }
    time_interleaved(passes, batches[:2], 1)  # warm-up: allocator, kernels
    totals = time_interleaved(passes, batches, reps)
    median = {name: statistics.median(values) for name, values in totals.items()}
    ratios = [s / f for s, f in zip(totals["scoring"], totals["forward"], strict=True)]
    return {
        "threads": torch.get_num_threads(),
        "seconds_median": median,
        "seconds_all": totals,
        "scoring_over_forward": median["scoring"] / median["forward"],
        "scoring_over_forward_per_rep": ratios,
        "scoring_over_forward_loss": median["scoring"] / median["forward_loss"],
        "samples_per_second_scoring": sum(b[0].shape[0] for b in batches) / median["scoring"],
    }


def measure_exact(model: TinyGPT, batches: list[Batch], rows: int) -> dict[str, Any]:
    """Exact per-sample gradient norms of the output layer (torch.func) vs closed form."""
    picked = [(ids[:rows], mask[:rows]) for ids, mask in batches[:: max(1, len(batches) // 3)][:3]]
    forward = exact = closed = 0.0
    for ids, mask in picked:
        started = time.perf_counter()
        with torch.inference_mode():
            model(ids, mask)
        forward += time.perf_counter() - started
        started = time.perf_counter()
        score_batch(model, ids, mask)
        closed += time.perf_counter() - started
        started = time.perf_counter()
        exact_grad_norms(model, ids, mask, ["head.weight"])
        exact += time.perf_counter() - started
    return {
        "batches": len(picked),
        "rows": rows,
        "exact_over_forward": exact / forward,
        "closed_form_over_forward": closed / forward,
    }


def free_port() -> int:
    return free_loopback_port()


def wait_for(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {seconds:g} s")
        time.sleep(0.1)


@contextmanager
def running(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """A subprocess for the duration of the block, stopped by its pid."""
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield
    finally:
        stop_child(proc, timeout=20)


@contextmanager
def redis_and_service(workdir: Path) -> Iterator[str]:
    import httpx

    from grace_selection.local_redis import start_local_redis

    port = free_port()
    with start_local_redis(workdir) as store:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRACE_")}
        serve = [sys.executable, "-m", "grace_selection.cli", "serve", "--port", str(port)]
        serve += ["--store", store, "--data-dir", str(workdir / "data"), "--index", "brute"]
        serve += ["--log-level", "warning"]
        with running(serve, workdir / "service.log", env):
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, "grace serve")
            yield url


def measure_throughput(
    ds: TokenDataset, model_path: Path, workdir: Path, reps: int, dim: int, batch_size: int
) -> dict[str, Any]:
    import ray

    from grace_client import CoresetClient
    from grace_proto.models import CreateJobRequest
    from grace_workers.pool import PoolSettings, ScoringPool
    from grace_workers.worker import WorkerSettings

    results: dict[str, Any] = {}
    ray.init(
        address="local", num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False
    )
    try:
        with redis_and_service(workdir) as url, CoresetClient(url) as client:
            for workers in (1, 2):
                runs: list[dict[str, float]] = []
                for rep in range(reps):
                    job = f"bench-w{workers}-r{rep}"
                    client.create_job(CreateJobRequest(job_id=job, n_samples=len(ds), dim=dim))
                    settings = WorkerSettings(
                        service_url=url,
                        job=job,
                        data_path=str(ds.path),
                        model_path=str(model_path),
                        batch_size=batch_size,
                    )
                    started = time.perf_counter()
                    with ScoringPool(settings, PoolSettings(workers=workers, progress=False)) as p:
                        start_seconds = time.perf_counter() - started
                        report = p.score_round(0)
                    counts = client.get_job(job)
                    if counts.scored_count != len(ds) or counts.embedded_count != len(ds):
                        raise SystemExit(f"{job}: the service did not get every sample once")
                    runs.append(
                        {
                            "samples_per_second": report.samples_per_second,
                            "seconds": report.seconds,
                            "actor_start_seconds": start_seconds,
                            "score_seconds": sum(s.seconds_score for s in report.shards),
                            "post_seconds": sum(s.seconds_post for s in report.shards),
                            "model_load_seconds": sum(s.seconds_model for s in report.shards),
                        }
                    )
                    log(f"{workers} actor(s), rep {rep}: {report.samples_per_second:.1f} samples/s")
                results[str(workers)] = {
                    "runs": runs,
                    "samples_per_second_median": statistics.median(
                        r["samples_per_second"] for r in runs
                    ),
                }
    finally:
        ray.shutdown()
    one, two = (results[k]["samples_per_second_median"] for k in ("1", "2"))
    return {"by_workers": results, "two_over_one": two / one}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--samples", type=int, default=1024, help="fortunes in the dataset")
    parser.add_argument("--reps", type=int, default=5, help="cost repetitions")
    parser.add_argument("--cost-batches", type=int, default=12, help="batches in the cost runs")
    parser.add_argument("--throughput-reps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=64, help="job embedding dimension")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="grace-scoring-bench-") as tmp:
        root = Path(tmp)
        ds = build_corpus(root, args.samples, MODELS["demo"].vocab_size)
        log(f"dataset: {len(ds)} samples, {int(ds.lengths.sum())} tokens")
        cost: dict[str, Any] = {}
        default_threads = torch.get_num_threads()
        for name, config in MODELS.items():
            torch.manual_seed(0)
            model = TinyGPT(config).eval()
            batches = make_batches(ds, args.batch_size, config.block_size, args.cost_batches)
            cost[name] = {"parameters": sum(p.numel() for p in model.parameters())}
            for threads in sorted({1, default_threads}):
                torch.set_num_threads(threads)
                cost[name][f"threads_{threads}"] = measure_cost(model, batches, args.reps, args.dim)
                log(f"{name}, {threads} thread(s): scoring / forward = "
                    f"{cost[name][f'threads_{threads}']['scoring_over_forward']:.3f}")  # fmt: skip
            torch.set_num_threads(1)
            cost[name]["exact"] = measure_exact(model, batches, rows=8)
            torch.set_num_threads(default_threads)
        torch.manual_seed(0)
        model_path = save_tiny_gpt(TinyGPT(MODELS["demo"]), root / "demo.pt")
        throughput = measure_throughput(
            ds, model_path, root, args.throughput_reps, args.dim, args.batch_size
        )
        lengths = ds.lengths
        result = {
            "command": "python benchmarks/scoring.py " + " ".join(argv or sys.argv[1:]),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "dataset": {
                "samples": len(ds),
                "tokens": int(lengths.sum()),
                "mean_tokens": float(lengths.mean()),
                "max_tokens": int(lengths.max()),
                "vocab_size": ds.vocab_size,
            },
            "models": {name: dataclasses.asdict(config) for name, config in MODELS.items()},
            "batch_size": args.batch_size,
            "cost": cost,
            "throughput": throughput,
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
