"""One-command evaluation outside DVC: a checkpoint + any dataset folder -> metrics and plots.

    python -m stfmamba.evaluation --checkpoint models/phase_b.pt \\
        --dataset-root /data/Celeb-DF-v2 --adapter celebdf --out results/celebdf

    python -m stfmamba.evaluation --checkpoint models/phase_b.pt \\
        --dataset-root /data/FaceForensics++ --adapter ffpp --splits splits/ffpp \\
        --methods Deepfakes Face2Face FaceSwap NeuralTextures --out results/ffpp

    python -m stfmamba.evaluation --checkpoint models/phase_b.pt \\
        --dataset-root my_videos/list.csv --adapter csv --out results/mine

The videos of the evaluated split are preprocessed first with the ``preprocess`` section of
``--params`` (face crops + landmarks into ``<out>/preprocessed/<name>``; re-runs reuse them), then
scored. Writes ``<out>/metrics.json`` and the report files (scores.csv, clips.csv, failures.csv,
roc/<method>.csv, auc.csv, roc.png).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from stfmamba.config import ConfigError, DatasetConfig, load_params
from stfmamba.data.adapters import ADAPTERS, build_adapter
from stfmamba.data.manifest import ManifestError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stfmamba.evaluation", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="model file (models/phase_a.pt, models/phase_b.pt, ...)")
    ap.add_argument("--dataset-root", required=True, help="dataset folder (or the CSV file for --adapter csv)")
    ap.add_argument("--adapter", required=True, choices=sorted(ADAPTERS) or None, help="dataset layout")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default=None, help="dataset name in reports (default: the adapter name)")
    ap.add_argument("--splits", default=None, help="split JSON folder (adapter ffpp)")
    ap.add_argument("--compression", default="c23", choices=("raw", "c23", "c40"))
    ap.add_argument("--methods", nargs="*", default=(), help="manipulation folders (adapter ffpp)")
    ap.add_argument("--split", default="test", help="split to evaluate; 'all' for every row")
    ap.add_argument("--params", default="params.yaml", help="params file for preprocess / eval settings")
    ap.add_argument("--workers", type=int, default=None, help="preprocessing worker processes")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from stfmamba.data.preprocess import preprocess_dataset
    from stfmamba.evaluation.run import evaluate_dataset, load_checkpoint, save_metrics

    try:
        params = load_params(args.params)
        pre = params.preprocess if args.workers is None else replace(params.preprocess, workers=args.workers)
        pre = replace(pre, shard_index=0, num_shards=1)
        name = args.name or args.adapter
        dcfg = DatasetConfig(args.adapter, args.dataset_root, args.splits, args.compression, tuple(args.methods))
        rows = build_adapter(dcfg).rows()
        split = None if args.split == "all" else args.split
        if split is not None:
            rows = [r for r in rows if r.split == split]
        if not rows:
            raise ConfigError(f"{args.dataset_root}: adapter '{args.adapter}' found no videos in split '{args.split}'")
        model, cfg, _ = load_checkpoint(args.checkpoint)
        if pre.crop_size < cfg.model.img_size or pre.frames_per_segment < cfg.model.num_frames:
            raise ConfigError(f"{args.params}: preprocess.crop_size={pre.crop_size} / frames_per_segment="
                              f"{pre.frames_per_segment} are smaller than the checkpoint's img_size="
                              f"{cfg.model.img_size} / num_frames={cfg.model.num_frames}; use the params "
                              "file (profile) the model was trained with")
        out = Path(args.out)
        data_dir = out / "preprocessed" / name
        print(preprocess_dataset(name, rows, pre, data_dir, progress=not args.no_progress))
        result = evaluate_dataset(model, cfg.model, name, data_dir, out, pre, params.eval, split=split,
                                  amp=params.training.amp, progress=not args.no_progress)
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
