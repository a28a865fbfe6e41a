"""Multi-head self-attention on token sequences, using ``F.scaled_dot_product_attention``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["SelfAttention"]


class SelfAttention(nn.Module):
    """Plain multi-head self-attention (no positional bias; the convs carry position).

    Args:
        dim: channels. head_dim: channels per head (``num_heads = max(1, dim // head_dim)``).
    """

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads = max(1, dim // head_dim)
        if dim % self.num_heads:
            self.num_heads = 1
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, L, C)`` -> ``(B, L, C)``."""
        q, k, v = rearrange(self.qkv(x), "b l (k h d) -> k b h l d", k=3, h=self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v)                   # (B, heads, L, d)
        return self.proj(rearrange(y, "b h l d -> b l (h d)"))
