"""``stfmamba predict``: is this video fake? Score video files with a trained model file.

    stfmamba predict clip.mp4 other.mov                    # models/phase_b.pt, results in predictions/
    stfmamba predict my_videos/ --model models/frame.pt --out results/frame --device cuda

Each video is scored exactly as evaluation (``python -m stfmamba.evaluation``, the DVC eval
stages) scores it, with every setting that decides the score taken from the model file's
``input`` record (:class:`~stfmamba.models.checkpoint.InputSpec`): the preprocessing (crop_size,
margin, detect_scale, num_segments, frames_per_segment, min_face_px, min_frames, max_faces) drives
:func:`stfmamba.data.preprocess.process_faces` (sampled runs, dlib face + landmarks, still square
crops, up to ``max_faces`` face tracks), and the crops become model input through the evaluation
engine's path (:func:`stfmamba.evaluation.engine.video_clips`: ``clip_frames``-frame windows of
every run, at most ``max_clips_per_video`` of them evenly spaced, :func:`~stfmamba.data.clips.model_clip`
resize; then the model's recorded mean / std, :class:`~stfmamba.data.clips.Normalize`; a model with a
mouth stream also gets each clip's mouth clip, :func:`~stfmamba.data.clips.mouth_clip` with the face
track's landmarks, :func:`stfmamba.evaluation.engine.video_mouth_clips`). A clip's
score is its fake probability (softmax class 1); the video's score is the max over its faces of
the mean over that face's clips (SBI's protocol). A frame model (``input.scoring.frame_level``,
e.g. ``models/frame.pt``) scores single frames: ``max_clips_per_video`` evenly spaced frames
(``baseline.eval_frames`` at training). ``--clips-per-video`` (video models) and ``--frames``
(frame models) override the recorded count, and say so. A model file written before some of
these were recorded takes the previous behaviour for them, with a warning: every window of a video
model, 16 frames of a frame model, the :class:`~stfmamba.config.PreprocessConfig` defaults for
unrecorded preprocessing (``max_faces`` 4, ...), a frame model when ``model.arch`` is not
``stfmamba``, ImageNet mean / std.

Outputs in ``--out``: ``predictions.csv`` (one row per video: fake_prob, status, reason, number
of clips, faces, face_probs), ``clips.csv`` (one row per clip: frames, time, fake_prob, face),
``predictions.json`` (both, plus the model and the settings used) and ``<video>.png`` (a thumbnail
per face track with its score, next to the fake probability over time, one line per face). A video that cannot be scored (not a video, no face, too short) is
reported on stderr and listed with its reason and an empty score — never a made-up 0.5.

Exit status: 0 every video scored, 1 some could not be scored, 2 usage or model file error.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stfmamba.io import atomic_open, atomic_path, write_json

__all__ = ["VIDEO_EXTENSIONS", "ClipScore", "Prediction", "collect_videos", "model_preprocess", "Scorer",
           "predict_video", "plot_prediction", "write_outputs", "main", "cli"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


class UsageError(ValueError):
    """Bad arguments or an unusable model file (exit status 2)."""


@dataclass
class ClipScore:
    """One scored clip of a video."""
    start_frame: int    # source frame index of the clip's first frame
    end_frame: int      # source frame index of its last frame
    time_s: float       # time of its middle frame (s); NaN when the video has no frame rate
    fake_prob: float
    face: int = 0       # face track (0 = the largest face)


@dataclass
class Prediction:
    """The result for one input file (``fake_prob`` None when it could not be scored)."""
    video: str          # unique name in this run (file stem, suffixed on clashes); names the PNG
    path: str
    status: str = "failed"   # ok | failed
    reason: str = ""
    fake_prob: float | None = None
    clips: list[ClipScore] = field(default_factory=list)
    plot: str | None = None
    face_probs: list[float] = field(default_factory=list)   # mean over each face track's clips (face 0 first)


# --------------------------------------------------------------------------- inputs
def collect_videos(inputs: list[str]) -> list[Path]:
    """Files named on the command line, and the video files (by extension) directly inside folders.

    A named file is kept whatever its extension or state (a missing or broken file is reported as
    not scored, not skipped).

    Raises:
        UsageError: a folder holds no video file.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise UsageError(f"{p}: no video files in this folder (extensions {', '.join(VIDEO_EXTENSIONS)})")
            out += found
        else:
            out.append(p)
    return out


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        stem = p.stem or "video"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        names.append(stem if n == 0 else f"{stem}_{n + 1}")
    return names


