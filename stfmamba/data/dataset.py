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

With ``features.use_temporal_fakes`` a fraction ``training.temporal_fake_prob`` of the fakes comes
from the temporal family (:mod:`stfmamba.data.temporal`) instead of Video-SBI, the kind drawn per
clip from the same per-clip generator. With the flag off nothing is drawn for it and every item is
what it was before. Items carry ``"frame_y": (2, T) float32``: the real's zeros and the fake's
per-frame manipulation strength (a Video-SBI fake: each frame's peak blend ratio; a temporal fake:
its ``frame_target``), the target of ``training.frame_target_weight``, and ``"temporal_fake": (2,) bool``
(False for the real; for the fake whether it is a temporal kind, what ``training.stf_stream_fakes`` reads).

With ``model.mouth_stream`` (``mouth_size``) items also carry ``"mouth": (2, 3, T, s, s) uint8``: the
mouth clips of the real and of the fake, cut by :func:`~stfmamba.data.clips.mouth_clip` (the
evaluation engine's function) from the final (augmented) frames with the same landmarks, moved
with the common augmentation's zoom / shift / flip — identical cropping for the real and its fake.

Item: ``{"x": (2, 3, T, H, W) uint8 (real, fake), "y": (2,) int64 = (0, 1), "index": int}``. The clips
stay uint8 until they reach the device, where :func:`normalize_clips` (with the model's own mean / std,
``model.data_config``) turns them into floats. Resizing and normalisation are the crop contract of
:mod:`stfmamba.data.clips` (:func:`~stfmamba.data.clips.model_clip`), shared with evaluation:
a quarter of the bytes through the loader's shared memory and host-to-GPU copies, and no float
work in the loader workers.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stfmamba.config import ConfigError, Params
from stfmamba.data.augment import PairAugConfig, augment_pair, pair_transform_for
from stfmamba.data.clips import (ClipSpec, clip_starts, model_clip, model_mask, mouth_clip, normalize_clips,
                                 random_clip_start)
from stfmamba.data.manifest import load_npz, read_manifest
from stfmamba.data.sbi import SBIConfig, build_source_transform, self_blend_clip
from stfmamba.data.temporal import ClipContext, TemporalConfig, temporal_fake_clip

log = logging.getLogger(__name__)


def _npy_shape(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return shape, dtype


def check_npz_header(path: Path, spec: ClipSpec) -> str | None:
    """Why ``path`` cannot feed training (``None`` if it can). Reads only the array headers.

    Cheap, run on every video when the dataset is built: keys, frame count, crop size. The full
    contract check of the arrays' values is :func:`stfmamba.data.verify.check_npz_arrays` (verify stage).

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
    if fshape[0] != spec.stored_frames:
        return f"{fshape[0]} frames, expected num_segments*frames_per_segment = {spec.stored_frames}"
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
        temporal: the temporal pseudo-fake family, or ``None`` (Video-SBI only).
        mouth_size: side of the items' mouth clips (``model.mouth_size`` with ``model.mouth_stream``),
            or ``None``: no mouth clips.
    """

    def __init__(self, dataset_dir: str | Path, split: str, spec: ClipSpec, sbi: SBIConfig = SBIConfig(),
                 aug: PairAugConfig | None = None, train: bool = True, clips_per_video: int = 1, seed: int = 0,
                 temporal: TemporalConfig | None = None, mouth_size: int | None = None):
        self.dataset_dir = Path(dataset_dir)
        self.mouth_size = mouth_size
        self.split, self.spec, self.sbi, self.aug = split, spec, sbi, aug
        self.temporal = temporal
        self.train, self.clips_per_video, self.seed = train, clips_per_video, seed
        self.epoch = 0
        df = read_manifest(self.dataset_dir)
        rows = df[(df.status == "ok") & (df.label == 0) & (df.split == split)]
        self.excluded: list[tuple[str, str]] = []
        videos = []
        for row in rows.itertuples():
            reason = check_npz_header(self.dataset_dir / row.npz, spec)
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
    def from_params(cls, params: Params, split: str, train: bool, features=None, model=None,
                    training=None) -> "VideoSBIDataset":
        """The dataset of ``params.data.train`` for ``split``.

        ``features`` / ``model`` (clip length and size) / ``training`` (clips per video, QP range,
        seed) default to ``params.features`` / ``params.model`` / ``params.training``; the trainer
        passes its phase's config (e.g. single frames for the frame baseline).
        """
        f = features or params.features
        m = model or params.model
        spec = ClipSpec(params.preprocess.num_segments, params.preprocess.frames_per_segment, m.num_frames, m.img_size)
        sbi = sbi_config(f)
        tr = training or params.training
        aug = PairAugConfig(compression=f.use_compression_aug, qp_min=tr.qp_min, qp_max=tr.qp_max,
                            downscale_prob=tr.downscale_prob, downscale_range=tuple(tr.downscale_range),
                            downscale_before_codec=tr.downscale_before_codec) if train else None
        mouth = m.mouth_size if m.mouth_stream and not m.frame_level else None
        return cls(Path(params.data.preprocessed_dir) / params.data.train, split, spec, sbi, aug, train,
                   tr.clips_per_video, tr.seed, temporal_config(f, tr), mouth)

    def set_epoch(self, epoch: int) -> None:
        """Training draws new clips and fakes each epoch (seeded by ``(seed, epoch, index)``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        key = (self.seed, self.epoch, index) if self.train else (self.seed, 10**6, index)
        return np.random.default_rng(key)

    def pair(self, index: int, common_aug: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(real, fake, mask)`` of item ``index`` (:meth:`pair_info` without the extras)."""
        info = self.pair_info(index, common_aug)
        return info["real"], info["fake"], info["mask"]

    def pair_info(self, index: int, common_aug: bool = True) -> dict:
        """Item ``index`` at the stored crop size, before resizing to the model input.

        Args:
            index: item index.
            common_aug: apply the augmentations shared by real and fake (when the dataset has any).

        Returns:
            ``{"real", "fake", "mask", "frame_target", "kind", "landmarks"}``: ``(T, S, S, 3)`` uint8 twice, the
            effective blend mask ``(T, S, S)`` float32 (after the common augmentation's zoom, shift
            and flip when ``common_aug``), the fake's per-frame strength ``(T,)`` float32 and the
            fake's kind (``"sbi"`` or a key of :data:`~stfmamba.data.temporal.TEMPORAL_KINDS`) and the
            clip's ``(T, 68, 2)`` landmarks in the returned frames' pixels (moved with the common
            augmentation when the dataset has a mouth stream; the stored ones otherwise).
            Before the common augmentation the fake equals the real exactly wherever ``mask == 0``.
        """
        vid, start = self.items[index]
        video_id, path = self.videos[vid]
        rng = self._rng(index)
        s = self.spec
        if start is None:
            start = random_clip_start(rng, s.num_segments, s.frames_per_segment, s.num_frames)
        data = load_npz(path, keys=("frames", "landmarks"))   # the keys checked when the dataset was built
        frames = data["frames"][start:start + s.num_frames]
        lms = data["landmarks"][start:start + s.num_frames]
        if self._src_tf is None:
            self._src_tf = build_source_transform()
            aug = self.aug or PairAugConfig()
            self._pair_tf = pair_transform_for(aug, keypoints=self.mouth_size is not None)
        res, kind = None, "sbi"
        if self.temporal is not None and rng.random() < self.temporal.prob:   # no draw when the family is off
            run = (start // s.frames_per_segment) * s.frames_per_segment      # the run the clip is cut from
            ctx = ClipContext(data["frames"][run:run + s.frames_per_segment],
                              data["landmarks"][run:run + s.frames_per_segment], start - run)
            res = temporal_fake_clip(frames, lms, rng, self.temporal, sbi=self.sbi, context=ctx,
                                     transform=self._src_tf)
            kind = res.kind if res is not None else "sbi"       # declined (still region): Video-SBI instead
        if res is None:
            res = self_blend_clip(frames, lms, rng, self.sbi, self._src_tf)
            target = res.mask.reshape(len(frames), -1).max(1).astype(np.float32)
        else:
            target = res.frame_target
        real, fake = res.real, res.fake          # the real is SBI's target (it may carry the colour transform)
        mask = res.mask
        if common_aug and self.aug is not None:
            track = self.mouth_size is not None   # the mouth box follows the augmented frames
            real, fake, info = augment_pair(real, fake, rng, self.aug, self._pair_tf, mask=mask,
                                            **({"landmarks": lms} if track else {}))
            mask = info["mask"]
            lms = info["landmarks"] if track else lms
        return {"real": real, "fake": fake, "mask": mask, "frame_target": target, "kind": kind, "landmarks": lms}

    def __getitem__(self, index: int) -> dict:
        s = self.spec
        info = self.pair_info(index)
        real, fake, mask = info["real"], info["fake"], info["mask"]
        x = torch.from_numpy(np.stack([model_clip(real, s.img_size), model_clip(fake, s.img_size)]))  # (2, T, H, W, 3)
        m = torch.from_numpy(model_mask(mask, s.img_size))                                    # (T, H, W)
        item = {"x": x.permute(0, 4, 1, 2, 3), "y": torch.tensor([0, 1]), "index": index,     # (2, 3, T, H, W)
                "mask": torch.stack([torch.zeros_like(m), m])}                                # (2, T, H, W): real = 0
        ft = torch.from_numpy(np.asarray(info["frame_target"], np.float32))                  # per-frame targets
        item["frame_y"] = torch.stack([torch.zeros_like(ft), ft])                             # (2, T): real = 0
        item["temporal_fake"] = torch.tensor([False, info["kind"] != "sbi"])                # (2,): a temporal kind
        if self.mouth_size is not None:   # same landmarks, same box for the real and its fake
            lms = info["landmarks"]
            mouth = np.stack([mouth_clip(real, lms, self.mouth_size), mouth_clip(fake, lms, self.mouth_size)])
            item["mouth"] = torch.from_numpy(mouth).permute(0, 4, 1, 2, 3)                  # (2, 3, T, s, s)
        return item


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker (torch already uses one there)."""
    import cv2
    cv2.setNumThreads(1)


def sbi_config(features) -> SBIConfig:
    """Video-SBI knobs from the feature flags (drift kind, TPS)."""
    return SBIConfig(drift="multiscale" if features.use_multiscale_drift else "brownian", use_tps=features.use_tps)


def temporal_config(features, training) -> TemporalConfig | None:
    """The temporal pseudo-fake family from ``features.use_temporal_fakes`` and
    ``training.temporal_fake_prob`` / ``temporal_fake_kinds``; ``None`` when it is off."""
    if not features.use_temporal_fakes or training.temporal_fake_prob <= 0 or not training.temporal_fake_kinds:
        return None
    return TemporalConfig(prob=training.temporal_fake_prob, kinds=tuple(training.temporal_fake_kinds))

