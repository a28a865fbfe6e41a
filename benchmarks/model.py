"""Model speed on this machine: scans vs a sequential loop, and the training step vs the matmul ceiling.

Run from the project root::

    python benchmarks/model.py                 # everything (a few minutes on 2 cores)
    python benchmarks/model.py --skip-full     # without the 224 px x 32 frame profile
    python benchmarks/model.py --json metrics/bench_model.json

(a) the pure-PyTorch scans (Mamba-1 selective scan, Mamba-2 SSD) against sequential loops over
    time (one like mamba-ssm's ``selective_scan_ref``, one stricter), forward and forward +
    backward, T = 8, 32, 128;
(b) forward + backward clips/s and GFLOP per clip (``torch.utils.flop_counter``, without the zeros
    of the DWT's banded axis matrices) of the model, demo profile (params.yaml) and full profile
    (ModelConfig defaults: 224 px, 32 frames), and the achieved GFLOP/s (best step) as a fraction
    of an fp32 matmul ceiling measured in the same process: both of the ceiling sampled between
    that model's steps and of the best ceiling of the whole run (the conservative one);
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
from stfmamba.ops.selective_scan import selective_scan_blocked, selective_scan_ref
from stfmamba.ops.ssd import ssd_chunked, ssd_ref
from stfmamba.training.optim import build_optimizer


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


def loop_materialised(u, delta, A, B, C, D, delta_bias):
    """The straightforward sequential loop the way mamba-ssm's ``selective_scan_ref`` does it (our
    own code, same algorithm): the ``(b, d, l, n)`` decays ``exp(delta A)`` and inputs ``delta B u``
    are materialised up front, then one step per time index updates the state and reads it out.
    B, C: ``(b, n, l)`` (shared) or ``(b, g, n, l)`` (repeated to every channel of a group, as there)."""
    delta = F.softplus(delta + delta_bias[:, None])
    decay = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if B.dim() == 3:
        inp = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    else:
        B = B.repeat_interleave(u.shape[1] // B.shape[1], 1)
        inp = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    if C.dim() == 4:
        C = C.repeat_interleave(u.shape[1] // C.shape[1], 1)
    h, ys = u.new_zeros(u.shape[0], u.shape[1], A.shape[1]), []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + inp[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]) if C.dim() == 3 else
                  torch.einsum("bdn,bdn->bd", h, C[:, :, :, t]))
    return torch.stack(ys, dim=2) + u * D[:, None]


def ssd_as_selective_scan(scan, x, dt, A, B, C):
    """SSD is the selective scan with one decay per head: channels ``d = h·p`` with ``A[d, n] = A_h``
    and ``delta[b, d, l] = dt[b, l, h]``. Runs ``scan`` (a selective-scan loop) on that problem and
    returns SSD's layout ``(b, l, h, p)``; used to time the mamba-ssm-style loop on SSD inputs."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    u = x.permute(0, 2, 3, 1).reshape(b, h * p, l)
    delta = dt.permute(0, 2, 1).repeat_interleave(p, dim=1)
    A1 = A.repeat_interleave(p)[:, None].expand(h * p, n)
    zeros = x.new_zeros(h * p)
    y = scan(u, delta, A1, B[:, :, 0].transpose(1, 2), C[:, :, 0].transpose(1, 2), zeros, zeros)
    return y.reshape(b, h, p, l).permute(0, 3, 1, 2)