def model_preprocess(spec, model_path: str | Path):
    """The :class:`~stfmamba.config.PreprocessConfig` recorded in a model file (in-process, one shard);
    settings an old file does not record take the built-in defaults.

    Args:
        spec: the model file's :class:`~stfmamba.models.checkpoint.InputSpec`.

    Raises:
        UsageError: the model file records no preprocessing (written before model files carried it).
    """
    from stfmamba.config import PreprocessConfig
    if not spec.preprocess:
        raise UsageError(f"{model_path}: the model file does not record the preprocessing it was trained with, so "
                         "its videos cannot be prepared the same way; re-save it with "
                         "stfmamba.models.checkpoint.save_model_file(..., preprocess=params.preprocess) or retrain it")
    return spec.preprocess_config(PreprocessConfig(workers=0, shard_index=0, num_shards=1))


# --------------------------------------------------------------------------- scoring
class Scorer:
    """A model and its input spec: ``(N, S, S, 3)`` uint8 crops -> per-clip fake probabilities.

    Args:
        model: the detector (``forward(x: (B, 3, T, H, W)) -> {"logits": (B, 2), ...}``).
        spec: its model file's :class:`~stfmamba.models.checkpoint.InputSpec` (clip length and size,
            clips per video, normalisation; a frame model gets clips of one frame).
        pre: the preprocessing the crops come from (runs per video, frames per run).
        device: torch device.
        amp: ``auto`` / ``bf16`` / ``off`` (:func:`stfmamba.evaluation.engine.autocast_for`).
        batch_size: clips per forward pass.
    """

    def __init__(self, model, spec, pre, device, amp: str, batch_size: int):
        self.frame_level, self.norm = spec.frame_level, spec.norm
        self.spec = spec.clip_spec(pre)
        self.model, self.device, self.amp, self.batch_size = model.to(device).eval(), device, amp, batch_size

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
        """Score the evaluation clips of one video.

        Args:
            frames: ``(N, S, S, 3)`` uint8 RGB crops (``N = num_segments * frames_per_segment``).
            landmarks: ``(N, 68, 2)`` landmarks in crop pixels (needed by a model with a mouth stream).

        Returns:
            ``(starts, probs)``: each clip's first index into ``frames`` and its fake probability ``(K,)``.

        Raises:
            ValueError: no clip fits, or the model output is not finite (the reason).
        """
        import torch
        from stfmamba.evaluation.engine import clip_probs, video_clips, video_mouth_clips
        clips = video_clips(frames, self.spec)            # (K, 3, T, H, W) uint8
        mouths = None if self.spec.mouth_size is None else video_mouth_clips(frames, landmarks, self.spec)
        probs = []
        with torch.no_grad():
            for i in range(0, len(clips), self.batch_size):
                sl = slice(i, i + self.batch_size)
                probs.append(clip_probs(self.model, clips[sl], self.norm, self.device, self.amp,
                                        None if mouths is None else mouths[sl]))   # (B,)
        p = np.concatenate(probs).astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError("non-finite model output")
        return self.spec.starts(), p


def predict_video(path: Path, name: str, pre, scorer: Scorer) -> tuple[Prediction, list, list[int]]:
    """Preprocess and score every face track of one video; never raises for a bad video.

    Returns:
        ``(prediction, faces, starts)``: the :class:`Prediction` (``failed`` with a reason when
        the video could not be scored; ``fake_prob`` the max over faces of the mean over clips),
        the :class:`~stfmamba.data.preprocess.FaceClip` of each face (empty on failure) and each
        clip's first index into a face's ``frames``.
    """
    from stfmamba.data.preprocess import process_faces
    from stfmamba.data.video import VideoError   # FaceError is a VideoError
    pred = Prediction(video=name, path=str(path))
    try:
        faces = process_faces(path, pre)
        scored = [scorer(fc.frames, fc.landmarks) for fc in faces]
    except VideoError as err:
        pred.reason = f"{err.reason}: {err.detail}" if err.detail else err.reason
        return pred, [], []
    except ValueError as err:
        pred.reason = str(err)
        return pred, [], []
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the others; reported with its type
        pred.reason = f"error: {type(err).__name__}: {err}"
        return pred, [], []
    fps = float(getattr(faces[0], "fps", 0.0) or 0.0)
    T = scorer.spec.num_frames
    for f, (fc, (starts, probs)) in enumerate(zip(faces, scored)):
        idx = np.asarray(fc.frame_idx)
        for s, p in zip(starts, probs):
            mid = float(idx[s:s + T].mean())
            pred.clips.append(ClipScore(int(idx[s]), int(idx[s + T - 1]), mid / fps if fps > 0 else math.nan,
                                        float(p), f))
        pred.face_probs.append(float(np.mean(probs)))
    pred.status, pred.fake_prob = "ok", max(pred.face_probs)
    return pred, faces, list(scored[0][0])


