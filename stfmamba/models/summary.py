"""Parameter counts per preset: ``python -m stfmamba.models.summary [--params params.yaml]``.

Prints, for the debug preset, the demo profile (``params.yaml``: Phase A, Phase B) and the full
profile (``ModelConfig`` defaults, 224 px x 32 frames: Phase A, Phase B with every V8 flag and each
flag alone), the total parameters and the split stem / frequency / stages / head.
"""
from __future__ import annotations

import argparse
import dataclasses

from torch import nn

from stfmamba.config import FeatureFlags, STFV8Config, load_params
from stfmamba.models import build_model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def presets(params) -> dict[str, STFV8Config]:
    full_a = STFV8Config.phase_a()
    out = {"debug (all flags)": STFV8Config.debug(),
           "demo Phase A (V7.3)": STFV8Config.phase_a(params),
           "demo Phase B (params flags)": STFV8Config.phase_b(params),
           "full Phase A (V7.3)": full_a,
           "full Phase B (all V8 flags)": STFV8Config.phase_b()}
    for flag in FeatureFlags.ARCHITECTURE:
        out[f"full V7.3 + {flag}"] = dataclasses.replace(
            full_a, features=dataclasses.replace(full_a.features, **{flag: True}))
    return out


def summary_rows(params) -> list[tuple[str, str, int, int, int, int, int]]:
    rows = []
    for name, cfg in presets(params).items():
        m = build_model(cfg)
        rows.append((name, cfg.describe().split(": ", 1)[1], count(m), count(m.stem),
                     count(m.wavelet) + count(m.fusion), count(m.stages), count(m.norm) + count(m.head)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="STF-Mamba parameter counts per preset")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    rows = summary_rows(load_params(args.params))
    print("| preset | total | stem | wavelet+fusion | stages | head |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, total, stem, freq, stages, head in rows:
        print(f"| {name} | {total / 1e6:.3f} M | {stem:,} | {freq:,} | {stages:,} | {head:,} |")


if __name__ == "__main__":
    main()
