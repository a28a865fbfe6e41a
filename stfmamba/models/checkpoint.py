"""Model files: ``{"model": state_dict, "config": to_dict(cfg), "input": {...}, "meta": {...}}`` written atomically.

``input`` is the input contract of the model: every setting that decides a video's score, which
``stfmamba predict``, ``python -m stfmamba.evaluation`` and the DVC eval stages all default to
(like timm's ``pretrained_cfg``)::

    {"preprocess": {"crop_size", "margin", "detect_scale", "num_segments", "frames_per_segment",
                    "min_face_px", "min_frames", "max_faces"},          # how the face crops are made
     "model": {"img_size", "num_frames"                                  # the training clips
               [, "mouth_stream", "mouth_size", "mouth_margin"]},        # + with a mouth stream: its input (mouth_clip)
     "scoring": {"frame_level", "clip_frames", "max_clips_per_video"},   # how a video is scored
     "normalize": {"mean", "std", "channel_order"}}                      # uint8 RGB -> model input

``scoring.frame_level`` says whether the model is a per-frame classifier (the frame baseline);
``clip_frames`` is the length of a scored clip (``model.num_frames``, 1 for a frame model) and
``max_clips_per_video`` the number of evenly spaced clips a video's score averages (per face;
``None`` = every window) — ``eval.max_clips_per_video`` for a video model, ``baseline.eval_frames``
(frames per video) for a frame model. A model with a mouth stream (``model.mouth_stream``) records
``model.mouth_stream: true`` with ``mouth_size`` and ``mouth_margin`` (:data:`MOUTH_INPUT_KEYS`): it
takes a second input, the mouth clips of :func:`stfmamba.data.clips.mouth_clip` at ``mouth_size`` px
with that box margin, which scoring builds from the npz landmarks; without them (every other model,
and files written before the stream existed) the model takes none. ``normalize`` is the model's own (``model.data_config``:
timm's pretrained config of its timm network, ImageNet's for the built-in stem).
:func:`input_spec` reads it back as an :class:`InputSpec`; keys a file written before they were
stored lack are filled with the previous behaviour (params / built-in defaults, the arch rule for
``frame_level``, ImageNet mean / std), with a warning naming them.

Everything stored is plain (dicts, lists, str, numbers, bools, None, tensors), so model files load
with ``torch.load(weights_only=True)``: reading one never runs pickled code.

``load_model_file`` rebuilds the :class:`~stfmamba.config.STFV8Config` from the stored dict
(validated with ``config.from_dict``), builds the model and loads the weights strictly; the input
contract comes back as ``meta["input"]`` (``None``, with a warning, for files written before it
was stored).
``load_flexible`` (Phase A → Phase B) loads every tensor whose name and shape match and reports
the rest. Key layout: see ``docs/model.md`` (e.g. ``stages.2.blocks.0.temporal.bimamba.mixer.A_log``:
the temporal mixer's registry name is part of the key, so different architectures never collide).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from stfmamba.config import (BaselineConfig, EvalConfig, FeatureFlags, ModelConfig, Params, PreprocessConfig,
                             STFV8Config, TrainingConfig, from_dict, to_dict)
from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, MOUTH_MARGIN, ClipSpec, Normalize
from stfmamba.io import atomic_path

__all__ = ["LoadReport", "INPUT_KEYS", "MOUTH_INPUT_KEYS", "InputSpec", "input_settings", "input_spec", "save_model_file",
           "load_model_file", "load_flexible", "config_from_dict"]

# the settings of the input contract stored in a model file, by part
INPUT_KEYS = {"preprocess": ("crop_size", "margin", "detect_scale", "num_segments", "frames_per_segment",
                             "min_face_px", "min_frames", "max_faces"),
              "model": ("img_size", "num_frames"),
              "scoring": ("frame_level", "clip_frames", "max_clips_per_video"),
              "normalize": ("mean", "std", "channel_order")}
MOUTH_INPUT_KEYS = ("mouth_stream", "mouth_size", "mouth_margin")   # input.model, only with a mouth stream
_DEFAULT = "default"   # save_model_file(max_clips_per_video=...): the params default of the model's kind


class LoadReport(NamedTuple):
    """Keys the model has but the file lacks, keys the file has but the model lacks, and keys in
    both whose shapes differ (not loaded)."""
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def config_from_dict(d: dict) -> STFV8Config:
    """Inverse of ``to_dict(cfg)`` for :class:`STFV8Config` (every part validated)."""
    if not isinstance(d, dict) or "model" not in d:
        raise ValueError(f"model file config must be a mapping with 'model', 'features', 'training'; got {d!r:.80}")
    return STFV8Config(name=d.get("name", "STFV8"), model=from_dict(ModelConfig, d["model"], "config.model"),
                       features=from_dict(FeatureFlags, d.get("features", {}), "config.features"),
                       training=from_dict(TrainingConfig, d.get("training", {}), "config.training"))


def default_max_clips(frame_level: bool, params: Params | None = None) -> int | None:
    """Clips scored per video when nothing else says: ``baseline.eval_frames`` for a frame model,
    ``eval.max_clips_per_video`` for a video model (of ``params``, else the built-in defaults)."""
    if frame_level:
        return (params.baseline if params is not None else BaselineConfig()).eval_frames
    return (params.eval if params is not None else EvalConfig()).max_clips_per_video


def input_settings(preprocess: PreprocessConfig, model_cfg: ModelConfig, *, norm: Normalize | None = None,
                   max_clips_per_video: int | None | str = _DEFAULT) -> dict[str, dict]:
    """The input contract of a model file (:data:`INPUT_KEYS`, module docstring).

    Args:
        preprocess: the preprocessing of the training data.
        model_cfg: the model's config (clip geometry; ``frame_level``).
        norm: the model's normalisation (default: ImageNet's, the built-in stem's).
        max_clips_per_video: clips (frames, for a frame model) scored per video; ``None`` = every
            window; default :func:`default_max_clips` of the model's kind.
    """
    norm = norm or Normalize(IMAGENET_MEAN, IMAGENET_STD)
    frame = model_cfg.frame_level
    if max_clips_per_video == _DEFAULT:
        max_clips_per_video = default_max_clips(frame)
    model = {k: getattr(model_cfg, k) for k in INPUT_KEYS["model"]}
    if model_cfg.mouth_stream and not frame:   # a frame model never has one
        model.update(mouth_stream=True, mouth_size=model_cfg.mouth_size, mouth_margin=MOUTH_MARGIN)
    return {"preprocess": {k: getattr(preprocess, k) for k in INPUT_KEYS["preprocess"]},
            "model": model,
            "scoring": {"frame_level": frame, "clip_frames": 1 if frame else model_cfg.num_frames,
                        "max_clips_per_video": max_clips_per_video},
            "normalize": norm.as_dict()}


@dataclass(frozen=True)
class InputSpec:
    """A model file's input contract, read back (:func:`input_spec`): what every scoring path uses.

    ``preprocess`` holds the recorded preprocessing settings only (a file written before a key was
    stored lacks it; :meth:`preprocess_config` fills the rest from a base config); ``missing`` names
    the keys that were filled with fallbacks (``"scoring.max_clips_per_video"``, ...).
    """
    preprocess: dict[str, Any]
    img_size: int                     # model input side
    num_frames: int                   # training clip length (model.num_frames)
    frame_level: bool                 # a per-frame classifier (scored on single frames)
    clip_frames: int                  # frames per scored clip (1 for a frame model)
    max_clips_per_video: int | None   # clips (frames) per video and face, evenly spaced; None = all
    norm: Normalize                   # mean / std, RGB
    missing: tuple[str, ...] = ()
    mouth_size: int | None = None     # the mouth stream's input side; None: the model takes no mouth clips
    mouth_margin: float = MOUTH_MARGIN  # its box margin (mouth_clip)

    def preprocess_config(self, base: PreprocessConfig | None = None) -> PreprocessConfig:
        """``base`` (default: the built-in defaults) with the recorded preprocessing settings."""
        return dataclasses.replace(base or PreprocessConfig(), **self.preprocess)

    def clip_spec(self, pre: PreprocessConfig) -> ClipSpec:
        """The scored clips of npz files made with ``pre`` (runs per video, frames per run)."""
        return ClipSpec(pre.num_segments, pre.frames_per_segment, self.clip_frames, self.img_size,
                        self.max_clips_per_video, self.mouth_size, self.mouth_margin)

    @property
    def mouth_stream(self) -> bool:
        """Whether the model takes mouth clips (``input.model.mouth_stream``)."""
        return self.mouth_size is not None

    def override(self, source: str, model_path: str | os.PathLike, **changes) -> "InputSpec":
        """This spec with ``changes`` (``max_clips_per_video=..``, preprocess keys ``max_faces=..``);
        every value that differs from the model file's is printed (``source`` names who set it)."""
        pre, top = dict(self.preprocess), {}
        for k, v in changes.items():
            key = f"preprocess.{k}" if k in INPUT_KEYS["preprocess"] else f"scoring.{k}"
            old = pre.get(k) if key.startswith("preprocess.") else getattr(self, k)
            if v != old and key not in self.missing:
                print(f"override: {key}={v!r} from {source} (the model file {model_path} records {old!r})")
            if key.startswith("preprocess."):
                pre[k] = v
            else:
                top[k] = v
        return dataclasses.replace(self, preprocess=pre, **top)


