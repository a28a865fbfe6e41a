"""DVC stages `eval_phase_a`, `eval_phase_b`, `eval_cross`, `eval_frame`, `eval_frame_cross`: score the
test videos with a trained model.

    python stages/evaluate.py --phase a|b|cross|frame|frame_cross [--params params.yaml] [--no-progress]

Phase a / b: ``models/phase_<x>.pt`` on the test split of ``data.test`` ->
``metrics/eval_phase_<x>.json`` (``auc.<method>``, ``auc.overall``, ``auc_ci95`` (cluster bootstrap by
source video / person), ``auc_lower95``, ``auc_ci95_by``, ``auc_groups``, ``auc_identities``, ``auc_fail05``,
``static_auc``, ``temporal_gain`` (+ ``_ci95``), ``shuffled_auc``, ``order_gain`` (+ ``_ci95``), for a two-stream
model ``stf_stream_auc`` / ``frame_stream_auc`` (each stream alone), ``failed``, ap, eer, acc, clip_auc, counts) and
``plots/eval_phase_<x>/`` (scores.csv, clips.csv, failures.csv, roc/<method>.csv, auc.csv, temporal_gain.csv,
roc.png). The frame phases report no temporal gain (null; no temporal_gain.csv).
Cross: ``models/phase_b.pt`` on the test split of every dataset in ``data.cross`` ->
``metrics/eval_cross.json`` (``auc.<dataset>`` ...) and ``plots/eval_cross/`` (one folder per dataset
plus roc/<dataset>.csv, auc.csv, roc.png).
Frame / frame_cross: the frame-level SBI baseline ``models/frame.pt``, the same way, into
``metrics/eval_frame.json`` + ``plots/eval_frame/`` and ``metrics/eval_frame_cross.json`` +
``plots/eval_frame_cross/``.

How a video is scored comes from the model file (``input``, :class:`~stfmamba.models.checkpoint.InputSpec`):
frame model or not (a frame model scores evenly spaced single frames), clip length, normalisation
and clips per video. The params' value of the latter (``eval.max_clips_per_video``, or
``baseline.eval_frames`` for a frame model) overrides it when it differs, and the override is
printed; preprocessing settings of the npz files that differ from the model file's are checked
(:func:`~stfmamba.evaluation.run.check_input_contract`: crop settings must match, the others warn).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stfmamba.config import ConfigError, load_params
from stfmamba.data.manifest import ManifestError
from stfmamba.evaluation.run import (check_input_contract, evaluate_dataset, load_checkpoint, save_metrics,
                                     scoring_spec, write_cross_summary)

PHASES = {  # phase -> (model file, metrics file, plots folder)
    "a": ("models/phase_a.pt", "metrics/eval_phase_a.json", "plots/eval_phase_a"),
    "b": ("models/phase_b.pt", "metrics/eval_phase_b.json", "plots/eval_phase_b"),
    "cross": ("models/phase_b.pt", "metrics/eval_cross.json", "plots/eval_cross"),
    "frame": ("models/frame.pt", "metrics/eval_frame.json", "plots/eval_frame"),
    "frame_cross": ("models/frame.pt", "metrics/eval_frame_cross.json", "plots/eval_frame_cross"),
}
CROSS = {"cross", "frame_cross"}   # phases scored on every dataset of data.cross


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=sorted(PHASES), required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (default when stderr is not a terminal)")
    args = ap.parse_args(argv)
    model_path, metrics_path, plots_dir = PHASES[args.phase]
    try:
        params = load_params(args.params)
        model, cfg, meta = load_checkpoint(model_path)
        check_input_contract(meta, params.preprocess, cfg.model, model_path=model_path, params_path=args.params)
        spec = scoring_spec(meta, cfg, params, model_path=model_path, params_path=args.params, params_override=True)
        root = Path(params.data.preprocessed_dir)
        names = list(params.data.cross) if args.phase in CROSS else [params.data.test]
        kw = dict(pre=params.preprocess, ev=params.eval, amp=params.training.amp,
                  progress=not args.no_progress and sys.stderr.isatty())
        if args.phase in CROSS:
            results = [evaluate_dataset(model, spec, n, root / n, Path(plots_dir) / n, **kw) for n in names]
            metrics = write_cross_summary(plots_dir, results)
        else:
            metrics = evaluate_dataset(model, spec, names[0], root / names[0], plots_dir, **kw).metrics
        save_metrics(metrics_path, metrics)
    except (ConfigError, ManifestError, FileNotFoundError, ValueError) as err:
        print(f"evaluate: {err}", file=sys.stderr)
        return 2
    auc = metrics["auc"]
    print(f"{metrics_path}: " + ", ".join(f"auc.{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in auc.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
