"""Shortcut audit of Video-SBI: writes plots/sbi_audit.png (real vs fake statistics + example pairs).

    python stages/sbi_audit.py [--pairs 100] [--examples 3] [--dataset-dir data/preprocessed/demo]
                               [--out plots/sbi_audit.png] [--json metrics/sbi_audit.json]

Pairs come from the training dataset (``VideoSBIDataset``, Phase A flags of ``params.yaml``) before
the augmentations common to real and fake; the statistics are
:func:`stfmamba.data.sbi.pair_statistics` inside the blended face. Histograms of real vs fake
should overlap: a fake-only shift is a shortcut the detector can learn instead of blending
artefacts (tests/training/test_sbi_audit.py asserts the bounds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stfmamba.config import load_params  # noqa: E402
from stfmamba.data.dataset import VideoSBIDataset  # noqa: E402
from stfmamba.data.sbi import pair_statistics  # noqa: E402
from stfmamba.io import atomic_path, write_json  # noqa: E402

LABELS = {"dup": "duplicated pixels in texture", "block": "8x8 blockiness", "lap": "Laplacian variance",
          "bright": "mean luma", "noise": "median-filter residual"}


def summary(stats: pd.DataFrame) -> dict:
    """Per statistic: median fake/real ratio and fraction of pairs whose fake is above its real."""
    out = {}
    for k in LABELS:
        f, r = stats[f"fake_{k}"], stats[f"real_{k}"]
        ratio = (f / r)[r > 0]
        out[k] = {"median_ratio": round(float(np.median(ratio)), 4) if len(ratio) >= len(r) / 2 else None,
                  "fake_above": float((f > r).mean()), "real_median": float(r.median()), "fake_median": float(f.median())}
    out["dup"]["traced_pairs"] = float(((stats.fake_dup - stats.real_dup) >= 0.01).mean())   # as the audit test
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset-dir", default=None)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("plots/sbi_audit.png"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    p = load_params(args.params)
    if args.dataset_dir:
        ddir = Path(args.dataset_dir)
        p = dataclasses.replace(p, data=dataclasses.replace(p.data, preprocessed_dir=str(ddir.parent), train=ddir.name))
    ds = VideoSBIDataset.from_params(p, "train", True)
    ds.items = [ds.items[i % len(ds.items)] for i in range(args.pairs)]   # one fresh seed per index
    pairs = [ds.pair(i, common_aug=False) for i in range(len(ds))]
    stats = pd.DataFrame([pair_statistics(*pr) for pr in pairs])
    res = summary(stats)

    n_ex = min(args.examples, len(pairs))
    fig = plt.figure(figsize=(15, 3.2 + 1.9 * n_ex))
    grid = fig.add_gridspec(1 + n_ex, 5)
    for c, k in enumerate(LABELS):
        ax = fig.add_subplot(grid[0, c])
        lo, hi = np.percentile(stats[[f"real_{k}", f"fake_{k}"]].to_numpy(), [1, 99])
        for name, col in (("real", "tab:blue"), ("fake", "tab:red")):
            ax.hist(stats[f"{name}_{k}"].clip(lo, hi), bins=25, alpha=0.5, color=col, label=name)
        ax.set_title(f"{LABELS[k]}\nfake>real {res[k]['fake_above']:.0%}, median ratio {res[k]['median_ratio']}",
                     fontsize=8)
        ax.tick_params(labelsize=7)
        if c == 0:
            ax.legend(fontsize=7)
    for r in range(n_ex):
        real, fake, mask = pairs[r]
        diff = np.abs(fake.astype(np.int16) - real.astype(np.int16)).sum(-1)[0]
        for c, (img, name) in enumerate([(real[0], "real"), (fake[0], "fake"), (mask[0], "mask"),
                                         (diff / max(1, diff.max()), "|fake-real| (scaled)")]):
            ax = fig.add_subplot(grid[1 + r, c])
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=None if img.ndim == 3 else 1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"pair {r}: {name}", fontsize=8)
    fig.suptitle(f"Video-SBI shortcut audit: {len(pairs)} pairs of {ds.dataset_dir.name}, before common augmentation",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(json.dumps(res, indent=1))
    if args.json:
        write_json(args.json, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
