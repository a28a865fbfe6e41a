"""Stages train_phase_a / train_phase_b / train_frame: Video-SBI training of one phase.

    python stages/train.py --phase a          # single process
    torchrun --nproc_per_node 8 stages/train.py --phase b   # DDP (multi-node: add --nnodes/--rdzv_endpoint)
    python stages/train.py --phase frame      # the frame-level SBI baseline (params: baseline)

Reads params.yaml (model, features, training, budget, data.train; baseline for --phase frame); writes
models/phase_<x>.pt (the best SBI-val AUC, or the last epoch with training.select: last), metrics/train_phase_<x>.json
(kept_epoch, kept_val_auc: that model's epoch and SBI-val AUC; best_* too with select: best), dvclive/phase_<x>/ and resume
checkpoints in <training.checkpoint_dir>/phase_<x>/ (a DVC persist output: rerunning the stage
resumes) — models/frame.pt, metrics/train_frame.json, dvclive/frame/, <checkpoint_dir>/frame/ for
the baseline.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stfmamba.config import load_params
from stfmamba.training import PHASES, TrainPaths, train
from stfmamba.training.distributed import teardown


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", required=True, choices=sorted(PHASES))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--live-dir", default="dvclive")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    if args.phase in ("a", "b") and Path("dvc.yaml").is_file():
        from stfmamba import pipeline   # files params name (trunk init, teacher) must be deps, or their changes would not rerun us
        problems = pipeline.file_dep_problems("dvc.yaml", params, [f"train_phase_{args.phase}"])
        if problems:
            raise SystemExit("train: " + "; ".join(problems))
    paths = TrainPaths.for_phase(params, args.phase, args.models_dir, args.metrics_dir, args.live_dir)
    try:
        m = train(params, args.phase, paths)
    finally:
        teardown()
    auc = "n/a" if m["kept_val_auc"] is None else f"{m['kept_val_auc']:.4f}"
    logging.getLogger("train").info("phase %s done: kept epoch %s (select=%s, its SBI-val AUC %s), %d steps, %.0f s%s",
                                    args.phase, m["kept_epoch"], m["select"], auc, m["steps"], m["wall_time_s"],
                                    " (stopped by budget)" if m["budget_stopped"] else "")


if __name__ == "__main__":
    main()
