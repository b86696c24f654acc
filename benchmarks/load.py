"""The selection service under sustained load, with rounds computing while it serves.

    python benchmarks/load.py --seconds 300 --json docs/results/load.json \
        --markdown docs/results/load.md

One `grace serve` on loopback (embedded store by default, `--store redis` starts a real
redis-server), one job of `--n` x `--dim` (200k x 32), embedded and scored once, round 0
published. Then for `--seconds`:

- `--readers` (16) sampler readers, ranks 0..15 of world 16, each on its own keep-alive
  connection asking `GET .../rounds/latest/indices` as fast as it is answered (a minimal
  asyncio HTTP/1.1 client in this process, so that the client's own CPU stays small);
- `--producers` (4) ingest producers, each its own process, posting binary batches of
  `--batch` trainer losses and, every `--embed-every`-th batch, re-embedded rows of those ids
  (drift, so that each round repairs or rebuilds the graph);
- a round triggered every `--round-every` (60) seconds.

The JSON holds `errors` (total; any non-2xx answer or broken connection), `indices` (p50, p99,
max over the whole run, and split into reads answered while a round was computing and reads
answered while none was), `ingest.samples_per_s`, the service's RSS (`rss_mb_start` when the
load starts; `rss_mb_end` once it stopped and the round it left computing was published, since
a round in flight holds its working set; `rss_mb_at_stop` and `rss_mb_max` too, psutil) and each
round's timings. Goals (issue 14): 0 errors, p99 <= 20 ms, RSS drift < 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from grace_proto.frames import MEDIA_TYPE, encode_frame
from grace_selection.local_redis import start_local_redis
from grace_selection.local_service import LocalService, start_local_service

FRAME = {"content-type": MEDIA_TYPE}
JOB = "load"


def log(message: str) -> None:
    print(f"[load-bench] {message}", file=sys.stderr, flush=True)


def make_centres(n: int, dim: int, seed: int) -> tuple[npt.NDArray[np.float32], Any]:
    """Cluster centres (one per 100 samples) and the cluster of each sample."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 100, 1), dim)).astype(np.float32)
    return centres, rng.integers(0, centres.shape[0], n)


