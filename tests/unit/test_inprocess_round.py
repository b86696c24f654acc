"""The lab's in-process GRACE and the service publish the same coreset for the same inputs.

Both run the service's `step_round` over the service's `JobArrays`; this checks it end to end:
the service gets the scores through its HTTP API (frames, the log, the round thread, the
store), the in-process provider gets the same scores directly, and every round's indices agree
byte for byte (sha256), as do the rescore plans that decide what the next round scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from grace_lab.inprocess import InProcessGrace, ScoredSamples, score_samples
from grace_proto.frames import decode_frame
from grace_selection.core.config import SelectionConfig
from grace_selection.core.coreset import sha256_of_indices
from grace_workers.dataset import TokenDataset, write_dataset
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig
from tests.unit.api_support import (
    api_client,
    embeddings_frame,
    post_frame,
    scores_frame,
    wait_published,
)

N, DIM, SEED, VOCAB = 240, 16, 7, 64


def _dataset(folder: Path) -> TokenDataset:
    rng = np.random.default_rng(0)
    # Four "sources" of different token ranges, so that the embeddings form clusters.
    samples = [
        rng.integers(16 * (i % 4), 16 * (i % 4) + 16, size=int(rng.integers(4, 20)))
        for i in range(N)
    ]
    strata = np.arange(N) % 3
    return write_dataset(folder, samples, vocab_size=VOCAB, strata=strata)


def _post(client: TestClient, scored: ScoredSamples, round_: int) -> None:
    job = "/v1/jobs/same"
    body = embeddings_frame(scored.ids, scored.embeddings, f"e{round_}", round_)
    assert post_frame(client, f"{job}/embeddings", body).status_code == 200
    body = scores_frame(
        scored.ids, f"s{round_}", round_=round_, importance=scored.importance, loss=scored.loss
    )
    assert post_frame(client, f"{job}/scores", body).status_code == 200


def _service_plan(client: TestClient, round_: int) -> np.ndarray:
    answer = client.get(f"/v1/jobs/same/rounds/{round_}/rescore", params={"format": "bin"})
    assert answer.status_code == 200, answer.text
    return np.asarray(decode_frame(answer.content).arrays["ids"], dtype=np.int64)


@pytest.mark.parametrize("selector", ["graph_message_passing", "facility_location"])
def test_in_process_grace_and_the_service_publish_identical_coresets(
    tmp_path: Path, selector: str
) -> None:
    dataset = _dataset(tmp_path / "data")
    strata = np.asarray(dataset.strata, dtype=np.int32)
    config = SelectionConfig(budget_fraction=0.2, selector=selector)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=VOCAB, block_size=32, n_layer=1, n_embd=32))
    initial = score_samples(model, dataset, np.arange(N, dtype=np.int64), DIM, SEED)
    provider = InProcessGrace(
        "in-process", dataset, strata, config, seed=SEED, dim=DIM, initial=initial,
        report_losses=False,
    )  # fmt: skip
    with api_client(tmp_path / "service") as client:
        created = client.post(
            "/v1/jobs",
            json={
                "job_id": "same",
                "n_samples": N,
                "dim": DIM,
                "seed": SEED,
                "config": config.to_dict(),
                "strata": strata.tolist(),
            },
        )
        assert created.status_code == 201, created.text
        for round_ in range(3):
            if round_ == 0:
                scored = initial
            else:
                plan = _service_plan(client, round_)
                assert plan.tolist() == provider.plan.tolist()  # the same samples re-scored
                with torch.no_grad():  # the model moves between rounds, as in training
                    for p in model.parameters():
                        p.add_(0.05 * torch.randn_like(p))
                scored = score_samples(model, dataset, plan, DIM, SEED)
            _post(client, scored, round_)
            assert client.post("/v1/jobs/same/rounds").status_code == 202
            manifest = wait_published(client, "same", round_)
            assert manifest["status"] == "published", manifest

            ours = provider.next_round(round_, model, step=0)
            assert sha256_of_indices(ours.ids) == manifest["indices_sha256"]
            assert ours.ids.size == manifest["count"]
    provider.close()
