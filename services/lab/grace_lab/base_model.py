"""The pretrained base model every fine-tuning run starts from, trained once per seed, cached.

The general corpus (KJV verses and fortunes) is next-token text with every token a target; the
base model learns English there and never sees a definition. Its pretraining is the same for
every method of a seed and is not charged to any of them: it stands for the public checkpoint a
user would download. A proxy model (a smaller one, for cheap scoring) is pretrained the same
way; what a method spends fine-tuning one is charged to it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grace_lab.lm_training import collate, make_optimizer, train_step
from grace_workers.dataset import TokenDataset
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

log = logging.getLogger(__name__)


def pretrain_base(
    corpus: TokenDataset,
    config: TinyGPTConfig,
    seed: int,
    cache: Path,
    *,
    epochs: float = 1.0,
    tokens_per_step: int = 2048,
    lr: float = 3e-3,
) -> dict[str, Any]:
    """The base model's state after `epochs` passes over `corpus`; computed once per key."""
    # Keyed by the corpus' content, not its folder: task recipes that share a general corpus
    # (another train size, noise rate or stratum mix of the same seed) share one base model.
    content = hashlib.sha256()
    for name in ("tokens.npy", "offsets.npy"):
        content.update((corpus.path / name).read_bytes())
    key = hashlib.sha256(
        f"{config}|{seed}|{epochs}|{tokens_per_step}|{lr}|{content.hexdigest()}".encode()
    ).hexdigest()[:12]
    path = cache / f"base-{key}.pt"
    if path.exists():
        state: dict[str, Any] = torch.load(path, weights_only=True)
        return state
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = TinyGPT(config)
    optimizer = make_optimizer(model, lr)
    lengths = np.minimum(np.asarray(corpus.lengths), config.block_size)
    per_step = max(1, round(tokens_per_step / max(float(lengths.mean()), 1.0)))
    rng = np.random.default_rng([seed, 0xBA5E])
    order = np.concatenate([rng.permutation(len(corpus)) for _ in range(math.ceil(epochs))])
    order = order[: int(epochs * len(corpus))]
    steps = max(1, order.size // per_step)
    for step in range(steps):
        progress = step / steps
        warm = min(1.0, (step + 1) / max(1, steps // 20))
        for group in optimizer.param_groups:
            group["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        ids = order[step * per_step : (step + 1) * per_step]
        input_ids, mask = collate(corpus, ids, config.block_size)
        train_step(model, optimizer, input_ids, mask, token_mean=True)
        if step % 200 == 0:
            log.info("pretraining %s: step %d of %d", path.name, step, steps)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # whole, then renamed: a reader never sees half
    log.info("pretrained %s in %.0f s (%d steps)", path.name, time.perf_counter() - started, steps)
    return model.state_dict()