def time_against_loops(row: dict, fast, loops: dict, args: list, rounds: int = 3, fast_per_round: int = 2) -> dict:
    """Fill ``row`` with forward and forward + backward milliseconds (medians) of ``fast`` and of each
    loop baseline in ``loops`` (name -> fn), the speed-ups over each baseline, and print one line.

    The runs are interleaved: each round times ``fast`` ``fast_per_round`` times, then every
    baseline once, so a machine that slows down part-way (this VM drifts by 20-50 %) slows both
    sides of every ratio alike."""
    fns = {"fast": fast, **loops}
    for kind in ("fwd", "fwdbwd"):
        runs = {key: (fwd_bwd(fn, args) if kind == "fwdbwd" else (lambda f=fn: f(*args)))
                for key, fn in fns.items()}
        samples = {key: [] for key in fns}
        for r in range(rounds + 1):                                   # round 0 is the warm-up
            for key, run in runs.items():
                for _ in range(fast_per_round if key == "fast" else 1):
                    with torch.set_grad_enabled(kind == "fwdbwd"):
                        t0 = time.perf_counter()
                        run()
                        if r:
                            samples[key].append(time.perf_counter() - t0)
        for key, ts in samples.items():
            row[f"{key}_{kind}_ms"] = 1e3 * sorted(ts)[len(ts) // 2]
    for base in loops:
        for kind in ("fwd", "fwdbwd"):
            row[f"speedup_{kind}_vs_{base}"] = row[f"{base}_{kind}_ms"] / row[f"fast_{kind}_ms"]
    vs = " | ".join(f"vs {base.replace('loop_', '').replace('_', '-')} loop "
                    f"{row[f'speedup_fwd_vs_{base}']:5.1f}x / {row[f'speedup_fwdbwd_vs_{base}']:5.1f}x"
                    for base in loops)
    print(f"  {row['op']:14s} {row['shape']:34s} fast {row['fast_fwd_ms']:7.1f} / {row['fast_fwdbwd_ms']:7.1f} ms"
          f" | {vs} (fwd / fwd+bwd; err {row['max_abs_err']:.1e})", flush=True)
    return row


def bench_scans(lengths=(8, 32, 128)) -> list[dict]:
    """Selective scan and SSD, forward and forward + backward, against the sequential loops.

    Selective scan shapes: ``u (256, 64, L)``, N = 16, one B/C group (the shape quoted for
    mamba-ssm's reference in the developers' guide) and ``u (128, 384, L)``, N = 8, two groups (the
    Bi-Mamba call of the demo Phase A model, 8 clips). SSD: ``x (1024, L, 6, 16)``, N = 8 (the
    second Hydra stage of the demo Phase B model). Two loop baselines each: the mamba-ssm-style loop
    that materialises ``(b, d, l, n)`` decays and inputs (what the issue names; for SSD run on the
    equivalent selective-scan problem, :func:`ssd_as_selective_scan`) and a stricter per-step loop
    that never materialises (:func:`selective_scan_ref`, :func:`stfmamba.ops.ssd.ssd_ref`).
    """
    rows = []
    g = torch.Generator().manual_seed(0)
    for (b, d, n, groups), L in [(s, L) for s in ((256, 64, 16, 1), (128, 384, 8, 2)) for L in lengths]:
        u, dt = torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g)
        A = -torch.rand(d, n, generator=g) * 4 - 0.1
        bc_shape = (b, n, L) if groups == 1 else (b, groups, n, L)       # mamba-ssm's two layouts
        B, C = torch.randn(*bc_shape, generator=g), torch.randn(*bc_shape, generator=g)
        D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
        args = [u, dt, A, B, C, D]
        fast = lambda *a: selective_scan_blocked(*a, delta_bias=bias, delta_softplus=True)  # noqa: E731
        step = lambda *a: selective_scan_ref(*a, delta_bias=bias, delta_softplus=True)  # noqa: E731
        mat = lambda *a: loop_materialised(*a, bias)  # noqa: E731
        want = selective_scan_ref(*[a.double() for a in args], delta_bias=bias.double(), delta_softplus=True)
        row = dict(op="selective_scan", T=L, shape=f"u ({b},{d},{L}) N={n} groups={groups}",
                   max_abs_err=float((fast(*args) - want.float()).abs().max()))
        rows.append(time_against_loops(row, fast, {"loop_materialised": mat, "loop_per_step": step}, args))
    for L in lengths:
        b, h, p, n = 1024, 6, 16, 8
        x, dts = torch.randn(b, L, h, p, generator=g), torch.randn(b, L, h, generator=g)
        A2 = -torch.rand(h, generator=g) * 4 - 0.1
        B2, C2 = torch.randn(b, L, 1, n, generator=g), torch.randn(b, L, 1, n, generator=g)
        args2 = [x, dts, A2, B2, C2]
        fast2 = lambda *a: ssd_chunked(*a, chunk_size=64, dt_softplus=True)  # noqa: E731
        ref2 = lambda *a: ssd_ref(*a, dt_softplus=True)  # noqa: E731
        mat2 = lambda *a: ssd_as_selective_scan(loop_materialised, *a)  # noqa: E731
        want = ref2(*[a.double() for a in args2]).float()
        row = dict(op="ssd", T=L, shape=f"x ({b},{L},{h},{p}) N={n}",
                   max_abs_err=float((fast2(*args2) - want).abs().max()),
                   max_abs_err_loop_materialised=float((mat2(*args2) - want).abs().max()))
        rows.append(time_against_loops(row, fast2, {"loop_materialised": mat2, "loop_per_step": ref2}, args2))
    return rows


