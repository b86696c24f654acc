"""Loading scored models: TinyGPT files and a tiny local Hugging Face GPT-2, no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from grace_workers.checkpoints import CheckpointError, check_output_layer, load_model
from grace_workers.scoring import score_batch
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig, save_tiny_gpt


def test_tiny_gpt_checkpoint_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=50, block_size=12, n_layer=1, n_head=2, n_embd=8))
    path = save_tiny_gpt(model, tmp_path / "ckpt" / "model.pt", step=42)
    loaded = load_model(path)
    assert (loaded.kind, loaded.step, loaded.max_positions, loaded.vocab_size) == (
        "tiny_gpt",
        42,
        12,
        50,
    )
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones_like(ids)
    torch.testing.assert_close(
        score_batch(loaded.model, ids, mask).importance,
        score_batch(model.eval(), ids, mask).importance,
    )
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_missing_and_foreign_paths_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pt")
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a TinyGPT checkpoint"):
        load_model(foreign)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=r"without config\.json"):
        load_model(tmp_path / "empty_dir")


class _ScaledLogits(nn.Module):
    """A model whose logits are not its head's output: the closed form must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyGPT(
            TinyGPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=4)
        )

    @property
    def output_layer(self) -> nn.Linear:
        return self.inner.head

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        hidden, logits = self.inner(ids, mask)
        return hidden, 30.0 * torch.tanh(logits / 30.0) * 2.0


def test_models_with_transformed_logits_are_refused() -> None:
    with pytest.raises(CheckpointError, match="soft-caps"):
        check_output_layer(_ScaledLogits())


def test_local_hugging_face_gpt2_scores_like_its_own_logits(tmp_path: Path) -> None:
    import transformers  # in the dev extra: a missing install fails here, it is not skipped

    config = transformers.GPT2Config(
        vocab_size=64,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    loaded = load_model(tmp_path / "gpt2")
    assert (loaded.kind, loaded.max_positions, loaded.vocab_size) == ("huggingface", 16, 64)
    ids = torch.randint(1, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # mixed lengths through the HF attention mask
    scores = score_batch(loaded.model, ids, mask)
    with torch.no_grad():
        _, logits = loaded.model(ids, mask)
    probs = torch.softmax(logits[:, :-1], dim=-1)
    hidden, _ = loaded.model(ids, mask)
    onehot = torch.nn.functional.one_hot(ids[:, 1:], 64).float()
    token_norm = (probs - onehot).norm(dim=-1) * hidden[:, :-1].norm(dim=-1)  # (B, T-1)
    valid = (mask[:, :-1] * mask[:, 1:]).float()
    expected = (token_norm * valid).sum(1) / valid.sum(1)
    torch.testing.assert_close(scores.importance, expected.detach(), rtol=1e-5, atol=0.0)
