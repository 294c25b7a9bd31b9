"""The ``torch.nn`` modules of spec chapter 9's layers that PyTorch has no module of exactly
(``modules`` builds them; ``nn.Embedding`` is used as it is).

* ``FlatConv1d``: ``nn.Conv1d`` on the flat rows the suite's networks pass, (N, C·L) read as
  (N, C, L), output flattened (``nn.Flatten`` order); parameters ``weight``, ``bias``.
* ``TokenAttention``: ``nn.MultiheadAttention``'s parameters and projections around
  ``F.scaled_dot_product_attention`` with a boolean key-padding mask (True: attend). PyTorch 2.13
  returns 0 for a query whose every key is masked (§9.3.2's convention); ``nn.
  MultiheadAttention`` itself returns NaN there in its inference fast path (spec §9.3.2,
  pytorch#41508), so it is not used.
* ``ResidualBlock``: x + block(x), the block an ``nn.Sequential`` (names ``block.j.*``).

``takes_data(module)`` says whether ``Net`` passes the module its mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlatConv1d", "ResidualBlock", "TokenAttention", "takes_data"]


class FlatConv1d(nn.Conv1d):
    """``nn.Conv1d`` reading (N, C_in·L) as (N, C_in, L) and returning (N, C_out·L_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, length: int,
                 **kwargs: int | bool) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)  # type: ignore
        self.length = length

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x.unflatten(-1, (self.in_channels, self.length)))
        return y.flatten(-2)


class TokenAttention(nn.Module):
    """Self-attention over the token axis of (N, T, d) with a key-padding mask (N, T)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(-3, -2) for t in (q, k, v))
        keys = mask.to(torch.bool)[..., None, None, :]  # (N, 1, 1, T): True = attend
        c = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        return self.out_proj(c.transpose(-3, -2).flatten(-2))


class ResidualBlock(nn.Module):
    """x + block(x); a layer of the block that takes data (attention) gets the mask."""

    def __init__(self, block: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for module in self.block:
            h = module(h, mask) if takes_data(module) else module(h)
        return x + h


def takes_data(module: nn.Module) -> bool:
    """Whether the module's forward takes the token mask (an attention, or a block with one)."""
    if isinstance(module, TokenAttention):
        return True
    return isinstance(module, ResidualBlock) and any(takes_data(m) for m in module.block)