def sweep_blocks(L: int = 32) -> list[dict]:
    """Forward + backward time of the blocked selective scan for work-buffer sizes 2^17..2^21
    (how ``selective_scan.BLOCK_ELEMS`` was chosen), at the two selective-scan shapes of (a)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for b, d, n, groups in ((256, 64, 16, 1), (128, 384, 8, 2)):
        u, dt = torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g)
        A = -torch.rand(d, n, generator=g) * 4 - 0.1
        B, C = torch.randn(b, groups, n, L, generator=g), torch.randn(b, groups, n, L, generator=g)
        for k in range(17, 22):
            fn = lambda *a: selective_scan_blocked(*a, delta_softplus=True, block_elems=1 << k)  # noqa: E731,B023
            ms = 1e3 * timed(fwd_bwd(fn, [u, dt, A, B, C]), reps=5)
            rows.append(dict(shape=f"u ({b},{d},{L}) N={n} groups={groups}", block_elems=1 << k, fwdbwd_ms=ms))
            print(f"  u ({b},{d},{L}) N={n}: block_elems 2^{k}: {ms:7.1f} ms", flush=True)
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
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.05)   # the trainer's optimizer
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
    flops, dwt_flops = model_flops(counter)
    act = saved_tensor_bytes(forward)
    times, ceilings = interleaved_times(step, reps=reps, warmup=1 if reps > 1 else 0)
    best, sec = times[0], times[len(times) // 2]
    # the fraction uses the best step time, the same estimator as the best-of matmul ceiling it is
    # divided by (on this shared VM a median against a best-of ceiling is biased low); the
    # median-based fraction is kept alongside
    row = dict(profile=name, model=cfg.describe(), batch=batch, amp="bf16" if amp else "fp32",
               params_M=sum(p.numel() for p in model.parameters()) / 1e6, step_s=sec, step_best_s=best,
               clips_per_s=batch / sec, gflop_per_clip=flops / batch / 1e9,
               dwt_matrix_gflop_per_clip=dwt_flops / batch / 1e9, gflops=flops / best / 1e9,
               activation_MB=act / 2 ** 20, ceiling_interleaved_gflops=ceilings)
    row["frac_interleaved_ceiling"] = flops / best / 1e9 / ceilings
    set_fractions(row, flops, max(ceiling, ceilings))
    print(f"  {name:28s} b={batch} {row['amp']}: {row['clips_per_s']:7.2f} clips/s (median), {row['gflop_per_clip']:7.2f} "
          f"GFLOP/clip, {row['gflops']:6.1f} GFLOP/s = {100 * row['frac_interleaved_ceiling']:5.1f}% of the "
          f"interleaved fp32 ceiling ({ceilings:.0f}) and {100 * row['frac_fp32_ceiling']:5.1f}% of the run's best "
          f"(best step; median {100 * row['frac_fp32_ceiling_median']:5.1f}%), "
          f"activations {row['activation_MB']:.0f} MB", flush=True)
    return row


def model_flops(counter: FlopCounterMode) -> tuple[float, float]:
    """(FLOPs of the model, FLOPs of the DWT's axis matrices), forward + backward.

    :func:`stfmamba.ops.dwt3d.dwt3d` applies each axis as a dense matmul with a banded matrix:
    the flop counter counts the zeros too (~4% of the demo model's total). They are left out of
    the model's count, so the achieved fraction is not flattered by them."""
    counts = counter.get_flop_counts()
    total = lambda key: sum(counts.get(key, {}).values())  # noqa: E731
    dwt = sum(total(k) - total(k + ".proj") for k in counts if k.endswith(".wavelet"))
    return counter.get_total_flops() - dwt, dwt


def interleaved_times(step, reps: int, warmup: int = 1, n: int = 1536) -> tuple[list[float], float]:
    """Sorted seconds of ``step()`` over ``reps`` runs, with one fp32 ``n x n`` matmul timed after
    each: returns the step times and the best GFLOP/s of those matmuls. Both best-of estimates come
    from the same stretch of time, so a machine that speeds up or slows down during the run (this
    VM drifts by 20-50 %) moves both alike."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(warmup):
        step()
        a @ b
    times, mm = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a @ b
        mm.append(time.perf_counter() - t0)
    return sorted(times), 2 * n ** 3 / min(mm) / 1e9


def set_fractions(row: dict, flops: float, ceiling: float) -> None:
    row["flops"] = flops
    row["frac_fp32_ceiling"] = flops / row["step_best_s"] / 1e9 / ceiling
    row["frac_fp32_ceiling_median"] = flops / row["step_s"] / 1e9 / ceiling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--skip-full", action="store_true", help="skip the 224 px x 32 frame profile")
    ap.add_argument("--part", choices=("all", "scans", "models"), default="all", help="run only (a) or only (b, c)")
    ap.add_argument("--sweep-blocks", action="store_true", help="only time the blocked scan's work-buffer sizes")
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
    if args.sweep_blocks:
        print("blocked selective scan, forward + backward, by work-buffer size:", flush=True)
        sweep_blocks()
        return
    scans, models = [], []
    if args.part in ("all", "scans"):
        print("(a) pure-PyTorch scans vs sequential loops (forward / forward + backward):", flush=True)
        scans = bench_scans()
    if args.part in ("all", "models"):
        print("(b, c) model forward + backward + AdamW step:", flush=True)
        demo_a, demo_b = STFV8Config.phase_a(params), STFV8Config.phase_b(params)
        models = [bench_model("demo Phase A (V7.3)", demo_a, 8, True, ceiling, 7),
                  bench_model("demo Phase B (params flags)", demo_b, 8, True, ceiling, 7),
                  bench_model("demo Phase B (params flags)", demo_b, 8, False, ceiling, 3),
                  bench_model("demo Phase B (params flags)", demo_b, 1, True, ceiling, 5),
                  bench_model("demo Phase A (V7.3)", demo_a, 1, True, ceiling, 5)]
    if args.part in ("all", "models") and not args.skip_full:
        # 224 px, 32 frames, dims 48/96/192/384/384 (ModelConfig defaults), the params.yaml flags, with
        # per-block gradient checkpointing: without it the all-flags model needs > 17 GB at batch 1
        # on CPU (the Mamba-1 scans of Bi-Mamba / WSS keep (b, d, n, L) fp32 states for backward)
        full = dataclasses.replace(STFV8Config.phase_b(params), model=ModelConfig(),
                                   training=dataclasses.replace(params.training, grad_checkpointing=True))
        models.append(bench_model("full Phase B (ckpt)", full, 1, True, ceiling, 1))
    # the ceiling is re-measured at the end; the best of every ceiling measured (start, end and the
    # samples interleaved with each model's steps) is the conservative denominator
    ceiling_end = matmul_ceiling(torch.float32)
    ceiling = max([ceiling, ceiling_end] + [row["ceiling_interleaved_gflops"] for row in models])
    for row in models:
        set_fractions(row, row["flops"], ceiling)
    print(f"fp32 matmul ceiling at the end: {ceiling_end:.1f} GFLOP/s; best of the run {ceiling:.1f}. Fractions "
          "(best step) of the ceiling interleaved with the steps / of the run's best ceiling:", flush=True)
    for row in models:
        print(f"  {row['profile']:28s} b={row['batch']} {row['amp']}: {100 * row['frac_interleaved_ceiling']:5.1f}% / "
              f"{100 * row['frac_fp32_ceiling']:5.1f}% (median step vs run's best: "
              f"{100 * row['frac_fp32_ceiling_median']:5.1f}%)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    print(f"process peak RSS: {peak:.0f} MB", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(ceiling_fp32_gflops=ceiling, ceiling_bf16_gflops=ceiling_bf16, scans=scans,
                           models=models, peak_rss_MB=peak), fh, indent=2)


if __name__ == "__main__":
    main()
