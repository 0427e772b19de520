"""Low-rank adapters (LoRA, Hu et al. 2021) for the linear layers of a frozen transformer.

Why adapters rather than full fine-tuning: the base weights come from a registry package
and only what training changed may be committed; rank-16 adapters on every linear layer of
MiniLM-L6 are about 2.6 MB, and once merged (``W + scale · B A``) they cost nothing at
inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from merc.models.layers import DictConfig


@dataclass
class LoRAConfig(DictConfig):
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    # Suffixes of the nn.Linear modules to adapt (BERT naming): attention and feed-forward.
    targets: tuple[str, ...] = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """y = base(x) + scale · B(A(dropout(x))); B starts at zero so training starts from the base model."""

    def __init__(self, base: nn.Linear, cfg: LoRAConfig):
        super().__init__()
        self.base = base
        self.scale = cfg.alpha / cfg.rank
        self.lora_a = nn.Parameter(torch.empty(cfg.rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, cfg.rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (self.drop(x) @ self.lora_a.T @ self.lora_b.T)

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _targets(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.endswith(cfg.targets)]


def _swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_lora(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze ``model`` and wrap its target linears in place; returns the wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = _targets(model, cfg)
    if not names:
        raise ValueError(f"no linear layer of the model matches {cfg.targets}")
    for name in names:
        _swap(model, name, LoRALinear(model.get_submodule(name), cfg))
    return names


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (what gets committed)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if ".lora_" in k}


def load_merged(model: nn.Module, cfg: LoRAConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """Apply saved adapters to a fresh base model and fold them into its weights."""
    names = add_lora(model, cfg)
    missing = {f"{n}.lora_a" for n in names} | {f"{n}.lora_b" for n in names}
    if missing != set(state):
        raise ValueError(f"adapter does not fit the model: {len(missing ^ set(state))} tensors differ "
                         f"(e.g. {sorted(missing ^ set(state))[:2]})")
    model.load_state_dict(state, strict=False)
    for name in names:
        _swap(model, name, model.get_submodule(name).merged())
    return model


def soup(states: list[dict[str, torch.Tensor]], cfg: LoRAConfig) -> tuple[dict[str, torch.Tensor], LoRAConfig]:
    """One adapter whose weight change is the mean of several adapters' (a uniform "model soup").

    Stacking the n low-rank factors along the rank gives exactly mean_i(B_i A_i) at rank n*r, so the
    soup is still a LoRA adapter: stored as such, merged at load like any other.
    """
    n = len(states)
    if n == 0 or any(set(s) != set(states[0]) for s in states):
        raise ValueError("soup needs at least one adapter, all of the same model")
    out = {}
    for key in states[0]:
        dim = 0 if key.endswith("lora_a") else 1  # A: [r, in] stacks rows; B: [out, r] stacks columns
        stacked = torch.cat([s[key] for s in states], dim=dim)
        out[key] = stacked if dim == 0 else stacked / n
    # scale = alpha / rank: n times the rank needs n times alpha to keep each term's scale.
    return out, LoRAConfig(rank=cfg.rank * n, alpha=cfg.alpha * n, dropout=cfg.dropout, targets=cfg.targets)
