"""Hardware profiles: rewrite the values of ``params.yaml`` that differ between machines.

    python -m stfmamba.profiles list
    python -m stfmamba.profiles show a100            # what would change
    python -m stfmamba.profiles apply a100           # or rtx4090 | demo
    python -m stfmamba.profiles estimate             # measured step time -> training hours and cost

A profile is ``profiles/<name>.yaml``: a partial ``params.yaml`` whose values replace (or add)
the same keys; ``key: null`` removes a key (the demo profile drops the pod datasets that way). The
rewrite is a round trip through ``ruamel.yaml``, so comments, key order and untouched values stay as
they are; the result is validated with :func:`stfmamba.config.from_dict` before ``params.yaml`` is
replaced atomically (:func:`stfmamba.io.write_text`). DVC tracks every value, so after ``apply`` a
``dvc repro`` (or ``dvc exp run``) reruns exactly the stages whose params changed.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from stfmamba.config import ConfigError, Params, from_dict
from stfmamba.io import write_text

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def available(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict[str, Any]:
    """The overrides of profile ``name`` as a nested dict."""
    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: profile '{name}' not found (available: {', '.join(available(profiles_dir))})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of params.yaml sections")
    return data


def _to_ruamel(value: Any) -> Any:
    """Plain value -> ruamel node; lists in flow style (``[a, b]``) like params.yaml writes them."""
    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _to_ruamel(v)
        return m
    if isinstance(value, list):
        s = CommentedSeq(_to_ruamel(v) for v in value)
        s.fa.set_flow_style()
        return s
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def merge(doc: CommentedMap, overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Apply ``overrides`` to ``doc`` in place; returns ``[(key, old, new), ...]`` of real changes."""
    changes = []
    for key, new in overrides.items():
        full = f"{prefix}{key}"
        old = doc.get(key)
        if new is None:  # `key: null` in a profile removes the key
            if key in doc:
                del doc[key]
                changes.append((full, _plain(old), None))
        elif isinstance(new, dict) and isinstance(old, dict):
            changes += merge(old, new, full + ".")
        elif _plain(old) != new:
            doc[key] = _to_ruamel(new)
            changes.append((full, _plain(old), new))
    return changes


def apply_profile(name: str, params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES_DIR,
                  dry_run: bool = False) -> list[tuple[str, Any, Any]]:
    """Rewrite ``params_path`` with profile ``name``; returns the changes (nothing written if ``dry_run``).

    Raises:
        ConfigError: unknown profile, or the result would not be a valid params file (nothing written).
    """
    params_path = Path(params_path)
    if not params_path.is_file():
        raise ConfigError(f"{params_path}: params file not found; run from the project root")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(params_path.read_text())
    changes = merge(doc, load_profile(name, profiles_dir))
    buf = io.StringIO()
    rt.dump(doc, buf)
    text = buf.getvalue()
    try:
        from_dict(Params, yaml.safe_load(text))
    except ConfigError as err:
        raise ConfigError(f"profile '{name}' would make {params_path} invalid: {err}") from None
    if changes and not dry_run:
        write_text(params_path, text)
    return changes


