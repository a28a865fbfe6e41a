"""What the frame stream (``model.frame_stream``) costs a training step of the video model.

    OMP_NUM_THREADS=1 python benchmarks/frame_stream.py [--params params.yaml] [--json out.json]

Builds the Phase A model of ``params.yaml`` twice, with the trunk cut at ``model.trunk_stride`` (as
committed) and kept whole with the frame head, and times, interleaved in one process, one optimizer
step (forward, loss, backward, AdamW) on a batch of ``training.batch_size`` real clips plus their
fakes. Prints the median of each and their ratio.
"""
from __future__ import annotations

import dataclasses

import torch

from stfmamba.amp import resolve_amp
from stfmamba.config import STFV8Config
from stfmamba.data.clips import Normalize
from stfmamba.models import build_model
from stfmamba.models.losses import STFV8Loss
from steps import interleaved_medians, parse_args, report, timed_step


def main(argv: list[str] | None = None) -> int:
    args, p = parse_args(__doc__, argv)
    base = STFV8Config.phase_a(p)
    amp = resolve_amp(p.training.amp, torch.device("cpu"))
    n, t, s = 2 * p.training.batch_size, base.model.num_frames, base.model.img_size
    raw = torch.randint(0, 256, (n, 3, t, s, s), dtype=torch.uint8)
    y = torch.arange(n) % 2
    runs = {}
    for on in (False, True):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, frame_stream=on))
        torch.manual_seed(0)
        model = build_model(cfg)
        runs[on] = (model, STFV8Loss(cfg), torch.optim.AdamW(model.parameters(), lr=1e-4), Normalize.of(model)(raw))

    def step(on: bool) -> float:
        model, loss_fn, opt, x = runs[on]
        return timed_step(lambda: loss_fn(model(x), y)[0], opt, amp)

    med = interleaved_medians(step, (False, True), args.repeats)
    cut, whole = med[False], med[True]
    params = {on: sum(q.numel() for q in runs[on][0].parameters()) for on in runs}
    fields = {"trunk": base.model.spatial_backbone, "trunk_stride": base.model.trunk_stride,
              "params": params[False], "params_frame_stream": params[True], "step_s": round(cut, 4),
              "step_frame_stream_s": round(whole, 4), "ratio": round(whole / cut, 3)}
    return report((n, t, s), amp, fields, f"step {cut * 1e3:.0f} ms ({params[False] / 1e6:.2f} M parameters), with the "
                  f"frame stream {whole * 1e3:.0f} ms ({params[True] / 1e6:.2f} M) ({whole / cut:.2f}x)", args.json)

if __name__ == "__main__":
    raise SystemExit(main())
