"""What the frame teacher (``training.distill_from``) costs a training step of the video model.

    OMP_NUM_THREADS=1 python benchmarks/distill.py [--params params.yaml] [--json out.json]

Builds the Phase A model of ``params.yaml`` and a frame baseline of its ``baseline`` section (random
weights: the cost does not depend on them, and no trained file is needed), then times, interleaved
in one process, one optimizer step on a batch of ``training.batch_size`` real clips plus their fakes
with the model's loss alone and with the teacher's forward pass and the similarity term added.
Prints the median of each and their ratio.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from stfmamba.amp import resolve_amp
from stfmamba.config import STFV8Config
from stfmamba.data.clips import Normalize
from stfmamba.models import build_model
from stfmamba.models.checkpoint import save_model_file
from stfmamba.models.losses import STFV8Loss
from stfmamba.training.distill import FrameTeacher
from steps import interleaved_medians, parse_args, report, timed_step


def main(argv: list[str] | None = None) -> int:
    args, p = parse_args(__doc__, argv)
    torch.manual_seed(0)
    fcfg = STFV8Config.frame_baseline(p)
    with tempfile.TemporaryDirectory() as tmp:
        frame_file = save_model_file(Path(tmp) / "frame.pt", build_model(fcfg), fcfg, p.preprocess, phase="frame")
        teacher = FrameTeacher(frame_file)
    cfg = STFV8Config.phase_a(p)
    model, loss_fn = build_model(cfg), STFV8Loss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = resolve_amp(p.training.amp, torch.device("cpu"))
    n, t, s = 2 * p.training.batch_size, cfg.model.num_frames, cfg.model.img_size
    raw = torch.randint(0, 256, (n, 3, t, s, s), dtype=torch.uint8)
    x, y = Normalize.of(model)(raw), torch.arange(n) % 2

    def step(with_teacher: bool) -> float:
        return timed_step(lambda: loss_fn(model(x), y, None, teacher.features(raw) if with_teacher else None)[0],
                          opt, amp)

    med = interleaved_medians(step, (False, True), args.repeats)
    plain, taught = med[False], med[True]
    fields = {"teacher": teacher.arch, "teacher_px": teacher.img_size, "step_s": round(plain, 4),
              "step_with_teacher_s": round(taught, 4), "ratio": round(taught / plain, 3)}
    return report((n, t, s), amp, fields, f"step {plain * 1e3:.0f} ms, with the {teacher.arch} teacher at "
                  f"{teacher.img_size} px {taught * 1e3:.0f} ms ({taught / plain:.2f}x)", args.json)

if __name__ == "__main__":
    raise SystemExit(main())