# --------------------------------------------------------------------------- outputs
def plot_prediction(png: Path, pred: Prediction, faces: list, starts: list[int], num_frames: int) -> None:
    """A thumbnail per face track (the middle frame of its most fake-looking clip, with its score)
    next to the clips' fake probability over time (one line per face), the video score and the 0.5 line.

    Args:
        png: output file.
        pred: a scored prediction.
        faces: its :class:`~stfmamba.data.preprocess.FaceClip` s (face 0 first).
        starts: each clip's first index into a face's ``frames``.
        num_frames: frames per clip.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(faces)
    has_time = all(math.isfinite(c.time_s) for c in pred.clips)
    fig = plt.figure(figsize=(6.5 + 2.2 * n, 3.4))
    grid = fig.add_gridspec(1, n + 1, width_ratios=[1] * n + [2.6])
    ax = fig.add_subplot(grid[0, n])
    for f, fc in enumerate(faces):
        cl = [c for c in pred.clips if c.face == f]
        probs = np.array([c.fake_prob for c in cl])
        xs = np.array([c.time_s if has_time else (c.start_frame + c.end_frame) / 2 for c in cl])
        k = min(starts[int(np.argmax(probs))] + num_frames // 2, len(fc.frames) - 1)
        ax_img = fig.add_subplot(grid[0, f])
        ax_img.imshow(fc.frames[k])
        ax_img.set_title(f"face {f}: {pred.face_probs[f]:.3f}\nframe {np.asarray(fc.frame_idx)[k]} (top clip)",
                         fontsize=9)
        ax_img.axis("off")
        order = np.argsort(xs)
        ax.plot(xs[order], probs[order], "o-", ms=3, lw=1, label=f"face {f} clips")
    ax.axhline(pred.fake_prob, color="tab:red", lw=1.2, label=f"video {pred.fake_prob:.3f}")
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)" if has_time else "frame")
    ax.set_ylabel("fake probability")
    ax.legend(loc="upper right", fontsize=8)
    verdict = "fake" if pred.fake_prob >= 0.5 else "real"
    fig.suptitle(f"{Path(pred.path).name}: P(fake) = {pred.fake_prob:.3f} ({verdict} at 0.5; max over "
                 f"{n} face{'s' if n > 1 else ''})", fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_outputs(out: Path, preds: list[Prediction], header: dict[str, Any]) -> None:
    """``predictions.csv``, ``clips.csv`` and ``predictions.json`` in ``out`` (failed videos: empty /
    null score and their reason)."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"video": p.video, "path": p.path, "status": p.status, "reason": p.reason, "fake_prob": p.fake_prob,
             "n_clips": len(p.clips), "plot": p.plot or "", "faces": len(p.face_probs),
             "face_probs": ";".join(f"{x:.6f}" for x in p.face_probs)} for p in preds]
    with atomic_open(out / "predictions.csv", "w", newline="") as fh:
        pd.DataFrame(rows, columns=["video", "path", "status", "reason", "fake_prob", "n_clips", "plot", "faces",
                                    "face_probs"]).to_csv(fh, index=False, na_rep="")
    clip_rows = [{"video": p.video, "clip": i, **dataclasses.asdict(c)} for p in preds for i, c in enumerate(p.clips)]
    with atomic_open(out / "clips.csv", "w", newline="") as fh:
        pd.DataFrame(clip_rows, columns=["video", "clip", "start_frame", "end_frame", "time_s", "fake_prob",
                                         "face"]).to_csv(fh, index=False, na_rep="")

    def plain(c: ClipScore) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in dataclasses.asdict(c).items()}
    videos = [{"video": p.video, "path": p.path, "status": p.status, "reason": p.reason, "fake_prob": p.fake_prob,
               "n_clips": len(p.clips), "plot": p.plot, "face_probs": p.face_probs,
               "clips": [plain(c) for c in p.clips]} for p in preds]
    write_json(out / "predictions.json", {**header, "videos": videos})


# --------------------------------------------------------------------------- command line
def _parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 epilog="exit status: 0 all scored, 1 some videos could not be scored, "
                                        "2 usage or model file error")
    ap.add_argument("videos", nargs="+", help="video files and/or folders (their video files, not recursive)")
    ap.add_argument("--model", "--checkpoint", dest="model", default="models/phase_b.pt",
                    help="model file (default: %(default)s)")
    ap.add_argument("--out", default="predictions", help="output folder (default: %(default)s)")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    ap.add_argument("--amp", default=None, choices=("auto", "bf16", "off"),
                    help="bf16 autocast (default: the model file's training.amp)")
    ap.add_argument("--clips-per-video", type=int, default=None,
                    help="video models: at most this many clips per video and face, evenly spaced (default: the "
                         "model file's input.scoring.max_clips_per_video, as in evaluation)")
    ap.add_argument("--frames", type=int, default=None,
                    help="frame-level models: frames scored per video, evenly spaced (default: the model file's, "
                         "baseline.eval_frames at training)")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: %(default)s)")
    return ap


