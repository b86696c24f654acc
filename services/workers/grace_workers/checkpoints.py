"""Loading the model a round is scored with, from a TinyGPT file or a Hugging Face directory.

Whatever the source, the result satisfies `grace_workers.scoring.CausalLM`, and the loader checks
once, on a few tokens, that the model's logits are its output layer applied to the hidden states
it reports: the closed-form importance is only exact then (a model that scales or soft-caps its
logits would be scored wrongly, so it is refused with that reason).

Hugging Face models load with `local_files_only=True`: a worker never downloads at run time.
`transformers` is imported only when a directory is loaded.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from grace_workers.tiny_gpt import TinyGPT, is_tiny_gpt_checkpoint, load_tiny_gpt

_CHECK_TOKENS = 6


class CheckpointError(ValueError):
    """A model path cannot be scored; the message says why and what to pass instead."""


@dataclass(frozen=True, slots=True, eq=False)
class LoadedModel:
    """model: an nn.Module with `hidden_states`, `output_layer` and forward -> (hidden, logits).

    kind: "tiny_gpt" or "huggingface"; step: the training step stored in the checkpoint, if any;
    max_positions: the longest sequence it accepts (None if unbounded).
    """

    model: TinyGPT | HuggingFaceCausalLM
    path: str
    kind: str
    step: int | None
    max_positions: int | None
    vocab_size: int


class HuggingFaceCausalLM(nn.Module):
    """Adapts an `AutoModelForCausalLM` to the scoring contract."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        base = getattr(model, "base_model", None)
        if not isinstance(base, nn.Module) or base is model:
            raise CheckpointError(
                f"{type(model).__name__} exposes no separate base model, so its last hidden "
                "state cannot be read without the head; use a standard *ForCausalLM model"
            )
        self.base = base
        self._takes_positions = "position_ids" in inspect.signature(base.forward).parameters
        head = model.get_output_embeddings()  # type: ignore[operator]
        if not isinstance(head, nn.Linear):
            raise CheckpointError(
                f"{type(model).__name__}'s output embeddings are {type(head).__name__}, not a "
                "Linear layer; the closed-form importance needs a linear output projection"
            )
        self.head = head

    @property
    def output_layer(self) -> nn.Linear:
        return self.head

    @property
    def input_embeddings(self) -> nn.Embedding:
        table = self.model.get_input_embeddings()  # type: ignore[operator]
        if not isinstance(table, nn.Embedding):
            raise CheckpointError(
                f"{type(self.model).__name__}'s input embeddings are {type(table).__name__}, "
                "not an Embedding table; use --embedding hidden for this model"
            )
        return table

    def _inputs(self, input_ids: Tensor, attention_mask: Tensor | None) -> dict[str, Tensor]:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if self._takes_positions:
            # Positions count real tokens, so left padding does not shift a sample's positions.
            inputs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return inputs

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.base(**self._inputs(input_ids, attention_mask))
        return out[0]  # type: ignore[no-any-return]  # (B, T, C) last_hidden_state

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        out = self.model(**self._inputs(input_ids, attention_mask), output_hidden_states=True)
        return out.hidden_states[-1], out.logits


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a TinyGPT checkpoint file or a local Hugging Face model directory onto `device`."""
    p = Path(path)
    if p.is_dir():
        loaded = _load_huggingface(p, device)
    elif is_tiny_gpt_checkpoint(p):
        model, step = load_tiny_gpt(p, device)
        loaded = LoadedModel(
            model=model,
            path=str(p),
            kind="tiny_gpt",
            step=step,
            max_positions=model.max_positions,
            vocab_size=model.config.vocab_size,
        )
    elif not p.exists():
        raise CheckpointError(
            f"{p}: no such file or directory; pass a TinyGPT checkpoint file or a local "
            "Hugging Face model directory (with config.json)"
        )
    else:
        raise CheckpointError(
            f"{p}: not a TinyGPT checkpoint; pass one written by save_tiny_gpt, or a "
            "Hugging Face model directory"
        )
    check_output_layer(loaded.model)
    return loaded


def _load_huggingface(path: Path, device: str | torch.device) -> LoadedModel:
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: a directory without config.json; save the model with "
            "model.save_pretrained(path) or pass a TinyGPT checkpoint file"
        )
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(
            f"{path} is a Hugging Face directory but transformers is not installed; "
            "pip install transformers"
        ) from exc
    hf: Any = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    hf.to(device).eval()
    config = hf.config
    max_positions = getattr(config, "n_positions", None) or getattr(
        config, "max_position_embeddings", None
    )
    return LoadedModel(
        model=HuggingFaceCausalLM(hf),
        path=str(path),
        kind="huggingface",
        step=None,
        max_positions=int(max_positions) if max_positions else None,
        vocab_size=int(config.vocab_size),
    )


def check_output_layer(model: nn.Module, *, rtol: float = 1e-3) -> None:
    """Refuse a model whose logits are not output_layer(hidden_states): importance needs that."""
    head = getattr(model, "output_layer", None)
    if not isinstance(head, nn.Linear):
        raise CheckpointError(
            f"{type(model).__name__} has no `output_layer` Linear; "
            "see grace_workers.scoring.CausalLM"
        )
    vocab = head.weight.shape[0]
    device = head.weight.device
    ids = (torch.arange(_CHECK_TOKENS, device=device)[None] * 7919) % vocab  # (1, t) any tokens
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        hidden, logits = model(ids, mask)  # (1, t, C), (1, t, V)
        rebuilt = head(hidden)  # (1, t, V)
    scale = float(logits.abs().max()) or 1.0
    error = float((rebuilt - logits).abs().max()) / scale
    if error > rtol:
        raise CheckpointError(
            f"{type(model).__name__}: its logits differ from output_layer(last hidden state) "
            f"by {error:.2g} (relative); it probably scales or soft-caps logits, so the "
            "closed-form gradient importance would be wrong for it"
        )
