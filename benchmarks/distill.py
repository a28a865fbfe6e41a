"""What the frame teacher (``training.distill_from``) costs a training step of the video model.

    OMP_NUM_THREADS=1 python benchmarks/distill.py [--params params.yaml] [--json out.json]

Builds the Phase A model of ``params.yaml`` and a frame baseline of its ``baseline`` section (random
weights: the cost does not depend on them, and no trained file is needed), then times, interleaved
in one process, one optimizer step on a batch of ``training.batch_size`` real clips plus their fakes
with the model's loss alone and with the teacher's forward pass and the similarity term added.
Prints the median of each and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stfmamba.amp import resolve_amp
from stfmamba.config import STFV8Config, load_params
from stfmamba.data.clips import Normalize
from stfmamba.io import write_json
from stfmamba.models import build_model
from stfmamba.models.checkpoint import save_model_file
from stfmamba.models.losses import STFV8Loss
from stfmamba.training.distill import FrameTeacher


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    p = load_params(args.params)
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
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
            teach = teacher.features(raw) if with_teacher else None
            loss, _ = loss_fn(out, y, None, teach)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step(False), step(True)                                   # warm-up
    times = {False: [], True: []}
    for _ in range(args.repeats):
        for w in (False, True):
            times[w].append(step(w))
    plain, taught = statistics.median(times[False]), statistics.median(times[True])
    res = {"clips": n, "frames": t, "px": s, "teacher": teacher.arch, "teacher_px": teacher.img_size,
           "amp": str(amp).replace("torch.", ""), "threads": torch.get_num_threads(),
           "step_s": round(plain, 4), "step_with_teacher_s": round(taught, 4), "ratio": round(taught / plain, 3)}
    print(f"{n} clips x {t} frames at {s} px ({res['amp']}, {res['threads']} thread(s)): step {plain * 1e3:.0f} ms, "
          f"with the {teacher.arch} teacher at {teacher.img_size} px {taught * 1e3:.0f} ms ({taught / plain:.2f}x)")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