def draw_vectors(
    centres: npt.NDArray[np.float32], cluster: Any, ids: Any, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    noise = rng.normal(scale=0.35, size=(len(ids), centres.shape[1])).astype(np.float32)
    out: npt.NDArray[np.float32] = centres[cluster[ids]] + noise
    return out


# -- set-up ---------------------------------------------------------------------------------


def prepare_job(client: httpx.Client, n: int, dim: int, batch: int) -> dict[str, Any]:
    """Create, embed and score the job, publish round 0; its manifest."""
    client.post("/v1/jobs", json={"job_id": JOB, "n_samples": n, "dim": dim}).raise_for_status()
    centres, cluster = make_centres(n, dim, seed=0)
    rng = np.random.default_rng(1)
    for first in range(0, n, batch):
        ids = np.arange(first, min(first + batch, n), dtype=np.int64)
        vectors = draw_vectors(centres, cluster, ids, rng)
        body = encode_frame(
            {"batch_id": f"e{first}", "round": 0}, {"ids": ids, "embeddings": vectors}
        )
        client.post(f"/v1/jobs/{JOB}/embeddings", content=body, headers=FRAME).raise_for_status()
        meta = {"batch_id": f"s{first}", "source": "worker", "round": 0}
        scores: dict[str, npt.NDArray[Any]] = {
            "ids": ids,
            "importance": rng.random(ids.size, dtype=np.float32),
        }
        body = encode_frame(meta, scores)
        client.post(f"/v1/jobs/{JOB}/scores", content=body, headers=FRAME).raise_for_status()
    client.post(f"/v1/jobs/{JOB}/rounds").raise_for_status()
    return wait_round(client, 0, timeout=3600)


def wait_round(client: httpx.Client, r: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        manifest: dict[str, Any] = client.get(f"/v1/jobs/{JOB}/rounds/{r}").json()
        if manifest.get("status") == "published":
            return manifest
        if manifest.get("status") == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"round {r} was not published: {manifest}")
        time.sleep(0.2)


# -- the readers (asyncio, this process) ----------------------------------------------------


async def read_slices(
    host: str, port: int, path: str, stop_at: float, samples: list[tuple[float, float]]
) -> int:
    """One keep-alive connection asking for `path` until `stop_at`; (end time, seconds) of each
    200 in `samples`; returns the number of errors (non-200 answers, broken connections)."""
    errors = 0
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.time() < stop_at:
            start = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                errors += 1
                writer.close()
                await asyncio.sleep(0.1)
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if status == 200:
                samples.append((time.time(), time.perf_counter() - start))
            else:
                errors += 1
    finally:
        writer.close()
    return errors


async def run_readers(
    url: str, readers: int, stop_at: float
) -> tuple[list[tuple[float, float]], int]:
    host, port = url.removeprefix("http://").split(":")
    samples: list[tuple[float, float]] = []
    paths = [
        f"/v1/jobs/{JOB}/rounds/latest/indices?rank={r}&world={readers}" for r in range(readers)
    ]
    errors = await asyncio.gather(
        *(read_slices(host, int(port), path, stop_at, samples) for path in paths)
    )
    return samples, sum(errors)


# -- the producers (one process each) -------------------------------------------------------


def produce(
    url: str, index: int, n: int, dim: int, batch: int, embed_every: int, stop_at: float, out: Any
) -> None:
    """Post loss batches (and every `embed_every`-th, re-embedded rows) until `stop_at`."""
    rng = np.random.default_rng(100 + index)
    centres, cluster = make_centres(n, dim, seed=0)
    sent = batches = errors = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.time() < stop_at:
            ids = np.sort(rng.choice(n, size=batch, replace=False)).astype(np.int64)
            batch_id = f"p{index}.b{batches}"
            if embed_every and batches % embed_every == embed_every - 1:
                path = f"/v1/jobs/{JOB}/embeddings"
                arrays: dict[str, npt.NDArray[Any]] = {
                    "ids": ids,
                    "embeddings": draw_vectors(centres, cluster, ids, rng),
                }
                body = encode_frame({"batch_id": batch_id, "round": 0}, arrays)
            else:
                path = f"/v1/jobs/{JOB}/scores"
                meta = {"batch_id": batch_id, "source": "trainer", "round": 0, "step": batches}
                body = encode_frame(meta, {"ids": ids, "loss": rng.random(batch, np.float32)})
            try:
                answer = client.post(path, content=body, headers=FRAME)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            batches += 1
            if ok:
                sent += batch
            else:
                errors += 1
    out.put({"samples": sent, "batches": batches, "errors": errors})


# -- rounds and memory (threads of this process) --------------------------------------------


def trigger_rounds(url: str, every: float, stop_at: float, errors: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while True:
            wait = min(every, stop_at - time.time())
            if wait <= 0:
                return
            time.sleep(wait)
            if time.time() >= stop_at:
                return
            try:
                if client.post(f"/v1/jobs/{JOB}/rounds").status_code != 202:
                    errors.append(1)
            except httpx.HTTPError:
                errors.append(1)


def sample_rss(pid: int, stop: threading.Event, series: list[tuple[float, float]]) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        series.append((time.time(), process.memory_info().rss / 2**20))
        stop.wait(1.0)


def wait_until_no_round_computes(client: httpx.Client, timeout: float) -> bool:
    """True once no round of the job is computing (False if `timeout` ran out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = client.get(f"/v1/jobs/{JOB}/rounds").json()
        if not any(m["status"] == "computing" for m in listing):
            return True
        time.sleep(1.0)
    return False


# -- the run --------------------------------------------------------------------------------


@contextmanager
def started_service(args: argparse.Namespace) -> Iterator[LocalService]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grace-load-")))
        store = ""
        if args.store == "redis":
            store = stack.enter_context(start_local_redis(tmp / "redis", append_only=True))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRACE_")}
        env["GRACE_LOG_LEVEL"] = "warning"
        if args.round_nice is not None:
            env["GRACE_ROUND_NICE"] = str(args.round_nice)
        service = start_local_service(
            tmp / "data", store=store, index=args.index, env=env, log_path=tmp / "service.log"
        )
        stack.callback(service.stop)
        yield service


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(1000 * np.percentile(np.asarray(values), q))


def summarise(latencies: list[float]) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": None if not latencies else 1000 * max(latencies),
    }


def computing_intervals(rounds: list[dict[str, Any]]) -> list[tuple[float, float]]:
    spans = []
    for manifest in rounds:
        start = datetime.fromisoformat(manifest["created_at"]).timestamp()
        end = manifest.get("published_at")
        spans.append((start, datetime.fromisoformat(end).timestamp() if end else float("inf")))
    return spans


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())
    with (
        started_service(args) as service,
        httpx.Client(base_url=service.url, timeout=600) as client,
    ):
        pid = service.proc.pid
        log(f"preparing a {args.n} x {args.dim} job and its round 0 ...")
        round0 = prepare_job(client, args.n, args.dim, batch=8192)
        log(f"round 0 took {round0['timings']['total_seconds']:.1f} s; settling ...")
        time.sleep(args.settle)
        import psutil

        rss_start = psutil.Process(pid).memory_info().rss / 2**20
        started = time.time()
        stop_at = started + args.seconds
        rss_series: list[tuple[float, float]] = []
        stop_rss = threading.Event()
        trigger_errors: list[int] = []
        threads = [
            threading.Thread(target=sample_rss, args=(pid, stop_rss, rss_series), daemon=True),
            threading.Thread(
                target=trigger_rounds,
                args=(service.url, args.round_every, stop_at, trigger_errors),
                daemon=True,
            ),
        ]
        for thread in threads:
            thread.start()
        context = mp.get_context("spawn")
        results: Any = context.Queue()
        producers = [
            context.Process(
                target=produce,
                args=(
                    service.url,
                    i,
                    args.n,
                    args.dim,
                    args.batch,
                    args.embed_every,
                    stop_at,
                    results,
                ),
            )
            for i in range(args.producers)
        ]
        for producer in producers:
            producer.start()
        log(f"load for {args.seconds:.0f} s: {args.readers} readers, {args.producers} producers")
        samples, read_errors = asyncio.run(run_readers(service.url, args.readers, stop_at))
        produced = [results.get(timeout=300) for _ in producers]
        for producer in producers:
            producer.join(timeout=60)
        elapsed = time.time() - started
        rss_at_stop = psutil.Process(pid).memory_info().rss / 2**20
        threads[1].join(timeout=60)
        # A round still computing holds its working set (a rebuild's second index and
        # copies): drift is what stays once it is published, so wait for it, as for round 0.
        settled = wait_until_no_round_computes(client, args.settle_timeout)
        time.sleep(args.settle)
        rss_end = psutil.Process(pid).memory_info().rss / 2**20
        stop_rss.set()
        rounds = [m for m in client.get(f"/v1/jobs/{JOB}/rounds").json() if m["round"] > 0]
        log_tail = service.log_tail(20)
    spans = computing_intervals(rounds)
    busy = [s for t, s in samples if any(a <= t <= b for a, b in spans)]
    idle = [s for t, s in samples if not any(a <= t <= b for a, b in spans)]
    ingest_samples = sum(p["samples"] for p in produced)
    errors = read_errors + sum(p["errors"] for p in produced) + len(trigger_errors)
    return {
        "errors": errors,
        "errors_by_part": {
            "indices": read_errors,
            "ingest": sum(p["errors"] for p in produced),
            "trigger": len(trigger_errors),
        },
        "indices": {
            **summarise([s for _, s in samples]),
            "while_computing": summarise(busy),
            "while_idle": summarise(idle),
        },
        "ingest": {
            "samples_per_s": ingest_samples / elapsed,
            "batches": sum(p["batches"] for p in produced),
            "samples": ingest_samples,
        },
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_drift": rss_end / rss_start - 1,
        "rss_mb_at_stop": rss_at_stop,
        "rss_end_settled": settled,
        "rss_mb_max": max((m for _, m in rss_series), default=rss_end),
        "rss_mb_series": [round(m, 1) for _, m in rss_series[:: max(1, len(rss_series) // 60)]],
        "rounds": [
            {
                "round": m["round"],
                "status": m["status"],
                "graph_seconds": m["timings"]["graph_seconds"],
                "select_seconds": m["timings"]["select_seconds"],
                "total_seconds": m["timings"]["total_seconds"],
            }
            for m in rounds
        ],
        "round0_seconds": round0["timings"]["total_seconds"],
        "seconds": elapsed,
        "config": {
            k: getattr(args, k)
            for k in ("n", "dim", "readers", "producers", "batch", "embed_every", "round_every")
        }
        | {"store": args.store or "local", "index": args.index, "round_nice": args.round_nice},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": "/".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        "service_log_tail": log_tail.splitlines(),
        "command": " ".join(["python", "benchmarks/load.py", *sys.argv[1:]]),
    }


def render_markdown(r: dict[str, Any]) -> str:
    i, c, m = r["indices"], r["config"], r["machine"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    rows = [
        ("errors (indices + ingest + round triggers)", f"{r['errors']}", "0"),
        ("`indices` reads", f"{i['requests']:,}", ""),
        (
            "`indices` p50 / p99, whole run",
            f"{ms(i['p50_ms'])} / {ms(i['p99_ms'])}",
            "p99 <= 20 ms",
        ),
        (
            "`indices` p50 / p99 while a round computes",
            f"{ms(i['while_computing']['p50_ms'])} / {ms(i['while_computing']['p99_ms'])} "
            f"({i['while_computing']['requests']:,} reads)",
            "",
        ),
        (
            "`indices` p50 / p99 while no round computes",
            f"{ms(i['while_idle']['p50_ms'])} / {ms(i['while_idle']['p99_ms'])} "
            f"({i['while_idle']['requests']:,} reads)",
            "",
        ),
        (
            "ingest",
            f"{r['ingest']['samples_per_s']:,.0f} samples/s ({r['ingest']['batches']:,} batches)",
            "",
        ),
        (
            "service RSS start -> end (at the stop, max)",
            f"{r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} MB ({r['rss_mb_at_stop']:.0f}, "
            f"{r['rss_mb_max']:.0f})",
            "drift < 5 %",
        ),
        ("RSS drift", f"{100 * r['rss_drift']:+.1f} %", ""),
        (
            "rounds during the run (total s each)",
            ", ".join(f"{x['round']}: {x['total_seconds']:.1f}" for x in r["rounds"]) or "-",
            "",
        ),
    ]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return (
        "# Load benchmark\n\n"
        f"Command: `{r['command']}`\n\n"
        f"{c['n']:,} x {c['dim']} job, {c['readers']} readers, {c['producers']} producers "
        f"(batches of {c['batch']:,}, every {c['embed_every']}th re-embeds), a round every "
        f"{c['round_every']} s, {r['seconds']:.0f} s, store {c['store']}, index {c['index']}. "
        f"Machine: {m['cpus']} CPUs, load average {m['load_before']} before / "
        f"{m['load_after']} after.\n\n"
        "| measurement | value | goal |\n|---|---|---|\n" + table + "\n" + _NOTES
    )


_NOTES = """
## How to read it

- **Readers** are 16 keep-alive connections, ranks 0..15 of world 16, each asking for
  `rounds/latest/indices` as soon as the previous answer arrived (a minimal asyncio client in
  the benchmark's process). "While a round computes" counts reads answered between a round's
  `created_at` and `published_at`.
- **Producers** are 4 processes posting batches of trainer losses; every 4th batch re-embeds
  its ids (drift), so that each round repairs or rebuilds the k-NN graph.
- **RSS** is the service process's resident memory (psutil): at the start of the load (round 0
  published), and at the end once the round the load left computing is published: a round in
  flight holds its working set (a rebuild's second index and copies), which is not drift.
  `rss_mb_at_stop` and the series in the JSON show it.
- The machine has 2 cores shared with other work (see the load averages): the latency tail
  stretches with that load, and rounds run at a lower CPU priority than serving
  (`GRACE_ROUND_NICE`), so under outside load they take longer.
- `docs/results/load_before.json` is this command on the code before issue 14's changes;
  docs/operations.md ("Reads while a round computes") sets the two side by side.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="also render a table here")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2048, help="samples per ingest batch")
    parser.add_argument("--embed-every", type=int, default=4, help="every k-th batch re-embeds")
    parser.add_argument("--round-every", type=float, default=60.0)
    parser.add_argument("--store", choices=["", "redis"], default="")
    parser.add_argument("--index", choices=["hnsw", "brute"], default="hnsw")
    parser.add_argument(
        "--round-nice", type=int, help="GRACE_ROUND_NICE for the service (default: its own)"
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="pause before measuring RSS, start and end"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=900.0,
        help="longest wait for a round still computing when the load stops, before rss_mb_end",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(render_markdown(results))
    shown = {k: results[k] for k in ("errors", "indices", "ingest", "rss_mb_start", "rss_mb_end")}
    log(json.dumps(shown, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
