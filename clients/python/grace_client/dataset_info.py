"""What a trainer needs from a dataset built by `grace build-dataset`, without the workers.

    info = DatasetInfo.open("data/tokens")
    client.create_job(info.job_request("my-job", dim=64))  # N, strata, their names, text
    train = hf_dataset.select(info.source_rows)            # row i is sample i

It reads the directory's meta.json, strata.npy and source_lines.npy (docs/dataset-format.md)
with numpy only, so a trainer needs neither torch nor the worker extra for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_proto.models import CreateJobRequest

FORMAT = "grace-tokens/1"


@dataclass(frozen=True, slots=True, eq=False)
class DatasetInfo:
    """A built dataset, as a job sees it.

    n_samples: the job's N (sample ids 0..N-1). strata: (N,) int32 stratum id per sample, or
    None. stratum_names: the name of each stratum id when the input held names (or Hugging
    Face ClassLabel names), else None. source_rows: (N,) int64, the input row sample i came
    from: index the input with it to train on it in sample-id order. text_source: text.jsonl,
    line i holding sample i's text, or None if the dataset was built with --no-text.
    """

    path: Path
    meta: dict[str, Any]
    n_samples: int
    strata: npt.NDArray[np.int32] | None
    stratum_names: dict[int, str] | None
    source_rows: npt.NDArray[np.int64]
    text_source: Path | None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DatasetInfo:
        root = Path(path)
        meta_path = root / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{meta_path}: cannot read it ({exc}); build the dataset with `grace build-dataset`"
            ) from exc
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
        n = int(meta["n_samples"])
        strata = np.load(root / "strata.npy").astype(np.int32) if meta.get("has_strata") else None
        rows = np.load(root / "source_lines.npy").astype(np.int64)
        names = meta.get("stratum_names")
        text = meta.get("text")
        return cls(
            path=root,
            meta=meta,
            n_samples=n,
            strata=strata,
            stratum_names=None if not names else {int(k): str(v) for k, v in names.items()},
            source_rows=rows,
            text_source=None if not text else (root / str(text)).resolve(),
        )

    def job_request(self, job_id: str, dim: int, **fields: Any) -> CreateJobRequest:
        """A CreateJobRequest for this dataset: n_samples, strata and their names, and the
        text source, plus any other field of CreateJobRequest (config, seed, ...).

        The strata travel inline in the JSON body (about 2-7 bytes a sample); for tens of
        millions of samples pass strata=None here and send them with client.put_strata.
        """
        defaults: dict[str, Any] = {
            "n_samples": self.n_samples,
            "strata": None if self.strata is None else self.strata.tolist(),
            "stratum_names": self.stratum_names,
            "text_source": None if self.text_source is None else str(self.text_source),
        }
        return CreateJobRequest(job_id=job_id, dim=dim, **{**defaults, **fields})
