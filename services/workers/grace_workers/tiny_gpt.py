"""A tiny GPT-style causal language model: small enough to train and score on a CPU.

It is the plain `nn.Module` the workers score when no Hugging Face model is given, and the model
the demo trains. It follows the scoring contract of `grace_workers.scoring.CausalLM`:
`hidden_states` returns the input of the output layer and `output_layer` maps it to logits, so
the closed-form gradient importance in `grace_workers.scoring` is exact for it.

Checkpoints are one `torch.save` file: {"format", "config", "step", "state_dict"}, loadable with
`torch.load(weights_only=True)` (no pickled code runs on load).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CHECKPOINT_FORMAT = "grace-tiny-gpt/1"


class TinyGPTConfigError(ValueError):
    """A TinyGPT config field is invalid; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class TinyGPTConfig:
    """vocab_size: tokens; block_size: longest sequence (positions); n_embd: width C."""

    vocab_size: int = 4096
    block_size: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    head_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TinyGPTConfigError(f"{name}: must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise TinyGPTConfigError(
                f"n_embd: {self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise TinyGPTConfigError(f"dropout: must be in [0, 1), got {self.dropout!r}")


class _SelfAttention(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)  # type: ignore[no-any-return]


class _Block(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = _SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp(self.ln_2(x))  # type: ignore[no-any-return]


class TinyGPT(nn.Module):
    """Pre-norm GPT: token + position embeddings, `n_layer` blocks, final LayerNorm, head.

    The head is not tied to the token embedding so that "the output layer's gradient" means
    exactly the head's gradient (with tying it would mix in the embedding's).
    """

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=config.head_bias)
        self.apply(_init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat.
        for name, param in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @property
    def output_layer(self) -> nn.Linear:
        return self.head

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.wte

    @property
    def max_positions(self) -> int:
        return self.config.block_size

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The final hidden states (B, T, C), the output layer's input; padding is masked."""
        T = input_ids.shape[1]
        if self.config.block_size < T:
            raise ValueError(
                f"input_ids: {T} tokens exceed block_size={self.config.block_size}; "
                "truncate the batch or use a model with a longer context"
            )
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.to(torch.bool)
        )  # (B, T)
        # Positions count real tokens only, so left and right padding give the same result.
        pos = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
        eye = torch.eye(T, dtype=torch.bool, device=input_ids.device)  # (T, T)
        # A query may see earlier real tokens; padded queries see themselves so that no softmax
        # row is empty (an empty row would be NaN and poison the batch).
        allowed = (causal & mask[:, None, :]) | eye  # (B, T, T)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, allowed[:, None])  # (B, T, C); allowed broadcast over heads
        return self.ln_f(x)  # type: ignore[no-any-return]

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(hidden (B, T, C), logits (B, T, V))."""
        hidden = self.hidden_states(input_ids, attention_mask)
        return hidden, self.head(hidden)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def save_tiny_gpt(model: TinyGPT, path: str | Path, *, step: int = 0) -> Path:
    """Write a checkpoint atomically (temp file then rename), so readers never see half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(model.config),
        "step": int(step),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, tmp)
    tmp.replace(target)
    return target


def is_tiny_gpt_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a file this module wrote (checked by loading its header dict)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def load_tiny_gpt(path: str | Path, device: str | torch.device = "cpu") -> tuple[TinyGPT, int]:
    """The model (in eval mode, on `device`) and the training step stored with it."""
    p = Path(path)
    payload = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{p}: not a TinyGPT checkpoint (format {CHECKPOINT_FORMAT!r}); "
            "write it with grace_workers.tiny_gpt.save_tiny_gpt"
        )
    model = TinyGPT(TinyGPTConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, int(payload.get("step", 0))