def input_spec(meta: dict[str, Any], cfg: STFV8Config, *, model_path: str | os.PathLike = "model file",
               fallback: Params | None = None, fallback_max_clips: dict[bool, int | None] | None = None,
               warn: bool = True) -> InputSpec:
    """The :class:`InputSpec` of a loaded model file (``meta`` and ``cfg`` from :func:`load_model_file`).

    Keys the file does not record (written before they were stored) get the previous behaviour:
    ``frame_level`` from ``model.arch`` (not ``stfmamba``: a timm frame classifier),
    ``max_clips_per_video`` from ``fallback``'s ``eval.max_clips_per_video`` / ``baseline.eval_frames``
    (built-in defaults without ``fallback``; ``fallback_max_clips[frame_level]`` when given, e.g.
    ``stfmamba predict``'s former default of every window), ImageNet mean / std; preprocessing keys stay out of
    :attr:`InputSpec.preprocess` (the caller's base config supplies them). One warning names them all
    (``warn=False``: none).
    """
    rec = meta.get("input") or {}
    stored_pre = dict(rec.get("preprocess") or {})
    scoring, norm = dict(rec.get("scoring") or {}), rec.get("normalize")
    missing = [f"preprocess.{k}" for k in INPUT_KEYS["preprocess"] if k not in stored_pre]
    missing += [f"scoring.{k}" for k in INPUT_KEYS["scoring"] if k not in scoring]
    missing += [] if norm else ["normalize"]
    frame = bool(scoring.get("frame_level", cfg.model.frame_level))
    clip_frames = int(scoring.get("clip_frames", 1 if frame else cfg.model.num_frames))
    if "max_clips_per_video" in scoring:
        max_clips = scoring["max_clips_per_video"]
    elif fallback_max_clips is not None and frame in fallback_max_clips:
        max_clips = fallback_max_clips[frame]
    else:
        max_clips = default_max_clips(frame, fallback)
    norm = Normalize.of(norm) if norm else Normalize(IMAGENET_MEAN, IMAGENET_STD)
    stored_model = dict(rec.get("model") or {})
    # files written before the mouth stream existed have none (and their config has mouth_stream false)
    mouth = bool(stored_model.get("mouth_stream", False) if rec else cfg.model.mouth_stream and not frame)
    mouth_size = int(stored_model.get("mouth_size") or cfg.model.mouth_size) if mouth else None
    mouth_margin = float(stored_model.get("mouth_margin") or MOUTH_MARGIN)
    if missing and rec and warn:
        warnings.warn(f"{model_path}: the model file does not record {', '.join(missing)} (written before model "
                      f"files carried them); using the previous behaviour for them: frame_level={frame} (model.arch "
                      f"{cfg.model.arch!r} unless recorded), max_clips_per_video={max_clips}, mean={norm.mean} "
                      f"std={norm.std} (ImageNet unless recorded), other preprocessing settings from the params / "
                      "defaults", UserWarning, stacklevel=2)
    return InputSpec({k: v for k, v in stored_pre.items() if k in INPUT_KEYS["preprocess"]}, cfg.model.img_size,
                     cfg.model.num_frames, frame, clip_frames, max_clips, norm, tuple(missing), mouth_size,
                     mouth_margin)


