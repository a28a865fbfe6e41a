"""Eye check of Video-SBI: writes plots/sbi_samples.png (real / fake / mask / |fake - real| over time).

    python stages/sbi_samples.py [--clips 3] [--frames 6] [--dataset-dir data/preprocessed/demo] [--out plots/sbi_samples.png]
                                 [--kind sbi|region_retime|blend_ramp|feature_drift]

``--kind`` shows a temporal pseudo-fake kind (:mod:`stfmamba.data.temporal`) instead of Video-SBI,
made from the clip's whole run as in training; a clip the kind declines (a still region) shows its
Video-SBI fake, and the row label says so. For the temporal kinds look at the difference row over
time: it should change from frame to frame inside the region and stay black outside it.

Uses the train reals of ``params.data.train`` and the Phase A training flags (drift kind, TPS,
compression); one seed per clip, as in training. The real row is SBI's target (with p = 1/2 it
carries the colour / sharpness transform). Look at it: the fake should differ from the real only
inside a soft face-shaped region, the boundary should move slightly over time (drift),
and real and fake should carry the same common augmentation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stfmamba.config import load_params  # noqa: E402
from stfmamba.data.augment import PairAugConfig, augment_pair  # noqa: E402
from stfmamba.data.clips import random_clip_start  # noqa: E402
from stfmamba.config import TEMPORAL_FAKE_KINDS  # noqa: E402
from stfmamba.data.dataset import sbi_config  # noqa: E402
from stfmamba.data.manifest import load_npz, read_manifest  # noqa: E402
from stfmamba.data.sbi import self_blend_clip  # noqa: E402
from stfmamba.data.temporal import ClipContext, TemporalConfig, temporal_fake_clip  # noqa: E402
from stfmamba.io import atomic_path  # noqa: E402


def sample_rows(frames: np.ndarray, lms: np.ndarray, seed: int, features, qp: tuple[int, int],
                kind: str = "sbi", context: ClipContext | None = None) -> tuple[list[np.ndarray], str]:
    """Real, fake, mask and difference clips of one real clip (pure; ``frames: (T, H, W, 3)``), and
    the kind that made the fake (``kind``, or ``"sbi"`` when a temporal kind declined the clip)."""
    rng = np.random.default_rng(seed)
    res, made = None, "sbi"
    if kind != "sbi":
        res = temporal_fake_clip(frames, lms, rng, TemporalConfig(prob=1.0, kinds=(kind,)), kind=kind,
                                 sbi=sbi_config(features), context=context)
        made = kind if res is not None else "sbi"
    if res is None:
        res = self_blend_clip(frames, lms, rng, sbi_config(features))
    real, fake, _ = augment_pair(res.real, res.fake, rng, PairAugConfig(compression=features.use_compression_aug,
                                                                     qp_min=qp[0], qp_max=qp[1]))
    diff = np.abs(fake.astype(np.int16) - real.astype(np.int16)).sum(-1).astype(np.float32)
    return [real, fake, res.mask, diff / max(1.0, diff.max())], made


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset-dir", default=None)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("plots/sbi_samples.png"))
    ap.add_argument("--kind", default="sbi", choices=("sbi", *TEMPORAL_FAKE_KINDS),
                    help="Video-SBI (default) or a temporal pseudo-fake kind")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    ddir = Path(args.dataset_dir or Path(p.data.preprocessed_dir) / p.data.train)
    df = read_manifest(ddir)
    rows = df[(df.status == "ok") & (df.label == 0) & (df.split == "train")].head(args.clips)
    if rows.empty:
        raise SystemExit(f"{ddir / 'manifest.csv'}: no ok train reals to show; run the preprocess stage")
    pp, t = p.preprocess, p.model.num_frames
    names = ["real", "fake", "mask", "|fake-real|"]
    n_f = min(args.frames, t)
    fig, axes = plt.subplots(len(rows) * 4, n_f, figsize=(1.6 * n_f, 1.6 * 4 * len(rows)), squeeze=False)
    for c, row in enumerate(rows.itertuples()):
        d = load_npz(ddir / row.npz)
        rng = np.random.default_rng(c)
        s = random_clip_start(rng, pp.num_segments, pp.frames_per_segment, t)
        run = (s // pp.frames_per_segment) * pp.frames_per_segment
        ctx = ClipContext(d["frames"][run:run + pp.frames_per_segment], d["landmarks"][run:run + pp.frames_per_segment],
                          s - run)
        clips, made = sample_rows(d["frames"][s:s + t], d["landmarks"][s:s + t], 1000 + c, p.features,
                                  (p.training.qp_min, p.training.qp_max), args.kind, ctx)
        for r, (name, clip) in enumerate(zip(names, clips)):
            for k in range(n_f):
                ax = axes[c * 4 + r, k]
                ax.imshow(clip[k], cmap=None if clip.ndim == 4 else "gray", vmin=0, vmax=None if clip.ndim == 4 else 1)
                ax.set_xticks([]), ax.set_yticks([])
                if k == 0:
                    ax.set_ylabel(f"{row.video_id} ({made})\n{name}" if r == 0 else name, fontsize=7)
                if c == 0 and r == 0:
                    ax.set_title(f"t={k}", fontsize=7)
    title = "Video-SBI" if args.kind == "sbi" else f"Temporal pseudo-fake '{args.kind}'"
    fig.suptitle(f"{title} samples ({ddir.name}; drift={sbi_config(p.features).drift}, "
                 f"H.264={'on' if p.features.use_compression_aug else 'off'})", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
