"""Evaluation inference speed: fp32 vs bf16 autocast on this machine, same process, same batch.

    python benchmarks/eval_amp.py [--params params.yaml] [--repeats 5]

Builds the Phase A and Phase B models of params.yaml (untrained weights: speed does not depend on
them), feeds ``eval.batch_size`` random clips and times ``--repeats`` forward passes in each mode,
alternating the modes so that load changes on a shared machine hit both. Prints seconds per batch
(median) and the bf16 / fp32 ratio (< 1 means bf16 is faster). This is what decided that
``training.amp: auto`` stays fp32 for CPU inference (stfmamba/evaluation/engine.py: autocast_for).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stfmamba.config import STFV8Config, load_params
from stfmamba.models import build_model


def bench(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.no_grad():
        for mode in ("fp32", "bf16"):  # warm-up
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                model(x)
        for _ in range(repeats):
            for mode in ("fp32", "bf16"):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    model(x)
                times[mode].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    p = load_params(args.params)
    torch.manual_seed(0)
    x = torch.randn(p.eval.batch_size, 3, p.model.num_frames, p.model.img_size, p.model.img_size)
    print(f"batch {tuple(x.shape)}, torch threads {torch.get_num_threads()}")
    for name, cfg in (("phase_a", STFV8Config.phase_a(p)), ("phase_b", STFV8Config.phase_b(p))):
        r = bench(build_model(cfg).eval(), x, args.repeats)
        print(f"{name}: fp32 {r['fp32']:.3f} s/batch ({x.shape[0] / r['fp32']:.1f} clips/s), "
              f"bf16 {r['bf16']:.3f} s/batch, bf16/fp32 time ratio {r['bf16'] / r['fp32']:.2f}")


if __name__ == "__main__":
    main()
