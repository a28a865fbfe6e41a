"""Shared by the training-step benchmarks: one timed optimizer step and interleaved medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable, Iterable

import torch


def timed_step(forward_loss: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, amp) -> float:
    """Seconds of one step: ``forward_loss()`` under CPU autocast (``amp`` a dtype, or None = fp32),
    backward, optimizer step."""
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        loss = forward_loss()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def interleaved_medians(step: Callable[[Hashable], float], keys: Iterable[Hashable], repeats: int) -> dict:
    """Median seconds of ``step(key)`` per key, the keys run in turn ``repeats`` times after one warm-up
    each (so a machine that slows down slows every variant alike)."""
    keys = list(keys)
    for k in keys:
        step(k)
    times = {k: [] for k in keys}
    for _ in range(repeats):
        for k in keys:
            times[k].append(step(k))
    return {k: statistics.median(v) for k, v in times.items()}


def report(batch: tuple[int, int, int], amp, fields: dict, detail: str, json_path: str | None) -> int:
    """Print ``<clips> clips x <frames> frames at <px> px (<amp>, <threads> thread(s)): <detail>`` and write
    the batch, precision and ``fields`` to ``json_path`` (if given). Returns 0 (the exit code)."""
    from stfmamba.io import write_json
    n, t, s = batch
    res = {"clips": n, "frames": t, "px": s, "amp": str(amp).replace("torch.", ""),
           "threads": torch.get_num_threads(), **fields}
    print(f"{n} clips x {t} frames at {s} px ({res['amp']}, {res['threads']} thread(s)): {detail}")
    if json_path:
        write_json(json_path, res)
    return 0


def parse_args(doc: str, argv: list[str] | None):
    """The step benchmarks' command line (``--params``, ``--repeats``, ``--json``) -> ``(args, params)``."""
    import argparse

    from stfmamba.config import load_params
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    return args, load_params(args.params)
