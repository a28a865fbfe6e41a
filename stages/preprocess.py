"""DVC stage `preprocess`: face crops + landmarks for every dataset named in params.data.

    python stages/preprocess.py [--params params.yaml] [--merge] [--no-progress]

Reads ``data`` and ``preprocess`` from params.yaml; writes
``<data.preprocessed_dir>/<dataset>/manifest.csv`` and one npz per video. With
``preprocess.num_shards > 1`` each machine runs its ``shard_index`` and writes a manifest part;
``--merge`` combines the parts once all are copied into place.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stfmamba.config import ConfigError, load_params
from stfmamba.data.adapters import build_adapter
from stfmamba.data.manifest import ManifestError, merge_shards
from stfmamba.data.preprocess import preprocess_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--merge", action="store_true", help="only merge the shard manifests")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        root = Path(params.data.preprocessed_dir)
        for name in params.data.used():
            if args.merge:
                print(f"merged -> {merge_shards(root / name, params.preprocess.num_shards)}")
                continue
            rows = build_adapter(params.data.datasets[name]).rows()
            print(preprocess_dataset(name, rows, params.preprocess, root / name, progress=not args.no_progress))
    except (ConfigError, ManifestError) as err:
        print(f"preprocess: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
