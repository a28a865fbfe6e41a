"""Which ``params.yaml`` keys each DVC stage reads: one declaration, checked against ``dvc.yaml``.

DVC reruns a stage when one of its listed params changes; a key a stage reads but does not list
is a silent stale result (``dvc exp run -S training.mask_loss_weight=1`` reporting the old
numbers), a key it lists but does not read a needless rerun. :func:`stage_params` is the one
place that says what each stage reads, and ``dvc.yaml``'s ``params:`` lists are generated from it::

    python -m stfmamba.pipeline check   # exit 1 naming stage and key when dvc.yaml differs
    python -m stfmamba.pipeline write   # rewrite the params: lists of dvc.yaml (comments and the rest kept)
    python -m stfmamba.pipeline show    # the declaration, one stage per line

For the training stages the declaration is derived from the code, not typed by hand:

* the phase's :class:`~stfmamba.config.STFV8Config` (:data:`PHASE_CONFIGS`: the trainer's
  ``PHASES[phase].make_config``, the function it builds its config with) carries every field of
  ``ModelConfig``, ``FeatureFlags`` and ``TrainingConfig`` the model, the loss, the data and the
  trainer use. A params key is read by
  the phase when changing it changes a config field the phase uses (:func:`keys_feeding`): Phase
  A's ``without_architecture()`` sets the architecture flags to constants, so
  ``features.use_wss`` does not reach Phase A; ``frame_baseline()`` takes arch / img_size /
  num_frames / pretrained / batch size / epochs / lr / clips per video from ``baseline``, so those
  ``model.*`` / ``training.*`` keys do not reach the frame baseline, ``baseline.*`` do.
* the fields a phase carries but does not use are the trainer's own lists
  (:data:`stfmamba.training.state.PHASE_KEYS`: Phase A does not read ``lr_phase_b``), the keys
  that cannot change a result (:data:`EXCLUDED`, each with its reason; the resume logic's
  :data:`~stfmamba.training.state.RUN_ONLY_KEYS` are the training ones, a test keeps them equal) and
  what a per-frame classifier ignores (:data:`FRAME_UNUSED`).
* besides the config, the trainer reads ``data.train`` / ``data.preprocessed_dir`` (the manifest),
  the ``preprocess`` keys stored as the model file's input contract
  (:data:`stfmamba.models.checkpoint.INPUT_KEYS`) and ``budget``.

``model.trunk_init`` (the trunk starts from the trained frame baseline, ``models/frame.pt``) and
``training.distill_from`` (the frame baseline teaches the video model) name a file another stage
writes, so that file is also a *dep* of ``train_phase_a`` / ``train_phase_b``: ``write`` adds the dep
line (its comment names the keys, ``# training.distill_from``) when a key names a file and removes it
when the keys are ``none``, ``check`` fails when they disagree, and the training stage refuses to
start on a ``dvc.yaml`` without it (a ``dvc exp run -S training.distill_from=...`` would otherwise
train from a stale frame model without ordering ``train_frame`` first).

A new field of one of these dataclasses is therefore declared automatically, and ``check`` fails
until ``write`` has put it in ``dvc.yaml``. A section read whole is listed whole (DVC ``params:
[model]``: any key of it, also a new one, reruns the stage); otherwise key by key.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable

from stfmamba.config import (BaselineConfig, BudgetConfig, DataConfig, DemoConfig, EvalConfig, FeatureFlags,
                             ModelConfig, Params, PreprocessConfig, STFV8Config, TrainingConfig, flatten_dict,
                             resume_ignored_keys, to_dict)

__all__ = ["EXCLUDED", "FRAME_UNUSED", "FRAME_MODEL_USED", "PHASE_CONFIGS", "SECTIONS", "stage_params",
           "keys_feeding", "read_dvc_params", "read_dvc_deps", "file_deps", "file_dep_problems", "check", "write",
           "main"]

# params.yaml section -> its dataclass (the order of Params' fields is the order of the generated lists)
SECTIONS: dict[str, type] = {"data": DataConfig, "demo": DemoConfig, "preprocess": PreprocessConfig,
                             "model": ModelConfig, "features": FeatureFlags, "training": TrainingConfig,
                             "eval": EvalConfig, "baseline": BaselineConfig, "budget": BudgetConfig}
SECTION_ORDER = [f.name for f in fields(Params)]

# Keys that cannot change any stage's result, by field name (in any section a training or evaluation
# stage reads), each with why. Listing them would rerun hours of training for nothing.
EXCLUDED: dict[str, str] = {
    "num_workers": "DataLoader processes only: every training item draws from its own generator seeded by "
                   "(seed, epoch, index) and the sampler from training.seed, and evaluation scores each clip "
                   "on its own, so the batches and scores are the same with any number of workers",
    "checkpoint_dir": "where the resume checkpoints are written (a DVC persist output), not what is trained",
    "checkpoint_every": "how often a resume checkpoint is written; a resumed run continues exactly (RNG states, "
                        "optimizer, schedule and batch position are saved), and a run never interrupted is the same",
    "durable_copy": "an extra copy of each checkpoint on another volume (to resume on a new pod)",
    "progress": "progress-bar display only (today a CLI flag, --no-progress; excluded should it become a key)",
}

# What the per-frame classifier (models/frame.py FrameClassifier: timm arch, pretrained, dropout,
# drop_path_rate; the clip geometry img_size / num_frames feeds the data) and its loss (models/losses.py
# STFV8Loss: a per-frame model returns no hll_energy, so only the label-smoothed cross-entropy; no mask
# head) leave unused of the config they are given: every model field but FRAME_MODEL_USED, and FRAME_UNUSED.
FRAME_MODEL_USED = ("arch", "pretrained", "dropout", "drop_path_rate", "img_size", "num_frames")
FRAME_UNUSED: tuple[str, ...] = (
    "training.hll_loss_weight", "training.hll_margin", "training.sdim_l1_weight",   # HLL / sdim terms: STF-Mamba only
    "training.mask_loss_weight",                  # the mask head is STF-Mamba's (models/stfmamba.py)
    "training.distill_from", "training.distill_weight",   # the frame baseline is the teacher (training/distill.py)
    "training.stf_stream_weight", "training.stf_stream_fakes",   # a term on the STF head alone (models/losses.py)
    "training.frame_target_weight",               # a per-frame head on the STF stages (models/losses.py)
    "training.pretrained_lr_mult",                # the frame baseline fine-tunes every layer at baseline.lr
    "features.use_contrastive_hll", "features.use_hll_normalization",   # only the HLL term reads them
)


# --------------------------------------------------------------------------- derivation
# The phase configs, as the trainer builds them (stfmamba/training/trainer.py PHASES[phase].make_config;
# tests/pipeline/test_stage_params.py keeps the two equal). Named here so that `check` needs neither
# torch nor timm.
PHASE_CONFIGS: dict[str, Callable[[Params], STFV8Config]] = {
    "a": STFV8Config.phase_a, "b": STFV8Config.phase_b, "frame": STFV8Config.frame_baseline}


def _constant(module: str, name: str) -> Any:
    """A module-level literal constant of a package module, read from its source (no import: the
    training and evaluation modules import torch, a few seconds)."""
    import ast
    path = Path(__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    for node in ast.parse(path.read_text()).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module}.{name}: constant not found")


def ignored_keys(phase: str) -> set[str]:
    """stfmamba.training.state.ignored_keys (the keys a phase's resume ignores), from its constants:
    RUN_ONLY_KEYS and the other phases' PHASE_KEYS."""
    return resume_ignored_keys(phase, _constant("stfmamba.training.state", "PHASE_KEYS"),
                               _constant("stfmamba.training.state", "RUN_ONLY_KEYS"))


def _unchecked(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` without ``__post_init__`` (a perturbed value may break a cross-key rule
    that the phase's config function never looks at)."""
    new = copy.copy(obj)
    for k, v in changes.items():
        object.__setattr__(new, k, v)
    return new


def _other_value(f: dataclasses.Field, v: Any) -> Any:
    """A value of field ``f`` different from ``v`` (a valid choice where the field has choices)."""
    choices = f.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != v)
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v + 0.25
    if isinstance(v, str):
        return v + "_x" if v != "none" else "x"
    if v is None:
        return "x"
    raise TypeError(f"no perturbation for {f.name}={v!r}")


# base points of the derivation: a key read only under a condition is found when one base meets it
# (Params() has baseline.img_size = 0, so the frame baseline reads model.img_size; a timm trunk so
# trunk_stride can take its other values)
def _bases() -> list[Params]:
    p = Params()
    return [p, _unchecked(p, model=_unchecked(p.model, spatial_backbone="resnet18", trunk_stride=8))]


def keys_feeding(make_config: Callable[[Params], STFV8Config], used: Callable[[str], bool],
                 sections: Iterable[str] = ("model", "features", "training", "baseline")) -> set[str]:
    """The ``section.key`` params whose change changes a config field that ``used`` accepts.

    Each scalar field of ``sections`` is set to another value in turn (:func:`_other_value`) and
    ``make_config`` rebuilt. A key whose new value fails the config's own checks at every base point
    is kept (declaring too much costs a rerun, too little a stale result)."""
    read: set[str] = set()
    failed: dict[str, int] = {}
    bases = _bases()
    for base in bases:
        ref = flatten_dict(to_dict(make_config(base)))
        for sec in sections:
            obj = getattr(base, sec)
            for f in fields(obj):
                v = getattr(obj, f.name)
                key = f"{sec}.{f.name}"
                if isinstance(v, (tuple, list, dict)):   # not perturbed: kept (the safe side)
                    failed[key] = failed.get(key, 0) + 1
                    continue
                try:
                    changed = _unchecked(base, **{sec: _unchecked(obj, **{f.name: _other_value(f, v)})})
                    cfg = flatten_dict(to_dict(make_config(changed)))
                except ValueError:   # the new value breaks a rule of the config (e.g. trunk_stride 8 without a trunk)
                    failed[key] = failed.get(key, 0) + 1
                    continue
                if any(used(k) and cfg.get(k) != ref.get(k) for k in set(cfg) | set(ref)):
                    read.add(key)
    return read | {k for k, n in failed.items() if n == len(bases)}   # never testable: kept (the safe side)


def _excluded(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in EXCLUDED


def _section_keys(section: str, keys: Iterable[str] | None = None) -> list[str]:
    """``[section]`` when ``keys`` cover every result-changing field of the section, else the keys in field order."""
    names = [f.name for f in fields(SECTIONS[section])]
    wanted = set(names) if keys is None else {k.split(".", 1)[1] for k in keys if k.startswith(section + ".")}
    wanted = {n for n in wanted if not _excluded(f"{section}.{n}")}
    if wanted == set(names):
        return [section]
    return [f"{section}.{n}" for n in names if n in wanted]


def _ordered(keys: Iterable[str]) -> list[str]:
    """Whole sections and keys in the order of ``Params`` and of each section's fields."""
    keys = list(dict.fromkeys(keys))
    def rank(k: str) -> tuple[int, int]:
        sec, _, name = k.partition(".")
        cls = SECTIONS.get(sec)
        names = [f.name for f in fields(cls)] if cls else []
        return SECTION_ORDER.index(sec), (names.index(name) if name in names else -1)
    return sorted(keys, key=rank)


def training_params(phase: str) -> list[str]:
    """What ``stages/train.py --phase <phase>`` reads (module docstring)."""
    input_keys = _constant("stfmamba.models.checkpoint", "INPUT_KEYS")
    ignored = ignored_keys(phase)
    frame = phase == "frame"

    def used(k: str) -> bool:
        if frame and (k in FRAME_UNUSED or k.startswith("model.") and k.split(".", 1)[1] not in FRAME_MODEL_USED):
            return False
        return k != "name" and k not in ignored and not _excluded(k)

    read = keys_feeding(PHASE_CONFIGS[phase], used)
    out = ["data.train", "data.preprocessed_dir",                     # the manifest (trainer.input_fingerprint)
           *(f"preprocess.{k}" for k in input_keys["preprocess"])]    # clip layout + the model file's input contract
    for sec in ("model", "features", "training", "baseline"):
        if any(k.startswith(sec + ".") for k in read):
            out += _section_keys(sec, read)
    out += _section_keys("budget")                                     # BudgetTracker: stops the run
    return _ordered(out)


def eval_params(phase: str) -> list[str]:
    """What ``stages/evaluate.py --phase <phase>`` reads: the datasets, the clip layout and the crop
    settings checked against the model file (evaluation/run.py CROP_KEYS, SAMPLING_KEYS), the autocast
    setting, ``eval`` (minus :data:`EXCLUDED`) and, for the frame baseline, ``baseline.eval_frames``.
    The model's own config comes from the model file, a dependency."""
    crop, sampling = (_constant("stfmamba.evaluation.run", n) for n in ("CROP_KEYS", "SAMPLING_KEYS"))
    cross = phase in ("cross", "frame_cross")
    out = ["data.cross" if cross else "data.test", "data.preprocessed_dir",
           *(f"preprocess.{k}" for k in (*crop, *sampling)), "training.amp", *_section_keys("eval")]
    if phase.startswith("frame"):
        out.append("baseline.eval_frames")   # stages/evaluate.py frame_protocol()
    return _ordered(out)


def stage_params() -> dict[str, list[str]]:
    """Stage name -> the params it reads (``section`` = the whole section, ``section.key`` one key)."""
    return {
        "demo": ["demo"],                        # stages/demo.py: build_demo(params.demo)
        "preprocess": ["data", "preprocess"],    # every used dataset's adapter + root; every preprocess knob
        "verify": ["data", "preprocess"],        # the datasets' splits and the npz layout they must have
        # stages/sbi_audit.py: VideoSBIDataset.from_params(params, "train", True) without the common
        # augmentation (so no H.264 / QP keys): the clip layout, the SBI flags (sbi_config) and the
        # training seed and clips per video (its items and their per-item generators), and every temporal
        # pseudo-fake kind (each audited on its own, whether features.use_temporal_fakes is on or not)
        "sbi_audit": _ordered(["data.train", "data.preprocessed_dir", "preprocess.num_segments",
                               "preprocess.frames_per_segment", "model.img_size", "model.num_frames",
                               "features.use_multiscale_drift", "features.use_tps", "training.clips_per_video",
                               "training.seed", "training.temporal_fake_kinds"]),
        # stages/weights.py: the pretrained weights of the video model's timm trunk (model.arch decides
        # whether model.spatial_backbone or model.arch is the timm model) and of the frame baseline
        # -> metrics/weights.json
        "weights": ["model.arch", "model.spatial_backbone", "model.pretrained", "baseline.arch", "baseline.pretrained"],
        "train_phase_a": training_params("a"),
        "train_phase_b": training_params("b"),
        "train_frame": training_params("frame"),
        "eval_phase_a": eval_params("a"),
        "eval_phase_b": eval_params("b"),
        "eval_cross": eval_params("cross"),
        "eval_frame": eval_params("frame"),
        "eval_frame_cross": eval_params("frame_cross"),
    }


def _expand(entries: Iterable[str]) -> set[str]:
    """Whole sections -> every ``section.key`` (for comparing a section with its keys)."""
    out: set[str] = set()
    for e in entries:
        cls = SECTIONS.get(e)
        out |= {f"{e}.{f.name}" for f in fields(cls)} if cls and "." not in e else {e}
    return out


# --------------------------------------------------------------------------- dvc.yaml
def _param_names(raw: Any) -> list[str]:
    """A stage's ``params:`` entries as names (``{file: [keys]}`` entries of other files are skipped)."""
    names = []
    for e in raw or []:
        if isinstance(e, str):
            names.append(e)
        elif isinstance(e, dict):
            for file, keys in e.items():
                if file in ("params.yaml",) and keys:
                    names += list(keys)
    return names


def read_dvc_params(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    import yaml
    doc = yaml.safe_load(Path(dvc_yaml).read_text()) or {}
    return {name: _param_names(st.get("params")) for name, st in (doc.get("stages") or {}).items()}


def _params_beside(dvc_yaml: str | Path) -> Params | None:
    """The params.yaml next to ``dvc_yaml`` (``None`` when there is none)."""
    from stfmamba.config import load_params
    path = Path(dvc_yaml).parent / "params.yaml"
    return load_params(path) if path.is_file() else None


def check(dvc_yaml: str | Path = "dvc.yaml", declared: dict[str, list[str]] | None = None,
          params: Params | None = None) -> list[str]:
    """Differences between ``dvc.yaml``'s params and the declaration, one message each (empty: in sync),
    and the file deps params name (:func:`file_deps`) against ``params`` (default: the params.yaml beside ``dvc_yaml``).

    A declared stage missing from ``dvc.yaml`` is not an error (the declaration may lead the
    pipeline: a stage another branch adds); a ``dvc.yaml`` stage missing from the declaration is.
    """
    params = _params_beside(dvc_yaml) if params is None else params
    problems = file_dep_problems(dvc_yaml, params) if params is not None else []
    return problems + _check_params(dvc_yaml, declared)


def _check_params(dvc_yaml: str | Path, declared: dict[str, list[str]] | None) -> list[str]:
    declared = stage_params() if declared is None else declared
    listed = read_dvc_params(dvc_yaml)
    problems = []
    for stage in listed:
        if stage not in declared:
            problems.append(f"{stage}: stage in {dvc_yaml} but not declared in stfmamba/pipeline.py")
            continue
        want, have = _expand(declared[stage]), _expand(listed[stage])
        for key in sorted(want - have):
            problems.append(f"{stage}: reads {key} but {dvc_yaml} does not list it (a change would not rerun "
                            "the stage); run `python -m stfmamba.pipeline write`")
        for key in sorted(have - want):
            problems.append(f"{stage}: {dvc_yaml} lists {key} but the stage does not read it (or it cannot change "
                            "the result); run `python -m stfmamba.pipeline write`")
    return problems


# --------------------------------------------------------------------------- file deps named by params
# model.trunk_init and training.distill_from name a file another stage writes (models/frame.pt,
# train_frame's output): the training stages that build the video model must list it in their deps, or a
# new frame baseline would not rerun them (and DVC would not order train_frame first). The dep line carries
# the keys that name it as its comment (``# model.trunk_init, training.distill_from``) so `write` can keep
# it in step with params.yaml: added when a key names a file, removed when it is none (pod profiles: no
# needless rerun of Phase A when the frame baseline changes).
INIT_DEP_STAGES = ("train_phase_a", "train_phase_b")
FILE_DEP_KEYS = ("model.trunk_init", "training.distill_from")


def file_deps(params: Params) -> dict[str, list[str]]:
    """The files the video training stages read because a param names them -> the keys naming each
    (``model.trunk_init``, ``training.distill_from``; in that order; empty when both are ``none``)."""
    if params.model.arch != "stfmamba":
        return {}
    out: dict[str, list[str]] = {}
    for key, value in zip(FILE_DEP_KEYS, (params.model.trunk_init, params.training.distill_from)):
        if value not in ("", "none"):
            out.setdefault(value, []).append(key)
    return out


def read_dvc_deps(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    import yaml
    doc = yaml.safe_load(Path(dvc_yaml).read_text()) or {}
    return {name: [d if isinstance(d, str) else next(iter(d)) for d in (st.get("deps") or [])]
            for name, st in (doc.get("stages") or {}).items()}


def _is_marked(comment: str | None) -> bool:
    """Whether a dep line's comment marks it as named by a param (its first word is a FILE_DEP_KEYS key)."""
    words = (comment or "").lstrip("#").replace(",", " ").split()
    return bool(words) and words[0] in FILE_DEP_KEYS


def _marked_deps(dvc_yaml: str | Path) -> dict[str, list[str]]:
    """Stage -> the deps whose line is marked as named by a param (:func:`_is_marked`)."""
    out: dict[str, list[str]] = {}
    stage = None
    for line in Path(dvc_yaml).read_text().splitlines():
        if _STAGE.match(line):
            stage = _STAGE.match(line).group(1)
        m = _ITEM.match(line)
        if stage and m and _is_marked(m.group(2)):
            out.setdefault(stage, []).append(m.group(1))
    return out


def file_dep_problems(dvc_yaml: str | Path, params: Params, stages: Iterable[str] = INIT_DEP_STAGES) -> list[str]:
    """What is wrong with the param-named file deps of ``stages`` in ``dvc_yaml`` (empty: in step)."""
    want, deps, marked = file_deps(params), read_dvc_deps(dvc_yaml), _marked_deps(dvc_yaml)
    problems = []
    for stage in stages:
        if stage not in deps:
            continue
        for path, keys in want.items():
            if path not in deps[stage]:
                problems.append(f"{stage}: {keys[0]}={path!r} is not a dep in {dvc_yaml} (a new frame baseline would "
                                "not rerun the stage); run `python -m stfmamba.pipeline write`")
        extra = [d for d in marked.get(stage, []) if d not in want]
        if extra:
            problems.append(f"{stage}: {dvc_yaml} lists {extra[0]!r} as a file named by {' / '.join(FILE_DEP_KEYS)} "
                            "but params.yaml names no such file (a needless rerun); run `python -m stfmamba.pipeline write`")
    return problems


def _write_file_deps(lines: list[str], want: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """``lines`` of dvc.yaml with the marked deps of each :data:`INIT_DEP_STAGES` stage set to ``want``
    (:func:`file_deps`; added as the last deps, or removed). Returns the lines and the stages changed."""
    out: list[str] = []
    changed: list[str] = []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        if _STAGE.match(line):
            stage = _STAGE.match(line).group(1)
        if stage in INIT_DEP_STAGES and line.rstrip() == "    deps:":
            out.append(line)
            i += 1
            block = []
            while i < len(lines) and _ITEM.match(lines[i]):
                block.append(lines[i])
                i += 1
            kept = [b for b in block if not _is_marked(_ITEM.match(b).group(2))]
            present = {_ITEM.match(b).group(1) for b in kept}
            kept += [f"      - {path}  # {', '.join(keys)}" for path, keys in want.items() if path not in present]
            if kept != block:
                changed.append(stage)
            out += kept
            continue
        out.append(line)
        i += 1
    return out, changed


_STAGE = re.compile(r"^  ([A-Za-z0-9_-]+):")                 # a stage of the top-level `stages:` mapping
_PARAMS = re.compile(r"^    params:[ ]*(.*?)[ ]*$")            # its params: key (block list, flow list, alias)
_ITEM = re.compile(r"^      - ([^#\s]+)[ ]*(#.*)?$")           # an entry of a block list (and its comment)


def _block(entries: list[str], comments: dict[str, str]) -> list[str]:
    """The ``params:`` lines for ``entries``: a flow list when they are at most three whole sections,
    else a block list keeping the comment each remaining entry had."""
    if len(entries) <= 3 and all("." not in e for e in entries):
        return [f"    params: [{', '.join(entries)}]"]
    width = max(len(e) for e in entries)
    return ["    params:"] + [f"      - {e:<{width}}  {comments[e]}".rstrip() if comments.get(e) else f"      - {e}"
                               for e in entries]


def write(dvc_yaml: str | Path = "dvc.yaml", declared: dict[str, list[str]] | None = None,
          params: Params | None = None) -> list[str]:
    """Rewrite the ``params:`` list of every declared stage of ``dvc_yaml``, and the marked
    file deps of the video training stages (:func:`file_deps`) from ``params`` (default: the params.yaml
    beside ``dvc_yaml``); every other line (other keys, comments, stages not declared) stays as it
    is. An anchor / alias on a params list is replaced by the list. The result is
    parsed and compared with the original outside those before it is written (ValueError if
    anything else would change). Returns the stages rewritten."""
    import yaml

    params = _params_beside(dvc_yaml) if params is None else params
    declared = stage_params() if declared is None else declared
    path = Path(dvc_yaml)
    lines = path.read_text().splitlines()
    out: list[str] = []
    changed: list[str] = []
    in_stages, stage, i = False, None, 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^\S", line):
            in_stages, stage = line.startswith("stages:"), None
        elif in_stages and _STAGE.match(line):
            stage = _STAGE.match(line).group(1)
        m = _PARAMS.match(line) if in_stages and stage in declared else None
        if m is None:
            out.append(line)
            i += 1
            continue
        j, comments, old = i + 1, {}, []
        rest = m.group(1).split("#")[0].strip()    # "", "[a, b]", "*alias" or "&anchor"
        if rest.startswith("[") or rest.startswith("*"):
            old = [e.strip() for e in rest.strip("[]").split(",") if e.strip()] if rest.startswith("[") else ["*"]
        else:
            while j < len(lines) and _ITEM.match(lines[j]):
                key, comment = _ITEM.match(lines[j]).groups()
                old.append(key)
                comments[key] = comment or ""
                j += 1
        new = _block(list(declared[stage]), comments)
        if old != list(declared[stage]) or "&" in rest or rest.startswith("*"):
            changed.append(stage)
        out += new
        i = j
    init_touched = {d for ds in _marked_deps(path).values() for d in ds}
    if params is not None:
        want = file_deps(params)
        out, dep_changed = _write_file_deps(out, want)
        changed += [st for st in dep_changed if st not in changed]
        init_touched |= set(want)
    text = "\n".join(out) + "\n"
    before, after = yaml.safe_load(path.read_text()), yaml.safe_load(text)
    for doc in (before, after):
        for name, st in (doc.get("stages") or {}).items():
            st.pop("params", None)
            if name in INIT_DEP_STAGES and st.get("deps"):
                st["deps"] = [d for d in st["deps"] if d not in init_touched]
    if before != after:
        raise ValueError(f"{dvc_yaml}: rewriting the params lists would change other content; not written")
    after = yaml.safe_load(text)
    for name, st in (after.get("stages") or {}).items():
        if name in declared and _param_names(st.get("params")) != list(declared[name]):
            raise ValueError(f"{dvc_yaml}: stage {name}'s params could not be rewritten (an unusual layout); "
                             "edit it by hand to a block list")
    if changed:
        from stfmamba.io import write_text
        write_text(path, text)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stfmamba.pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("check", "write", "show"))
    ap.add_argument("--dvc-yaml", default="dvc.yaml")
    args = ap.parse_args(argv)
    declared = stage_params()
    if args.command == "show":
        for stage, keys in declared.items():
            print(f"{stage}: {', '.join(keys)}")
        return 0
    if not Path(args.dvc_yaml).is_file():
        print(f"{args.dvc_yaml}: not found; run from the project root or pass --dvc-yaml", file=sys.stderr)
        return 2
    if args.command == "write":
        changed = write(args.dvc_yaml, declared)
        print(f"{args.dvc_yaml}: params / file deps of {', '.join(changed)} rewritten" if changed
              else f"{args.dvc_yaml}: params already as declared")
    problems = check(args.dvc_yaml, declared)
    listed = read_dvc_params(args.dvc_yaml)
    for stage in declared:
        if stage not in listed:
            print(f"note: stage {stage} is declared but not in {args.dvc_yaml} (yet)", file=sys.stderr)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"{args.dvc_yaml}: the params of every stage match stfmamba/pipeline.py and the file deps "
              f"({', '.join(FILE_DEP_KEYS)}) follow params.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
