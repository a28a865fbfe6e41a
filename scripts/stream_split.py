"""Score a frame-stream video model (``model.frame_stream``) one stream at a time.

    python scripts/stream_split.py --model runs/x/models/phase_a.pt --out runs/x/split [--params params.yaml]

With the frame stream, a clip's logits are the STF head's plus the frame head's logits averaged over
the clip's frames. The static-clip AUC (one frame repeated) then mixes two effects: what the STF
stream reads from motion, and that a real clip averages T frames of per-frame evidence where a
static clip has one. This scores the demo test split through the evaluation engine three times,
real and static clips each: the whole model, the frame stream alone (the STF head's weights set to
zero) and the STF stream alone (the frame head's set to zero). The frame stream alone has no time
in it, so its real - static gap is the averaging effect only; the STF stream's gap is what time
gives it. Each is also scored on shuffled clips (the same frames out of order): the order gain. Prints one JSON line and writes ``<out>/stream_split.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import yaml

from stfmamba.config import Params, from_dict
from stfmamba.io import write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--max-clips-per-video", type=int, default=None,
                    help="score this many clips per video instead of the model file's count (all stored: "
                         "preprocess.num_segments * frames_per_segment // model.num_frames)")
    args = ap.parse_args(argv)

    from stfmamba.evaluation.run import evaluate_dataset, load_checkpoint, scoring_spec

    params = from_dict(Params, yaml.safe_load(Path(args.params).read_text()))
    model, cfg, meta = load_checkpoint(args.model)
    if getattr(model, "frame_head", None) is None:
        raise SystemExit(f"{args.model}: this model has no frame stream (model.frame_stream: false); nothing to split")
    spec = scoring_spec(meta, cfg, params, model_path=args.model, params_path=args.params, params_override=False)
    if args.max_clips_per_video is not None:
        if args.max_clips_per_video < 1:
            raise SystemExit(f"--max-clips-per-video must be >= 1, got {args.max_clips_per_video}")
        spec = spec.override("--max-clips-per-video", args.model, max_clips_per_video=args.max_clips_per_video)
    root = Path(params.data.preprocessed_dir)
    kw = dict(pre=params.preprocess, ev=params.eval, amp=params.training.amp, progress=False)
    out = Path(args.out)
    result = {"model": args.model}
    for name, silenced in (("whole", None), ("frame_stream", "head"), ("stf_stream", "frame_head")):
        m = model if silenced is None else copy.deepcopy(model)
        if silenced is not None:
            with torch.no_grad():
                for p in getattr(m, silenced).parameters():
                    p.zero_()
        res = evaluate_dataset(m, spec, params.data.test, root / params.data.test, out / name, **kw).metrics
        auc, static, shuffled = res["auc"], res.get("static_auc") or {}, res.get("shuffled_auc") or {}
        result[name] = {"auc": auc, "static_auc": static, "shuffled_auc": shuffled,
                        "gain": {k: round(auc[k] - static[k], 4) for k in auc
                                 if auc.get(k) is not None and static.get(k) is not None},
                        "order_gain": {k: round(auc[k] - shuffled[k], 4) for k in auc
                                       if auc.get(k) is not None and shuffled.get(k) is not None}}
    write_json(out / "stream_split.json", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
