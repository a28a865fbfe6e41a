"""Shortcut audit of the pseudo-fakes: writes plots/sbi_audit.png (real vs fake statistics + example pairs).

    python stages/sbi_audit.py [--pairs 100] [--examples 3] [--dataset-dir data/preprocessed/demo]
                               [--temporal-pairs 100] [--out plots/sbi_audit.png] [--json metrics/sbi_audit.json]

Pairs come from the training dataset (``VideoSBIDataset``, Phase A flags of ``params.yaml``) before
the augmentations common to real and fake; the statistics are
:func:`stfmamba.data.sbi.pair_statistics` inside the blended face and
:func:`stfmamba.data.sbi.temporal_statistics` (frame-to-frame change outside the mask, which must be
the real's, and inside it). Histograms of real vs fake should overlap: a fake-only shift is a
shortcut the detector can learn instead of blending artefacts (tests/training/test_sbi_audit.py
asserts the bounds).

The temporal pseudo-fake family (:mod:`stfmamba.data.temporal`) is audited separately, each kind of
``training.temporal_fake_kinds`` on its own (``--temporal-pairs`` pairs drawn with that kind only),
whether ``features.use_temporal_fakes`` is on or not, so it can be checked before it is trained on:
``metrics/sbi_audit.json`` key ``temporal.<kind>`` and one row of the plot per kind
(tests/training/test_temporal_audit.py asserts its bounds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stfmamba.config import load_params  # noqa: E402
from stfmamba.data.dataset import VideoSBIDataset  # noqa: E402
from stfmamba.data.sbi import pair_statistics, temporal_statistics  # noqa: E402
from stfmamba.data.temporal import TemporalConfig  # noqa: E402
from stfmamba.io import atomic_path, write_json  # noqa: E402

LABELS = {"dup": "duplicated pixels in texture", "block": "8x8 blockiness", "lap": "Laplacian variance",
          "bright": "mean luma", "noise": "median-filter residual",
          "tdiff_out": "frame-to-frame change outside mask", "tdiff_in": "frame-to-frame change in face core"}


def statistics(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per (real, fake, mask) pair: :func:`pair_statistics` and :func:`temporal_statistics`."""
    with warnings.catch_warnings():               # a small region without any 8x8 boundary: NaN blockiness
        warnings.simplefilter("ignore", RuntimeWarning)
        return pd.DataFrame([pair_statistics(*pr) | temporal_statistics(*pr) for pr in pairs])


def summary(stats: pd.DataFrame) -> dict:
    """Per statistic: median fake/real ratio and fraction of pairs whose fake is above its real
    (pairs where the statistic is undefined, e.g. no 8x8 boundary in a small region, are left out)."""
    out = {}
    for k in LABELS:
        ok = stats[f"fake_{k}"].notna() & stats[f"real_{k}"].notna()
        f, r = stats[f"fake_{k}"][ok], stats[f"real_{k}"][ok]
        ratio = (f / r)[r > 0]
        enough = len(r) > 0 and len(ratio) >= len(r) / 2
        out[k] = {"median_ratio": round(float(np.median(ratio)), 4) if enough else None,
                  "fake_above": float((f > r).mean()) if len(r) else None,
                  "real_median": float(r.median()) if len(r) else None,
                  "fake_median": float(f.median()) if len(r) else None}
    out["dup"]["traced_pairs"] = float(((stats.fake_dup - stats.real_dup) >= 0.01).mean())   # as the audit test
    d = (stats.fake_tdiff_out - stats.real_tdiff_out).abs()
    out["tdiff_out"]["max_abs_diff"] = float(d.max()) if d.notna().any() else None      # 0: no flicker outside
    return out


