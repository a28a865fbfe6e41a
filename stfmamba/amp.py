"""Mixed precision policy shared by training and inference (``training.amp``)."""
from __future__ import annotations

import torch

__all__ = ["cpu_has_bf16", "resolve_amp"]


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX)."""
    fn = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((fn and fn()) or (amx and amx()))


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``training.amp``: ``auto`` = bf16 on CUDA with bf16 and on bf16 CPUs, else off."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None
