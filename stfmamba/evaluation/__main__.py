"""One-command evaluation outside DVC: a model file + any dataset folder -> metrics and plots.

    python -m stfmamba.evaluation --model models/phase_b.pt \\
        --dataset-root /data/Celeb-DF-v2 --adapter celebdf --out results/celebdf

    python -m stfmamba.evaluation --model models/phase_b.pt \\
        --dataset-root /data/FaceForensics++ --adapter ffpp --splits splits/ffpp \\
        --methods Deepfakes Face2Face FaceSwap NeuralTextures --out results/ffpp

    python -m stfmamba.evaluation --model models/phase_b.pt \\
        --dataset-root my_videos/list.csv --adapter csv --out results/mine

(``--checkpoint`` is an alias of ``--model``.) The videos of the evaluated split are preprocessed
first (face crops + landmarks into ``<out>/preprocessed/<name>``; re-runs reuse them), then scored
— the same way ``stfmamba predict`` scores a video file. Everything that decides a video's score
follows the model file's ``input`` record (:class:`~stfmamba.models.checkpoint.InputSpec`): the
preprocessing (crop_size, margin, detect_scale, num_segments, frames_per_segment, min_face_px,
min_frames, max_faces), frame model or not, clip length, clips (frames) per video and the
normalisation. Overrides are printed: ``--max-clips-per-video``, and an explicit ``--params``,
whose preprocess settings are used as given (``preprocess.crop_size`` / ``preprocess.margin`` must
match the model file's: an error says which key and how to fix it; the others warn) and whose
``eval.max_clips_per_video`` (``baseline.eval_frames`` for a frame model) replaces the recorded
value. ``eval.batch_size`` / ``num_workers`` come from the params file (``params.yaml`` when
present, else the built-in defaults); bf16 autocast (``training.amp``) from the model file, as in
``stfmamba predict``, or from an explicit ``--params``. Writes ``<out>/metrics.json`` and the
report files (scores.csv, clips.csv, failures.csv, roc/<method>.csv, auc.csv, roc.png).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from stfmamba.config import ConfigError, DatasetConfig, Params, from_dict, load_params
from stfmamba.data.adapters import ADAPTERS, build_adapter
from stfmamba.data.manifest import ManifestError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stfmamba.evaluation", description=__doc__.splitlines()[0])
    ap.add_argument("--model", "--checkpoint", dest="model", required=True,
                    help="model file (models/phase_a.pt, models/phase_b.pt, models/frame.pt, ...)")
    ap.add_argument("--dataset-root", required=True, help="dataset folder (or the CSV file for --adapter csv)")
    ap.add_argument("--adapter", required=True, choices=sorted(ADAPTERS) or None, help="dataset layout")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default=None, help="dataset name in reports (default: the adapter name)")
    ap.add_argument("--splits", default=None, help="split JSON folder (adapter ffpp)")
    ap.add_argument("--compression", default="c23", choices=("raw", "c23", "c40"))
    ap.add_argument("--methods", nargs="*", default=(), help="manipulation folders (adapter ffpp)")
    ap.add_argument("--split", default="test", help="split to evaluate; 'all' for every row")
    ap.add_argument("--params", default=None,
                    help="params file for the eval settings and, when given, the preprocess settings (whose crop "
                         "settings must match the model file's); default: params.yaml if present, with the model "
                         "file's preprocess settings")
    ap.add_argument("--max-clips-per-video", type=int, default=None,
                    help="clips (frame models: frames) scored per video and face, evenly spaced (default: the "
                         "model file's)")
    ap.add_argument("--workers", type=int, default=None, help="preprocessing worker processes")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from stfmamba.data.preprocess import preprocess_dataset
    from stfmamba.evaluation.run import (check_input_contract, evaluate_dataset, load_checkpoint, save_metrics,
                                         scoring_spec)

    try:
        if args.max_clips_per_video is not None and args.max_clips_per_video < 1:
            raise ConfigError("--max-clips-per-video must be at least 1")
        params_path = Path(args.params or "params.yaml")
        params = load_params(params_path) if args.params or params_path.is_file() else from_dict(Params, {})
        model, cfg, meta = load_checkpoint(args.model)
        spec = scoring_spec(meta, cfg, params, model_path=args.model, params_path=params_path,
                            params_override=args.params is not None)
        if args.max_clips_per_video is not None:
            spec = spec.override("--max-clips-per-video", args.model, max_clips_per_video=args.max_clips_per_video)
        pre = params.preprocess
        if args.params is None and spec.preprocess:
            pre = spec.preprocess_config(pre)   # preprocess the videos as the model's training data was
            print(f"preprocess settings from {args.model}: " + ", ".join(f"{k}={v}" for k, v in spec.preprocess.items()))
        check_input_contract(meta, pre, cfg.model, model_path=args.model, params_path=params_path)
        pre = replace(pre, shard_index=0, num_shards=1, **({} if args.workers is None else {"workers": args.workers}))
        name = args.name or args.adapter
        dcfg = DatasetConfig(args.adapter, args.dataset_root, args.splits, args.compression, tuple(args.methods))
        rows = build_adapter(dcfg).rows()
        split = None if args.split == "all" else args.split
        if split is not None:
            rows = [r for r in rows if r.split == split]
        if not rows:
            raise ConfigError(f"{args.dataset_root}: adapter '{args.adapter}' found no videos in split '{args.split}'")
        out = Path(args.out)
        data_dir = out / "preprocessed" / name
        print(preprocess_dataset(name, rows, pre, data_dir, progress=not args.no_progress))
        print(f"scoring: {'frame model, ' if spec.frame_level else ''}{spec.clip_frames}-frame clips, at most "
              f"{spec.max_clips_per_video} per video and face, mean={spec.norm.mean} std={spec.norm.std}"
              + (f", {spec.mouth_size} px mouth clips" if spec.mouth_stream else ""))
        result = evaluate_dataset(model, spec, name, data_dir, out, pre, params.eval, split=split,
                                  amp=params.training.amp if args.params else cfg.training.amp,
                                  progress=not args.no_progress)
        save_metrics(out / "metrics.json", result.metrics)
    except (ConfigError, ManifestError, FileNotFoundError, ValueError) as err:
        print(f"evaluation: {err}", file=sys.stderr)
        return 2
    auc = result.metrics["auc"]
    print(f"{out / 'metrics.json'}: " + ", ".join(
        f"auc.{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in auc.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
