"""Trunk cut where it is used: a timm CNN pruned after its feature level vs timm's ``features_only``
model of the same level, forward + backward per frame batch, timed interleaved in one process.

    OMP_NUM_THREADS=1 python benchmarks/trunk.py [--arch tf_efficientnet_lite0] [--px 128] [--json out.json]

``features_only`` with ``out_indices=(level,)`` builds (and, for EfficientNet, runs) every block down
to stride 32; the pruned trunk (:class:`stfmamba.models.backbone.TimmTrunk`'s way:
``prune_intermediate_layers`` + ``forward_intermediates(stop_early=True)``) stops at the level.
Prints the median time of each and their ratio, and the parameter counts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch

from stfmamba.io import write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tf_efficientnet_lite0")
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--frames", type=int, default=32, help="frames per batch (8 clips x 4 frames)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    results = {}
    for stride in (8, 16):
        full = timm.create_model(args.arch, num_classes=0)
        level = [i for i, f in enumerate(full.feature_info) if f["reduction"] == stride][0]
        feat = timm.create_model(args.arch, features_only=True, out_indices=(level,))
        pruned = timm.create_model(args.arch, num_classes=0)
        pruned.prune_intermediate_layers(indices=[level], prune_norm=True, prune_head=True)
        x = torch.randn(args.frames, 3, args.px, args.px)

        def step_feat():
            feat(x)[0].sum().backward()

        def step_pruned():
            pruned.forward_intermediates(x, indices=[level], intermediates_only=True, stop_early=True)[0].sum().backward()

        times = {"features_only": [], "pruned": []}
        for fn in (step_feat, step_pruned):   # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in (("features_only", step_feat), ("pruned", step_pruned)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        unused = sum(p.numel() for p in feat.parameters() if p.grad is None)
        results[f"stride{stride}"] = {
            "features_only_s": med["features_only"], "pruned_s": med["pruned"],
            "speedup": med["features_only"] / med["pruned"],
            "params_features_only": sum(p.numel() for p in feat.parameters()),
            "params_pruned": sum(p.numel() for p in pruned.parameters()),
            "params_without_grad_features_only": unused}
        r = results[f"stride{stride}"]
        print(f"{args.arch} stride {stride} at {args.px} px, {args.frames} frames: features_only "
              f"{med['features_only'] * 1e3:.0f} ms, pruned {med['pruned'] * 1e3:.0f} ms -> {r['speedup']:.2f}x; "
              f"params {r['params_features_only']:,} vs {r['params_pruned']:,} "
              f"({unused:,} without a gradient in features_only)")
    if args.json:
        write_json(args.json, {"arch": args.arch, "px": args.px, "frames": args.frames,
                               "threads": torch.get_num_threads(), **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