def _plain(v, key: str):
    """``v`` as the plain types ``torch.load(weights_only=True)`` accepts; TypeError naming ``key`` otherwise."""
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{key}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{key}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:   # numpy scalar
        return v.item()
    raise TypeError(f"model file {key}: {type(v).__name__} is not a plain value (dict, list, str, number, "
                    "tensor); convert it before saving")


def save_model_file(path: str | os.PathLike, model: nn.Module, cfg: STFV8Config,
                    preprocess: PreprocessConfig | None = None, *,
                    max_clips_per_video: int | None | str = _DEFAULT, **meta) -> Path:
    """Write ``model``'s weights, ``cfg``, the input contract and ``meta`` to ``path`` atomically.

    Args:
        path: the model file (written with :func:`stfmamba.io.atomic_path`).
        model: the module whose ``state_dict`` is stored.
        cfg: its config (rebuilds the model on load).
        preprocess: the preprocessing of the data it was trained on; stored with ``cfg.model``'s
            clip settings, the scoring settings and ``model.data_config``'s mean / std as ``input``
            (:func:`input_settings`; a module without ``data_config``: ImageNet's). ``None`` stores
            no contract.
        max_clips_per_video: clips (frame model: frames) scored per video, stored as
            ``input.scoring.max_clips_per_video`` (default: :func:`default_max_clips`).
        **meta: plain values (phase, epoch, val_auc, ...).
    """
    if "input" in meta:
        raise TypeError("save_model_file: 'input' is reserved for the input contract; pass preprocess=")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"model": state, "config": _plain(to_dict(cfg), "config"), "meta": _plain(dict(meta), "meta")}
    if preprocess is not None:
        norm = Normalize.of(model) if hasattr(model, "data_config") else None
        blob["input"] = _plain(input_settings(preprocess, cfg.model, norm=norm,
                                              max_clips_per_video=max_clips_per_video), "input")
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_model_file(path: str | os.PathLike, map_location="cpu"):
    """Read a model file -> ``(model, cfg, meta)`` (model in eval mode, weights loaded strictly).

    Loaded with ``torch.load(weights_only=True)``. ``meta["input"]`` is the stored input contract
    (:func:`input_settings`, read it with :func:`input_spec`), or ``None`` with a warning for a file
    written before it was stored.
    The timm trunk (if any) is built with ``pretrained=none`` and ``trunk_init=none``: its weights are in the file.
    """
    from stfmamba.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (run the training stage, or `dvc pull {path}`)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a plain model file, refusing to unpickle it (torch.load weights_only=True: "
                         f"{str(err).splitlines()[0]}); re-save it with stfmamba.models.checkpoint.save_model_file"
                         ) from None
    if not isinstance(blob, dict) or not {"model", "config"} <= set(blob):
        raise ValueError(f"{path}: not an STF-Mamba model file (expected keys 'model', 'config', 'input', 'meta')")
    cfg = config_from_dict(blob["config"])
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none", trunk_init="none"))
    model = build_model(build_cfg, grad_checkpointing=False)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored config: {err}") from None
    meta = dict(blob.get("meta", {}))
    meta["input"] = blob.get("input")
    stored_norm = (meta["input"] or {}).get("normalize")
    if stored_norm and hasattr(model, "data_config"):
        live = Normalize.of(model)
        if (not torch.allclose(torch.tensor(live.mean), torch.tensor(stored_norm["mean"], dtype=torch.float32))
                or not torch.allclose(torch.tensor(live.std), torch.tensor(stored_norm["std"], dtype=torch.float32))):
            warnings.warn(f"{path}: the model file records mean={stored_norm['mean']} std={stored_norm['std']} but "
                          f"the model built from its config reports mean={list(live.mean)} std={list(live.std)} "
                          "(another timm version?); scoring uses the recorded values, what the model was trained "
                          "with", UserWarning, stacklevel=2)
    if meta["input"] is None:
        warnings.warn(f"{path}: the model file does not record the preprocessing it was trained with (written "
                      "before model files carried it); evaluation cannot check the crop settings against it",
                      UserWarning, stacklevel=2)
    return model.eval(), cfg, meta


def load_flexible(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor of ``state_dict`` whose name and shape match ``model``'s; report the rest."""
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in state_dict.items() if k in own and own[k].shape != v.shape)
    model.load_state_dict(matched, strict=False)
    return LoadReport(missing=sorted(k for k in own if k not in state_dict),
                      unexpected=sorted(k for k in state_dict if k not in own), mismatched=mismatched)
