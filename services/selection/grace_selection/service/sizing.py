"""How much memory a job will need, checked when it is created rather than discovered later.

A job's arrays are allocated lazily (the embeddings with the first embedding batch, the index
at the first round), so a job too large for the machine used to be accepted and then fail, or
take the process down, at its first batch. `estimate_job_bytes` is what the job will hold at
its peak, a graph rebuild; `check_job_size` refuses a job over the limit with the numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from grace_proto.models import CreateJobRequest
from grace_selection.service.errors import InvalidInputError

GIB = 1024**3
# Per sample, besides the embedding: loss, importance (f4), scored_round (i4), embedding_seq
# and the duplicate-check scratch (i8); and per round the copies of the first three.
_ARRAY_BYTES = 4 + 4 + 4 + 8 + 8 + 12
# The HNSW index per sample (hnswlib): level-0 links (2M + 1 ids of 4 B at M=16), a label,
# a lock and upper levels, measured near 200 B; its own float32 vector per dim (the adapter
# keeps no second copy).
_INDEX_BYTES = 200
_INDEX_BYTES_PER_DIM = 4
# Rows a graph build normalises and inserts at a time (service.graph_keeper).
_BUILD_BLOCK_ROWS = 65536


def estimate_job_bytes(n: int, dim: int, k: int, build_parts: int = 1) -> int:
    """Bytes a job of n samples of dim, with a k-NN graph of k, holds at its peak.

    The peak is a graph build: the embeddings (f4 by default; GRACE_GRAPH_VECTORS=float16
    halves them, the estimate stays at f4; once the graph holds them they are its unit
    vectors), the rows that wait for the next round (f4; bounded by every row re-embedded
    between two rounds, so counted as a second matrix: a trainer re-embedding all of them
    is allowed), the index
    (dropped once the graph is built, unless GRACE_GRAPH_KEEP_INDEX), the graph (i4 + f4 per
    edge: the keeper's 2k-wide lists, a refresh's copy of them and the published k), and the
    block of rows the build normalises at a time.
    """
    embeddings = n * dim * 4
    waiting = n * dim * 4
    # A build in parts (GRACE_GRAPH_BUILD_PARTS) holds one part's index at a time.
    index = -(-n // max(1, build_parts)) * (_INDEX_BYTES + _INDEX_BYTES_PER_DIM * dim)
    graph = 5 * n * k * 8
    rebuild = min(n, _BUILD_BLOCK_ROWS) * dim * 4
    return embeddings + waiting + index + graph + rebuild + n * _ARRAY_BYTES


def check_job_size(request: CreateJobRequest, limit_bytes: int, build_parts: int = 1) -> None:
    """Refuse a job whose estimate is over `limit_bytes`, naming the fields and the limit."""
    needed = estimate_job_bytes(request.n_samples, request.dim, request.config.k, build_parts)
    if needed <= limit_bytes:
        return
    raise InvalidInputError(
        f"n_samples={request.n_samples} x dim={request.dim} needs about "
        f"{needed / GIB:.1f} GiB of memory, over this service's limit of "
        f"{limit_bytes / GIB:.1f} GiB per job (GRACE_MAX_JOB_BYTES, by default half of the "
        "machine's memory): use a smaller dim or fewer samples per job, build the graph in "
        "parts (GRACE_GRAPH_BUILD_PARTS), or raise the limit",
        field="n_samples",
        code="job_too_large",
        extra={"fields": ["n_samples", "dim"], "needed_bytes": needed, "limit_bytes": limit_bytes},
    )


def read_memory_bytes() -> int:
    """This machine's memory, or the container's (cgroup) limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in (
        Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
    ):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


def default_job_limit() -> int:
    """Half of the memory this process may use."""
    return read_memory_bytes() // 2