def main(argv: list[str] | None = None, prog: str = "stfmamba predict") -> int:
    """Run ``stfmamba predict``; returns the exit status (0 all scored, 1 some failed, 2 usage / model error)."""
    args = _parser(prog).parse_args(argv)   # usage errors exit with status 2 (argparse)
    import torch
    from stfmamba.config import BaselineConfig, ConfigError
    from stfmamba.evaluation.run import check_input_contract, default_device
    from stfmamba.models.checkpoint import input_spec, load_model_file

    try:
        if args.batch_size < 1 or any(v is not None and v < 1 for v in (args.frames, args.clips_per_video)):
            raise UsageError("--batch-size, --frames and --clips-per-video must be at least 1")
        videos = collect_videos(args.videos)
        try:
            device = torch.device(args.device) if args.device else default_device()
        except RuntimeError as err:
            raise UsageError(f"--device {args.device}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # a missing input record is an error below
            model, cfg, meta = load_model_file(args.model, map_location="cpu")
        # an old model file without the scoring record: predict's former defaults (every window of a
        # video model, baseline.eval_frames' default for a frame model), with a warning
        spec = input_spec(meta, cfg, model_path=args.model, warn=bool(meta.get("input")),
                          fallback_max_clips={False: None, True: BaselineConfig().eval_frames})
        pre = model_preprocess(spec, args.model)
        flag, other = ("--frames", "--clips-per-video") if spec.frame_level else ("--clips-per-video", "--frames")
        if getattr(args, other.lstrip("-").replace("-", "_")) is not None:
            print(f"{prog}: {other} ignored: {args.model} is a {'frame' if spec.frame_level else 'video'} model "
                  f"(use {flag})", file=sys.stderr)
        count = args.frames if spec.frame_level else args.clips_per_video
        if count is not None:
            spec = spec.override(flag, args.model, max_clips_per_video=count)
        check_input_contract(meta, pre, cfg.model, model_path=args.model, params_path=args.model)
        scorer = Scorer(model, spec, pre, device, args.amp or cfg.training.amp, args.batch_size)
    except (UsageError, ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2

    out = Path(args.out)
    preds = []
    for path, name in zip(videos, _unique_names(videos)):
        pred, faces, starts = predict_video(path, name, pre, scorer)
        if pred.status == "ok":
            png = out / f"{name}.png"
            try:
                plot_prediction(png, pred, faces, starts, scorer.spec.num_frames)
                pred.plot = png.name
            except Exception as err:  # noqa: BLE001 - the score stands; the missing plot is reported
                print(f"{prog}: {path}: plot not written ({type(err).__name__}: {err})", file=sys.stderr)
            print(f"{pred.fake_prob:.4f}  {path}  ({len(pred.clips)} clips, {len(pred.face_probs)} "
                  f"face{'s' if len(pred.face_probs) > 1 else ''})")
        else:
            print(f"{prog}: {path}: not scored: {pred.reason}", file=sys.stderr)
        preds.append(pred)
    header = {"model": str(args.model), "arch": cfg.model.arch, "phase": meta.get("phase"),
              "describe": meta.get("describe"), "preprocess": dataclasses.asdict(pre),
              "clip": {"num_frames": scorer.spec.num_frames, "img_size": scorer.spec.img_size,
                       "max_clips_per_video": scorer.spec.max_clips_per_video, "frame_level": spec.frame_level},
              "normalize": spec.norm.as_dict(),
              "score": "video fake_prob = max over face tracks of the mean over its clips of softmax(logits)[1]"}
    write_outputs(out, preds, header)
    n_bad = sum(p.status != "ok" for p in preds)
    print(f"{len(preds) - n_bad}/{len(preds)} videos scored -> {out / 'predictions.csv'}, "
          f"{out / 'predictions.json'}" + (f"; {n_bad} not scored (listed with their reason)" if n_bad else ""))
    return 1 if n_bad else 0


COMMANDS = {"predict": main}   # subcommands of the ``stfmamba`` console script


def cli(argv: list[str] | None = None) -> int:
    """The ``stfmamba`` console script: ``stfmamba <command> ...`` (:data:`COMMANDS`)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: stfmamba {{{','.join(COMMANDS)}}} ...\n\n{__doc__.splitlines()[0]}")
            return 0
        print(f"usage: stfmamba {{{','.join(COMMANDS)}}} ...\nstfmamba: error: "
              f"{'a command is required' if not argv else f'unknown command {argv[0]!r}'}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:], prog=f"stfmamba {argv[0]}")


if __name__ == "__main__":
    sys.exit(main(prog="python -m stfmamba.predict"))
