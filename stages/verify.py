"""DVC stage `verify`: counts, failures and npz checks of the preprocessed data -> metrics/data.json.

    python stages/verify.py [--params params.yaml] [--out metrics/data.json]

Exits with status 1 and a message saying what is missing and how to fix it when a split that
training or testing needs is empty, or when an npz breaks the contract.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stfmamba.config import ConfigError, load_params
from stfmamba.data.verify import verify
from stfmamba.io import write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="metrics/data.json")
    args = ap.parse_args(argv)
    try:
        report = verify(load_params(args.params))
    except ConfigError as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_text(out, json.dumps(report, indent=1, sort_keys=True) + "\n")
    for name, rep in report["datasets"].items():
        print(f"{name}: {rep['videos']} videos, {rep['ok']} ok, {rep['failed']} failed {rep['failure_reasons'] or ''}")
        for split, methods in sorted(rep["splits"].items()):
            print(f"  {split:5s} " + ", ".join(f"{m} {v['ok']}/{v['ok'] + v['failed']}" for m, v in sorted(methods.items())))
    if report["errors"]:
        print("verify: data not usable:\n  " + "\n  ".join(report["errors"]), file=sys.stderr)
        return 1
    print(f"verify: ok -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