def estimate(params: Params, steps: int = 3) -> dict[str, Any]:
    """Training time and cost of ``params`` on this machine, from a few measured training steps.

    Times ``steps`` forward/backward/optimizer steps of the Phase B model (the larger one; its
    pretrained trunk, if any, built with random weights: same cost, no download) on a
    random batch of ``2 x training.batch_size`` clips (reals + their SBI fakes) with the configured
    autocast, then scales by the number of micro-batches of both phases. The number of training
    videos comes from the preprocessed manifest of ``data.train`` when present.

    Returns:
        dict with sec_per_batch, train_videos, batches, hours, cost, max_budget, device.
    """
    import math
    import time

    import torch

    from stfmamba.config import STFV8Config
    from stfmamba.models import build_model
    from stfmamba.models.losses import STFV8Loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from dataclasses import replace as _replace
    from stfmamba.training.optim import build_optimizer
    cfg = STFV8Config.phase_b(params)
    # the step time does not depend on the weights' values: the trunk is built as the profile names it
    # (same architecture, same cut) with random weights, so estimating needs no download
    cfg = _replace(cfg, model=_replace(cfg.model, pretrained="none", trunk_init="none"))
    model = build_model(cfg).to(device).train()
    loss_fn = STFV8Loss(cfg)
    opt = build_optimizer(model, 1e-5, params.training.weight_decay, params.training.pretrained_lr_mult)
    m, tr = params.model, params.training
    x = torch.randn(2 * tr.batch_size, 3, m.num_frames, m.img_size, m.img_size, device=device)
    y = torch.arange(2 * tr.batch_size, device=device) % 2
    kw = ({"mouth": torch.randn(2 * tr.batch_size, 3, m.num_frames, m.mouth_size, m.mouth_size, device=device)}
          if getattr(model, "needs_mouth", False) else {})   # model.mouth_stream: the second input
    from stfmamba.amp import resolve_amp
    amp = resolve_amp(tr.amp, device)
    times = []
    for i in range(steps + 1):  # the first step warms up (allocations, kernel selection)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            total, _ = loss_fn(model(x, **kw), y)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    manifest = Path(params.data.preprocessed_dir) / params.data.train / "manifest.csv"
    n_videos = None
    if manifest.is_file():
        import pandas as pd
        df = pd.read_csv(manifest, keep_default_na=False)
        n_videos = int(((df["split"] == "train") & (df["label"] == 0) & (df["status"] == "ok")).sum())
    batches = None if n_videos is None else (
        math.ceil(n_videos * tr.clips_per_video / tr.batch_size) * (tr.epochs_phase_a + tr.epochs_phase_b))
    hours = None if batches is None else batches * sec / 3600.0
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "sec_per_batch": sec,
            "train_videos": n_videos, "batches": batches, "hours": hours,
            "cost": None if hours is None else hours * params.budget.cost_per_hour,
            "max_budget": params.budget.max_budget}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stfmamba.profiles", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("apply", "show", "list", "estimate"))
    ap.add_argument("name", nargs="?", help="profile name (profiles/<name>.yaml)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profiles-dir", default=str(PROFILES_DIR))
    args = ap.parse_args(argv)
    if args.command == "estimate":
        from stfmamba.config import load_params
        e = estimate(load_params(args.params))
        print(f"{e['device']}: {e['sec_per_batch']:.3f} s per batch of 2x{load_params(args.params).training.batch_size} clips")
        if e["batches"] is None:
            print("training set size unknown (no preprocessed manifest yet): run `dvc pull` or the preprocess stage")
        else:
            print(f"{e['train_videos']} training videos -> {e['batches']} batches (phase A + B) ~ {e['hours']:.2f} h "
                  f"~ {e['cost']:.2f} at budget.cost_per_hour (budget.max_budget {e['max_budget']:.2f})")
        return 0
    if args.command == "list":
        print("\n".join(available(Path(args.profiles_dir))))
        return 0
    if not args.name:
        ap.error(f"{args.command} needs a profile name: {', '.join(available(Path(args.profiles_dir)))}")
    try:
        changes = apply_profile(args.name, args.params, Path(args.profiles_dir), dry_run=args.command == "show")
    except ConfigError as err:
        print(f"profiles: {err}", file=sys.stderr)
        return 2
    verb = "would change" if args.command == "show" else "changed"
    print(f"profile {args.name}: {verb} {len(changes)} values of {args.params}")
    for key, old, new in changes:
        print(f"  {key}: {old!r} -> {new!r}")
    dvc_yaml = Path(args.params).parent / "dvc.yaml"
    if args.command != "show" and dvc_yaml.is_file():
        from stfmamba import pipeline   # files params name (trunk_init, distill_from) are deps: keep dvc.yaml in step
        synced = pipeline.write(dvc_yaml)
        if synced:
            print(f"{dvc_yaml}: the file deps of {', '.join(synced)} follow the profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
