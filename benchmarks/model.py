"""Model speed on this machine: scans vs a sequential loop, and the training step vs the matmul ceiling.

Run from the project root::

    python benchmarks/model.py                 # everything (a few minutes on 2 cores)
    python benchmarks/model.py --skip-full     # without the 224 px x 32 frame profile
    python benchmarks/model.py --json metrics/bench_model.json

(a) pure-PyTorch chunked scans (Mamba-1 selective scan, Mamba-2 SSD) against the sequential
    reference loop (like mamba-ssm's ``selective_scan_ref``), forward + backward, T = 8, 32, 128;
(b) forward + backward clips/s and GFLOP per clip (``torch.utils.flop_counter``) of the model,
    demo profile (params.yaml) and full profile (ModelConfig defaults: 224 px, 32 frames), and the
    achieved GFLOP/s as a fraction of an fp32 matmul ceiling measured in the same process;
(c) memory: bytes of tensors saved for backward (activation memory) and the process peak RSS.
All ratios are taken within this one process, so machine load affects both sides alike.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from stfmamba.config import ModelConfig, STFV8Config, load_params
from stfmamba.models import build_model
from stfmamba.ops.selective_scan import selective_scan_chunked, selective_scan_ref
from stfmamba.ops.ssd import ssd_chunked, ssd_ref


def timed(fn, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_ceiling(dtype: torch.dtype, n: int = 1536, reps: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matmul (best of ``reps`` runs of 8)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        for _ in range(8):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * 8 / best / 1e9


def fwd_bwd(fn, inputs: list[torch.Tensor]):
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]

    def run():
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        return out
    return run


def bench_scans(lengths=(8, 32, 128), sizes=((64, 128, 8), (4, 32, 8))) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for (b, d, n), L in [(s, L) for s in sizes for L in lengths]:
        # Mamba-1: (b sequences, d channels, d_state n); 64x128x8 ~ a 4x4 stage over 4 clips, 4x32x8 ~ the WSS time stream
        u, dt = torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g)
        A = -torch.rand(d, n, generator=g) * 4 - 0.1
        B, C, D = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g), torch.randn(d, generator=g)
        bias = torch.randn(d, generator=g)
        args = [u, dt, A, B, C, D]
        fast = lambda *a: selective_scan_chunked(*a, delta_bias=bias, delta_softplus=True)  # noqa: E731
        ref = lambda *a: selective_scan_ref(*a, delta_bias=bias, delta_softplus=True)  # noqa: E731
        t_fast = timed(fwd_bwd(fast, args), reps=5)
        t_ref = timed(fwd_bwd(ref, args), reps=3)
        err = float((fast(*args) - ref(*[a.double() for a in args]).float()).abs().max())
        rows.append(dict(op="selective_scan", T=L, shape=f"u ({b},{d},{L}) N={n}", fast_ms=1e3 * t_fast,
                         loop_ms=1e3 * t_ref, speedup=t_ref / t_fast, max_abs_err=err))
        # Mamba-2 SSD: as many sequences as the scan above, 6 heads x headdim 16, d_state 8
        b, h, p, n = 4 * b, 6, 16, 8
        x, dts = torch.randn(b, L, h, p, generator=g), torch.randn(b, L, h, generator=g)
        A2 = -torch.rand(h, generator=g) * 4 - 0.1
        B2, C2 = torch.randn(b, L, 1, n, generator=g), torch.randn(b, L, 1, n, generator=g)
        args2 = [x, dts, A2, B2, C2]
        fast2 = lambda *a: ssd_chunked(*a, chunk_size=32, dt_softplus=True)  # noqa: E731
        ref2 = lambda *a: ssd_ref(*a, dt_softplus=True)  # noqa: E731
        t_fast = timed(fwd_bwd(fast2, args2), reps=5)
        t_ref = timed(fwd_bwd(ref2, args2), reps=3)
        err = float((fast2(*args2) - ref2(*[a.double() for a in args2]).float()).abs().max())
        rows.append(dict(op="ssd", T=L, shape=f"x ({b},{L},{h},{p}) N={n}", fast_ms=1e3 * t_fast,
                         loop_ms=1e3 * t_ref, speedup=t_ref / t_fast, max_abs_err=err))
        print(f"  T={L:4d}  selective_scan {rows[-2]['speedup']:6.1f}x (err {rows[-2]['max_abs_err']:.1e})"
              f"   ssd {rows[-1]['speedup']:6.1f}x (err {rows[-1]['max_abs_err']:.1e})", flush=True)
    return rows


def saved_tensor_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while running ``fn`` (activation memory)."""
    total, seen = 0, set()

    def pack(t: torch.Tensor):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def bench_model(name: str, cfg: STFV8Config, batch: int, amp: bool, ceiling: float, reps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    m = cfg.model
    x = torch.randn(batch, 3, m.num_frames, m.img_size, m.img_size)
    labels = torch.arange(batch) % 2

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        return F.cross_entropy(out["logits"].float(), labels)

    def step():
        loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        forward().backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    act = saved_tensor_bytes(forward)
    sec = timed(step, reps=reps, warmup=1 if reps > 1 else 0)
    row = dict(profile=name, model=cfg.describe(), batch=batch, amp="bf16" if amp else "fp32",
               params_M=sum(p.numel() for p in model.parameters()) / 1e6, step_s=sec, clips_per_s=batch / sec,
               gflop_per_clip=flops / batch / 1e9, gflops=flops / sec / 1e9, frac_fp32_ceiling=flops / sec / 1e9 / ceiling,
               activation_MB=act / 2 ** 20)
    print(f"  {name:28s} b={batch} {row['amp']}: {row['clips_per_s']:7.2f} clips/s, {row['gflop_per_clip']:7.2f} "
          f"GFLOP/clip, {row['gflops']:6.1f} GFLOP/s = {100 * row['frac_fp32_ceiling']:5.1f}% of fp32 ceiling, "
          f"activations {row['activation_MB']:.0f} MB", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--skip-full", action="store_true", help="skip the 224 px x 32 frame profile")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every measurement (default 1: on a shared 2-core machine OpenMP "
                         "barriers with 2 threads make small ops 3-10x slower and the timings erratic)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    ceiling = matmul_ceiling(torch.float32)
    ceiling_bf16 = matmul_ceiling(torch.bfloat16)
    print(f"matmul ceiling: fp32 {ceiling:.1f} GFLOP/s, bf16 {ceiling_bf16:.1f} GFLOP/s", flush=True)
    print("(a) chunked scans vs sequential loop, forward + backward:", flush=True)
    scans = bench_scans()
    print("(b, c) model forward + backward + AdamW step:", flush=True)
    demo_a, demo_b = STFV8Config.phase_a(params), STFV8Config.phase_b(params)
    models = [bench_model("demo Phase A (V7.3)", demo_a, 8, True, ceiling, 5),
              bench_model("demo Phase B (params flags)", demo_b, 8, True, ceiling, 5),
              bench_model("demo Phase B (params flags)", demo_b, 8, False, ceiling, 3),
              bench_model("demo Phase B (params flags)", demo_b, 1, True, ceiling, 5),
              bench_model("demo Phase A (V7.3)", demo_a, 1, True, ceiling, 5)]
    if not args.skip_full:
        # 224 px, 32 frames, dims 48/96/192/384/384 (ModelConfig defaults), the params.yaml flags, with
        # per-block gradient checkpointing: without it the all-flags model needs > 17 GB at batch 1
        # on CPU (the Mamba-1 scans of Bi-Mamba / WSS keep (b, d, n, L) fp32 states for backward)
        full = dataclasses.replace(STFV8Config.phase_b(params), model=ModelConfig(),
                                   training=dataclasses.replace(params.training, grad_checkpointing=True))
        models.append(bench_model("full Phase B (ckpt)", full, 1, True, ceiling, 1))
    # the ceiling is re-measured at the end; the best of both is used, so machine load during the
    # first measurement cannot flatter the fractions
    ceiling_end = matmul_ceiling(torch.float32)
    if ceiling_end > ceiling:
        ceiling = ceiling_end
        for row in models:
            row["frac_fp32_ceiling"] = row["gflops"] / ceiling
    print(f"fp32 matmul ceiling at the end: {ceiling_end:.1f} GFLOP/s; fractions of the best ceiling "
          f"({ceiling:.1f}):", flush=True)
    for row in models:
        print(f"  {row['profile']:28s} b={row['batch']} {row['amp']}: {100 * row['frac_fp32_ceiling']:5.1f}%")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    print(f"process peak RSS: {peak:.0f} MB", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(ceiling_fp32_gflops=ceiling, ceiling_bf16_gflops=ceiling_bf16, scans=scans,
                           models=models, peak_rss_MB=peak), fh, indent=2)


if __name__ == "__main__":
    main()
