"""DVC stage `demo`: build the embedded demo dataset (FF++ layout) and the cross-dataset demo.

    python stages/demo.py [--params params.yaml] [--contact-sheet plots/demo_contact_sheet.png]

Reads the ``demo`` section: cuts ``demo.source_dir`` into ``demo.clip_frames``-frame clips named
and split as ``demo.splits_dir`` lists them, writes the reals and the four demo manipulations of
the val/test reals under ``demo.out_dir`` and the cross demo (``list.csv``) under ``demo.cross_dir``.
"""
from __future__ import annotations

import argparse
import sys

from stfmamba.config import ConfigError, load_params
from stfmamba.data.demo.cut import build_demo
from stfmamba.data.demo.sheet import contact_sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--contact-sheet", default=None, metavar="PNG",
                    help="only write an eye-check PNG of the already built demo")
    args = ap.parse_args(argv)
    try:
        cfg = load_params(args.params).demo
        if args.contact_sheet:
            print(f"demo: contact sheet -> {contact_sheet(cfg, args.contact_sheet)}")
            return 0
        build_demo(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
