"""Torch dataset of Video-SBI pairs: each item is a real clip and its self-blended fake.

Built from the preprocess manifest (``data/preprocessed/<dataset>/manifest.csv``): rows with
``status == ok``, ``label == 0`` and the requested split. Every npz is checked when the dataset is
built (keys, shapes, frame count — by reading the npy headers only, no pixel decoding); a broken
one is reported in :attr:`VideoSBIDataset.excluded` and logged, never swapped for another video at
``__getitem__``.

Training items draw a random clip window (:func:`~stfmamba.data.clips.random_clip_start`) and a
fresh SBI fake per epoch; validation items are fixed: every non-overlapping window of every run
(:func:`~stfmamba.data.clips.clip_starts`) with a fake seeded by ``(seed, index)``, and no common
augmentation — so the validation AUC of two epochs is comparable.

Item: ``{"x": (2, 3, T, H, W) uint8 (real, fake), "y": (2,) int64 = (0, 1), "index": int}``. The clips
stay uint8 until they reach the device, where :func:`normalize_clips` turns them into the model's
ImageNet-normalised floats (exactly what :func:`~stfmamba.data.clips.frames_to_tensor` computes):
a quarter of the bytes through the loader's shared memory and host-to-GPU copies, and no float
work in the loader workers.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stfmamba.config import ConfigError, Params
from stfmamba.data.augment import PairAugConfig, augment_pair, build_pair_transform
from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, clip_starts, random_clip_start
from stfmamba.data.manifest import load_npz, read_manifest
from stfmamba.data.sbi import SBIConfig, build_source_transform, self_blend_clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a preprocessed video."""
    num_segments: int       # runs per video (preprocess.num_segments)
    frames_per_segment: int  # frames per run (preprocess.frames_per_segment)
    num_frames: int         # model clip length T (model.num_frames)
    img_size: int           # model input side (model.img_size)

    @property
    def n_total(self) -> int:
        return self.num_segments * self.frames_per_segment