def temporal_pairs(ds: VideoSBIDataset, kind: str, n: int) -> tuple[list, float]:
    """``n`` pairs of ``ds``'s items made by temporal ``kind`` only (before the common augmentation),
    and the fraction of draws the kind declined (a still region: the dataset made a Video-SBI fake)."""
    ds.temporal = TemporalConfig(prob=1.0, kinds=(kind,))
    out, tries = [], 0
    while len(out) < n and tries < len(ds.items):         # one fresh seed per index
        info = ds.pair_info(tries, common_aug=False)
        tries += 1
        if info["kind"] == kind:
            out.append((info["real"], info["fake"], info["mask"]))
    return out, 1.0 - len(out) / max(tries, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset-dir", default=None)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--temporal-pairs", type=int, default=100, help="pairs per temporal kind (0 = skip the family)")
    ap.add_argument("--out", type=Path, default=Path("plots/sbi_audit.png"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    p = load_params(args.params)
    if args.dataset_dir:
        ddir = Path(args.dataset_dir)
        p = dataclasses.replace(p, data=dataclasses.replace(p.data, preprocessed_dir=str(ddir.parent), train=ddir.name))
    ds = VideoSBIDataset.from_params(p, "train", True)
    ds.temporal = None                                                    # the Video-SBI rows: SBI fakes only
    ds.items = [ds.items[i % len(ds.items)] for i in range(args.pairs)]   # one fresh seed per index
    pairs = [ds.pair(i, common_aug=False) for i in range(len(ds))]
    stats = statistics(pairs)
    res = summary(stats)
    families = [("Video-SBI", stats, res, pairs)]
    if args.temporal_pairs > 0 and p.training.temporal_fake_kinds:
        res["temporal"] = {}
        tds = VideoSBIDataset.from_params(p, "train", True)
        tds.items = [tds.items[i % len(tds.items)] for i in range(4 * args.temporal_pairs)]
        for kind in p.training.temporal_fake_kinds:
            kp, declined = temporal_pairs(tds, kind, args.temporal_pairs)
            ks = statistics(kp)
            res["temporal"][kind] = summary(ks) | {"pairs": len(kp), "declined": round(declined, 4)}
            families.append((kind, ks, res["temporal"][kind], kp))

    n_ex = min(args.examples, len(pairs))
    n_t = len(families) - 1
    cols = len(LABELS)
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * len(families) + 1.9 * (n_ex + n_t) + 0.6))
    grid = fig.add_gridspec(len(families) + n_ex + n_t, cols)
    for row, (fam, st, rs, _) in enumerate(families):
        for c, k in enumerate(LABELS):
            ax = fig.add_subplot(grid[row, c])
            vals = st[[f"real_{k}", f"fake_{k}"]].to_numpy()
            vals = vals[np.isfinite(vals).all(1)]
            if len(vals):
                lo, hi = np.percentile(vals, [1, 99])
                for j, (name, col) in enumerate((("real", "tab:blue"), ("fake", "tab:red"))):
                    ax.hist(np.clip(vals[:, j], lo, hi), bins=25, alpha=0.5, color=col, label=name)
            above = "n/a" if rs[k]["fake_above"] is None else f"{rs[k]['fake_above']:.0%}"
            ax.set_title(f"{fam}: {LABELS[k]}\nfake>real {above}, median ratio {rs[k]['median_ratio']}", fontsize=7)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.legend(fontsize=6)
    examples = [(f"SBI pair {r}", pairs[r]) for r in range(n_ex)] + [(fam, fp[0]) for fam, _, _, fp in families[1:] if fp]
    for r, (name, (real, fake, mask)) in enumerate(examples):
        diff = np.abs(fake.astype(np.int16) - real.astype(np.int16)).sum(-1)
        panels = [(real[0], "real t=0"), (fake[0], "fake t=0"), (mask[0], "mask t=0")]
        panels += [(diff[t] / max(1, diff.max()), f"|fake-real| t={t}") for t in range(min(len(diff), cols - 3))]
        for c, (img, title) in enumerate(panels):
            ax = fig.add_subplot(grid[len(families) + r, c])
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=None if img.ndim == 3 else 1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {title}", fontsize=7)
    fig.suptitle(f"Pseudo-fake shortcut audit: {len(pairs)} Video-SBI pairs"
                 + (f" + {args.temporal_pairs} per temporal kind" if n_t else "")
                 + f" of {ds.dataset_dir.name}, before common augmentation", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(json.dumps(res, indent=1))
    if args.json:
        write_json(args.json, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
