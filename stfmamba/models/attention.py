"""Multi-head self-attention on token sequences: timm's ``Attention`` (fused SDPA), sized by head width."""
from __future__ import annotations

from timm.layers import Attention

__all__ = ["SelfAttention"]


class SelfAttention(Attention):
    """Plain multi-head self-attention (no positional bias; the convs carry position).

    ``forward(x: (B, L, C)) -> (B, L, C)``. State-dict keys: ``qkv.*``, ``proj.*``.

    Args:
        dim: channels. head_dim: channels per head (``num_heads = max(1, dim // head_dim)``, or 1
            when that does not divide ``dim``).
    """

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        num_heads = max(1, dim // head_dim)
        super().__init__(dim, num_heads=num_heads if dim % num_heads == 0 else 1, qkv_bias=True)