def _npy_shape(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return shape, dtype


def check_npz(path: Path, spec: ClipSpec) -> str | None:
    """Why ``path`` cannot feed training (``None`` if it can). Reads only the array headers.

    Args:
        path: the video's npz.
        spec: the clip layout it must match.

    Returns:
        A reason string naming the problem, or ``None``.
    """
    if not path.is_file():
        return "npz missing"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for key in ("frames", "landmarks"):
                if f"{key}.npy" not in names:
                    return f"key '{key}' missing"
            fshape, fdtype = _npy_shape(zf, "frames")
            lshape, _ = _npy_shape(zf, "landmarks")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        return f"unreadable npz ({type(err).__name__}: {err})"
    if len(fshape) != 4 or fshape[-1] != 3 or fdtype != np.uint8:
        return f"frames must be (N, H, W, 3) uint8, got {fshape} {fdtype}"
    if fshape[0] != spec.n_total:
        return f"{fshape[0]} frames, expected num_segments*frames_per_segment = {spec.n_total}"
    if min(fshape[1:3]) < spec.img_size:
        return f"crops {fshape[1]}x{fshape[2]} are smaller than model.img_size={spec.img_size}"
    if lshape != (fshape[0], 68, 2):
        return f"landmarks shape {lshape}, expected ({fshape[0]}, 68, 2)"
    return None


class VideoSBIDataset(Dataset):
    """Real clips of one split with their Video-SBI fakes.

    Args:
        dataset_dir: ``data/preprocessed/<dataset>`` (holds ``manifest.csv``).
        split: ``train`` or ``val``.
        spec: clip layout.
        sbi: Video-SBI knobs.
        aug: pair augmentation, or ``None`` (validation).
        train: random clips (True) or fixed seeded clips (False).
        clips_per_video: items per video per epoch in training.
        seed: base seed of every per-clip generator.
    """

    def __init__(self, dataset_dir: str | Path, split: str, spec: ClipSpec, sbi: SBIConfig = SBIConfig(),
                 aug: PairAugConfig | None = None, train: bool = True, clips_per_video: int = 1, seed: int = 0):
        self.dataset_dir = Path(dataset_dir)
        self.split, self.spec, self.sbi, self.aug = split, spec, sbi, aug
        self.train, self.clips_per_video, self.seed = train, clips_per_video, seed
        self.epoch = 0
        df = read_manifest(self.dataset_dir)
        rows = df[(df.status == "ok") & (df.label == 0) & (df.split == split)]
        self.excluded: list[tuple[str, str]] = []
        videos = []
        for row in rows.itertuples():
            reason = check_npz(self.dataset_dir / row.npz, spec)
            if reason:
                self.excluded.append((row.video_id, reason))
                log.warning("excluded %s (%s): %s", row.video_id, self.dataset_dir / row.npz, reason)
            else:
                videos.append((row.video_id, self.dataset_dir / row.npz))
        if not videos:
            raise ConfigError(
                f"{self.dataset_dir / 'manifest.csv'}: no usable real videos in split '{split}' "
                f"({len(rows)} listed, {len(self.excluded)} excluded: {self.excluded[:3]}); "
                "re-run preprocess or check data.train / the splits")
        self.videos = videos
        if train:
            self.items = [(v, None) for v in range(len(videos)) for _ in range(clips_per_video)]
        else:
            starts = clip_starts(spec.num_segments, spec.frames_per_segment, spec.num_frames)
            self.items = [(v, s) for v in range(len(videos)) for s in starts]
        self._src_tf = None
        self._pair_tf = None

    @classmethod
    def from_params(cls, params: Params, split: str, train: bool, features=None) -> "VideoSBIDataset":
        """The dataset of ``params.data.train`` for ``split`` (``features`` default: ``params.features``)."""
        f = features or params.features
        spec = ClipSpec(params.preprocess.num_segments, params.preprocess.frames_per_segment,
                        params.model.num_frames, params.model.img_size)
        sbi = sbi_config(f)
        tr = params.training
        aug = PairAugConfig(compression=f.use_compression_aug, qp_min=tr.qp_min, qp_max=tr.qp_max) if train else None
        return cls(Path(params.data.preprocessed_dir) / params.data.train, split, spec, sbi, aug, train,
                   tr.clips_per_video, tr.seed)

    def set_epoch(self, epoch: int) -> None:
        """Training draws new clips and fakes each epoch (seeded by ``(seed, epoch, index)``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        key = (self.seed, self.epoch, index) if self.train else (self.seed, 10**6, index)
        return np.random.default_rng(key)

    def __getitem__(self, index: int) -> dict:
        vid, start = self.items[index]
        video_id, path = self.videos[vid]
        rng = self._rng(index)
        s = self.spec
        if start is None:
            start = random_clip_start(rng, s.num_segments, s.frames_per_segment, s.num_frames)
        data = load_npz(path, keys=("frames", "landmarks"))   # the keys checked when the dataset was built
        real = data["frames"][start:start + s.num_frames]
        lms = data["landmarks"][start:start + s.num_frames]
        if self._src_tf is None:
            self._src_tf, self._pair_tf = build_source_transform(), build_pair_transform()
        fake = self_blend_clip(real, lms, rng, self.sbi, self._src_tf).fake
        if self.aug is not None:
            real, fake, _ = augment_pair(real, fake, rng, self.aug, self._pair_tf)
        x = torch.from_numpy(np.stack([_resize(real, s.img_size), _resize(fake, s.img_size)]))  # (2, T, H, W, 3)
        return {"x": x.permute(0, 4, 1, 2, 3), "y": torch.tensor([0, 1]), "index": index}     # (2, 3, T, H, W)


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T, size, size, 3)`` (area interpolation, as frames_to_tensor)."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    import cv2
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def normalize_clips(x: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``(..., 3, T, H, W)`` -> float32 ImageNet-normalised (on ``x``'s device).

    Equals :func:`~stfmamba.data.clips.frames_to_tensor` applied per clip.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1, 1)
    return (x.float().div_(255.0) - mean) / std


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker (torch already uses one there)."""
    import cv2
    cv2.setNumThreads(1)


def sbi_config(features) -> SBIConfig:
    """Video-SBI knobs from the feature flags (drift kind, TPS)."""
    return SBIConfig(drift="multiscale" if features.use_multiscale_drift else "brownian", use_tps=features.use_tps)

