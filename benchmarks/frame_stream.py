"""What the frame stream (``model.frame_stream``) costs a training step of the video model.

    OMP_NUM_THREADS=1 python benchmarks/frame_stream.py [--params params.yaml] [--json out.json]

Builds the Phase A model of ``params.yaml`` three times: with the trunk cut at ``model.trunk_stride`` (as
committed), kept whole with the frame head, and kept whole with the pretrained trunk frozen
(``training.pretrained_lr_mult: 0``: no gradient, eval mode; how the frame stream runs when it starts
from the trained frame baseline). Times, interleaved in one process, one optimizer step (forward,
loss, backward, AdamW) on a batch of ``training.batch_size`` real clips plus their fakes. Prints the
median of each and their ratios to the cut trunk.
"""
from __future__ import annotations

import dataclasses

import torch

from stfmamba.amp import resolve_amp
from stfmamba.config import STFV8Config
from stfmamba.data.clips import Normalize
from stfmamba.models import build_model
from stfmamba.models.losses import STFV8Loss
from stfmamba.training.trainer import freeze_pretrained, freeze_pretrained_modes
from steps import interleaved_medians, parse_args, report, timed_step


def main(argv: list[str] | None = None) -> int:
    args, p = parse_args(__doc__, argv)
    base = STFV8Config.phase_a(p)
    amp = resolve_amp(p.training.amp, torch.device("cpu"))
    n, t, s = 2 * p.training.batch_size, base.model.num_frames, base.model.img_size
    raw = torch.randint(0, 256, (n, 3, t, s, s), dtype=torch.uint8)
    y = torch.arange(n) % 2
    frame_y = y[:, None].float().expand(n, t)     # per-frame targets (training.frame_target_weight > 0)
    runs = {}
    for kind in ("cut", "whole", "frozen"):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, frame_stream=kind != "cut",
                                                                       stream_fusion=base.model.stream_fusion if kind != "cut" else "sum"))
        torch.manual_seed(0)
        model = build_model(cfg)
        if kind == "frozen":
            freeze_pretrained(model)
            model.train()
            freeze_pretrained_modes(model)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        runs[kind] = (model, STFV8Loss(cfg), opt, Normalize.of(model)(raw))

    def step(kind: str) -> float:
        model, loss_fn, opt, x = runs[kind]
        return timed_step(lambda: loss_fn(model(x), y, frame_targets=frame_y)[0], opt, amp)

    med = interleaved_medians(step, tuple(runs), args.repeats)
    cut, whole, frozen = med["cut"], med["whole"], med["frozen"]
    params = {k: sum(q.numel() for q in runs[k][0].parameters()) for k in runs}
    trained = sum(q.numel() for q in runs["frozen"][0].parameters() if q.requires_grad)
    fields = {"trunk": base.model.spatial_backbone, "trunk_stride": base.model.trunk_stride,
              "params": params["cut"], "params_frame_stream": params["whole"], "trained_params_frozen": trained,
              "step_s": round(cut, 4), "step_frame_stream_s": round(whole, 4), "step_frozen_s": round(frozen, 4),
              "ratio": round(whole / cut, 3), "ratio_frozen": round(frozen / cut, 3)}
    return report((n, t, s), amp, fields, f"step {cut * 1e3:.0f} ms ({params['cut'] / 1e6:.2f} M parameters), with the "
                  f"frame stream {whole * 1e3:.0f} ms ({params['whole'] / 1e6:.2f} M) ({whole / cut:.2f}x), frozen "
                  f"{frozen * 1e3:.0f} ms ({trained / 1e6:.2f} M trained) ({frozen / cut:.2f}x)", args.json)


if __name__ == "__main__":
    raise SystemExit(main())
