"""A Hugging Face dataset end to end, as docs/client.md shows it, with the real processes.

Real text (KJV verses and fortune cookies from the Debian packages) in a `datasets` folder
with string ids and string stratum names, a tokenizer saved with `save_pretrained`, the real
`grace build-dataset`, `grace serve` and `grace score` (on the session's Ray cluster): the
round's stratum table carries the names, and the sample drill-down shows each id's own text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerFast

from grace_client import CoresetClient, DatasetInfo
from grace_lab.debian_corpus import read_fortunes, read_kjv_verses
from grace_proto.models import SelectionConfigModel
from grace_workers.dataset_builder import train_bpe_tokenizer
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig, save_tiny_gpt
from tests.integration.service_process import start_service

PER_SOURCE = 40


def grace(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "grace_selection.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def make_rows() -> list[dict[str, Any]]:
    kjv = [t for t in itertools.islice(read_kjv_verses(), 2000) if 40 <= len(t) <= 160]
    fortunes = [t for t in read_fortunes() if 40 <= len(t) <= 160]
    rows = [{"text": t, "source": "kjv"} for t in kjv[:PER_SOURCE]]
    rows += [{"text": t, "source": "fortunes"} for t in fortunes[:PER_SOURCE]]
    rows.append({"text": "", "source": "kjv"})  # too short: skipped and counted
    for row in rows:
        row["uid"] = hashlib.sha1(row["text"].encode()).hexdigest()[:12]
    random.Random(0).shuffle(rows)
    return rows


def test_a_hugging_face_dataset_reaches_the_service_with_its_names(
    ray_cluster: Any, tmp_path: Path
) -> None:
    rows = make_rows()
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    bpe = train_bpe_tokenizer([r["text"] for r in rows], vocab_size=400)
    as_fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    as_fast.save_pretrained(str(tmp_path / "tokenizer"))
    built = grace(
        "build-dataset", "--input", str(tmp_path / "hf"), "--id-column", "uid",
        "--stratum-field", "source", "--tokenizer", str(tmp_path / "tokenizer"),
        "--skip-short", "--out", str(tmp_path / "tokens"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "skipped 1 of 81 rows" in built.stderr
    assert "80 samples" in built.stdout
    assert "strata 0=fortunes, 1=kjv" in built.stdout

    info = DatasetInfo.open(tmp_path / "tokens")
    hf = datasets.load_from_disk(str(tmp_path / "hf")).select(info.source_rows)
    assert hf["uid"] == sorted(r["uid"] for r in rows if r["text"])  # row i is sample i
    model = tmp_path / "model.pt"
    torch.manual_seed(0)
    config = TinyGPTConfig(
        vocab_size=int(info.meta["vocab_size"]), block_size=64, n_layer=1, n_head=2, n_embd=32
    )
    save_tiny_gpt(TinyGPT(config), model, step=0)

    service = start_service(tmp_path / "service" / "data", "")
    try:
        client = CoresetClient(service.url, retries=2, cache_dir=tmp_path / "cache")
        config_model = SelectionConfigModel(budget_fraction=0.25, k=5)
        client.create_job(info.job_request("hf-job", dim=16, config=config_model))
        scored = grace(
            "score", "--job", "hf-job", "--round", "0", "--data", str(tmp_path / "tokens"),
            "--model", str(model), "--address", ray_cluster.get_runtime_context().gcs_address,
            "--url", service.url, "--batch-size", "16", "--no-progress", "--json",
        )  # fmt: skip
        assert scored.returncode == 0, scored.stderr[-3000:]
        assert json.loads(scored.stdout[scored.stdout.index("{") :])["samples"] == 80
        client.trigger_round("hf-job")
        client.wait_for_round("hf-job", 0, timeout=120)
        stats = client.get_round_stats("hf-job", 0)
        shares = {s.name: s.data_share for s in stats.strata.values()}
        assert shares == {"fortunes": 0.5, "kjv": 0.5}  # what the dashboard's strata table shows
        assert client.get_job("hf-job").stratum_names == {0: "fortunes", 1: "kjv"}
        for sample_id in (0, 41, 79):
            sample = client.get_sample("hf-job", sample_id)
            assert sample.text == hf[sample_id]["text"]
            assert info.stratum_names is not None
            assert sample.stratum is not None
            assert info.stratum_names[sample.stratum] == hf[sample_id]["source"]
        client.close()
    finally:
        service.stop()
