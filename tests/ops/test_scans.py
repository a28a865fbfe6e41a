"""Selective scan (Mamba-1) and SSD (Mamba-2): every backend available here against a float64
sequential recurrence written out in the test, outputs and gradients."""
import pytest
import torch
import torch.nn.functional as F

from stfmamba.ops import selective_scan as ss
from stfmamba.ops import ssd

SCAN_BACKENDS = ["torch", "ref"] + (["cuda"] if ss._cuda_selective_scan is not None and torch.cuda.is_available() else [])
SSD_BACKENDS = ["torch", "ref"] + (["cuda"] if ssd._cuda_ssd is not None and torch.cuda.is_available() else [])
LENGTHS = [1, 7, 16, 37]   # 7 and 37 are not multiples of the chunk sizes used below


def recurrence_scan(u, delta, A, B, C, D, z, delta_bias):
    """float64 Mamba-1 recurrence, written independently of the package."""
    delta = F.softplus(delta + delta_bias[:, None])
    b, d, l = u.shape
    g = B.shape[1]
    Bx, Cx = B.repeat_interleave(d // g, 1), C.repeat_interleave(d // g, 1)   # (b, d, n, l)
    h = torch.zeros(b, d, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(l):
        h = torch.exp(delta[..., t, None] * A) * h + delta[..., t, None] * Bx[..., t] * u[..., t, None]
        ys.append((h * Cx[..., t]).sum(-1))
    return (torch.stack(ys, -1) + D[:, None] * u) * F.silu(z), h


def recurrence_ssd(x, dt, A, B, C, D, z, dt_bias):
    dt = F.softplus(dt + dt_bias)
    b, l, h, p = x.shape
    Bx, Cx = B.repeat_interleave(h // B.shape[2], 2), C.repeat_interleave(h // C.shape[2], 2)
    state = torch.zeros(b, h, p, B.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(l):
        state = torch.exp(dt[:, t] * A)[..., None, None] * state + torch.einsum(
            "bhp,bhn->bhpn", x[:, t] * dt[:, t, :, None], Bx[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Cx[:, t]))
    return (torch.stack(ys, 1) + D[:, None] * x) * F.silu(z), state


def _scan_inputs(length, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, d, n = 2, 4, 3
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(u=r(b, d, length), delta=r(b, d, length), A=-torch.rand(d, n, generator=g, dtype=torch.float64) * 2,
                B=r(b, groups, n, length), C=r(b, groups, n, length), D=r(d), z=r(b, d, length), delta_bias=r(d))


def _grads(out, inputs):
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad((out * w).sum(), inputs)


def _close(a, b, rtol=1e-4):
    a, b = a.detach(), b.detach()
    scale = b.abs().max().clamp(min=1.0)   # gradients that are exactly 0 compare absolutely
    assert float((a.double() - b).abs().max() / scale) <= rtol, float((a.double() - b).abs().max() / scale)


@pytest.mark.parametrize("backend", SCAN_BACKENDS)
@pytest.mark.parametrize("length", LENGTHS)
def test_selective_scan_matches_recurrence(backend, length):
    ref_in = _scan_inputs(length)
    ref_in = {k: v.requires_grad_() for k, v in ref_in.items()}
    y_ref, h_ref = recurrence_scan(**ref_in)
    g_ref = _grads(y_ref, list(ref_in.values()))
    dev = "cuda" if backend == "cuda" else "cpu"
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        inp = {k: v.detach().to(dev, dtype).requires_grad_() for k, v in ref_in.items()}
        y, h = ss.selective_scan_fn(**inp, delta_softplus=True, return_last_state=True, backend=backend)
        assert y.dtype == dtype and y.shape == y_ref.shape
        _close(y.cpu(), y_ref.detach(), tol)
        _close(h.cpu(), h_ref.detach(), tol)
        for got, want in zip(_grads(y, list(inp.values())), g_ref):
            _close(got.cpu(), want, tol)


def test_selective_scan_shared_B_C_layout():
    inp = _scan_inputs(9, groups=1)
    y3 = ss.selective_scan_blocked(inp["u"], inp["delta"], inp["A"], inp["B"][:, 0], inp["C"][:, 0])
    y4 = ss.selective_scan_ref(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"])
    torch.testing.assert_close(y3, y4)


@pytest.mark.parametrize("block_elems", [1, 300])
def test_blocked_scan_across_blocks_and_last_state_gradient(block_elems):
    """Blocks of one sequence, and blocks that leave a shorter last block (5 = 2 + 2 + 1 sequences),
    with a loss on the last state too: gradients flow through ``return_last_state``."""
    g = torch.Generator().manual_seed(3)
    b, d, n, l, groups = 5, 6, 3, 11, 3
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    u, delta, B, C, z = r(b, d, l), r(b, d, l), r(b, groups, n, l), r(b, groups, n, l), r(b, d, l)
    A = (-torch.rand(d, n, generator=g, dtype=torch.float64) * 2).requires_grad_()
    D, bias = r(d), r(d)
    inputs = [u, delta, A, B, C, D, z, bias]
    y, h = ss.selective_scan_blocked(u, delta, A, B, C, D, z, bias, True, True, block_elems=block_elems)
    y_ref, h_ref = recurrence_scan(u, delta, A, B, C, D, z, bias)
    _close(y, y_ref.detach(), 1e-10)
    _close(h, h_ref.detach(), 1e-10)
    w = torch.randn(h.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((y * y).sum() + (h * w).sum(), inputs)
    want = torch.autograd.grad((y_ref * y_ref).sum() + (h_ref * w).sum(), inputs)
    for a, b_ in zip(got, want):
        _close(a, b_, 1e-10)


@pytest.mark.parametrize("backend", SSD_BACKENDS)
@pytest.mark.parametrize("length", LENGTHS)
def test_ssd_matches_recurrence(backend, length):
    g = torch.Generator().manual_seed(1)
    b, h, p, grp, n = 2, 4, 3, 2, 5
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    ref_in = dict(x=r(b, length, h, p), dt=r(b, length, h), A=-torch.rand(h, generator=g, dtype=torch.float64) * 2,
                  B=r(b, length, grp, n), C=r(b, length, grp, n), D=r(h), z=r(b, length, h, p), dt_bias=r(h))
    ref_in = {k: v.requires_grad_() for k, v in ref_in.items()}
    y_ref, s_ref = recurrence_ssd(**ref_in)
    g_ref = _grads(y_ref, list(ref_in.values()))
    dev = "cuda" if backend == "cuda" else "cpu"
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        if backend == "cuda" and dtype == torch.float64:
            continue
        inp = {k: v.detach().to(dev, dtype).requires_grad_() for k, v in ref_in.items()}
        kw = {k: inp[k] for k in ("D", "z", "dt_bias")}
        y, s = ssd.mamba_chunk_scan_combined(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, **kw,
                                             dt_softplus=True, return_final_states=True, backend=backend)
        assert y.shape == y_ref.shape
        _close(y.cpu(), y_ref.detach(), tol)
        _close(s.cpu(), s_ref.detach(), tol)
        for got, want in zip(_grads(y, list(inp.values())), g_ref):
            _close(got.cpu(), want, tol)


def test_ssd_initial_states_chain():
    """Scanning two halves with the carried state equals scanning the whole sequence."""
    g = torch.Generator().manual_seed(2)
    x, dt = torch.randn(1, 20, 2, 3, generator=g), torch.rand(1, 20, 2, generator=g)
    A, B, C = -torch.rand(2, generator=g), torch.randn(1, 20, 1, 4, generator=g), torch.randn(1, 20, 1, 4, generator=g)
    full = ssd.ssd_chunked(x, dt, A, B, C, 8)
    y1, s1 = ssd.ssd_chunked(x[:, :11], dt[:, :11], A, B[:, :11], C[:, :11], 8, return_final_states=True)
    y2 = ssd.ssd_chunked(x[:, 11:], dt[:, 11:], A, B[:, 11:], C[:, 11:], 8, initial_states=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, atol=1e-5, rtol=1e-5)


def test_scans_keep_fp32_under_autocast():
    inp = {k: v.float() for k, v in _scan_inputs(12).items()}
    want = ss.selective_scan_fn(**inp, delta_softplus=True, backend="ref")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ss.selective_scan_fn(**inp, delta_softplus=True, backend="torch")
    _close(got, want.double(), 1e-4)
    # SSD is made of matmuls: without its fp32 guard, bf16 autocast would cost it ~5e-2
    g = torch.Generator().manual_seed(4)
    x, dt = torch.randn(2, 20, 3, 4, generator=g), torch.randn(2, 20, 3, generator=g)
    A, B, C = -torch.rand(3, generator=g), torch.randn(2, 20, 1, 5, generator=g), torch.randn(2, 20, 1, 5, generator=g)
    want = ssd.ssd_ref(x, dt, A, B, C, dt_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ssd.ssd_chunked(x, dt, A, B, C, 4, dt_softplus=True)
    assert got.dtype == torch.float32
    _close(got, want.double(), 1e-4)


def test_channels_last_convs_equal_conv1d():
    from stfmamba.models.mamba import depthwise_conv_seq, grouped_linear
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(2, 6, 11, generator=g), torch.randn(6, 1, 5, generator=g), torch.randn(6, generator=g)
    cl = lambda t: t.transpose(1, 2)                                   # noqa: E731  (B, C, L) <-> (B, L, C)
    causal = cl(depthwise_conv_seq(cl(x), w, b, causal=True))
    torch.testing.assert_close(causal, F.conv1d(x, w, b, padding=4, groups=6)[..., :11])
    torch.testing.assert_close(cl(depthwise_conv_seq(cl(x), w, b)), F.conv1d(x, w, b, padding=2, groups=6))
    torch.testing.assert_close(cl(depthwise_conv_seq(cl(x), w, None, silu=True)),
                               F.silu(F.conv1d(x, w, None, padding=2, groups=6)))
    xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))     # hand-written backward
    for causal in (True, False):
        assert torch.autograd.gradcheck(lambda *a: depthwise_conv_seq(*a, causal=causal, silu=True), (cl(xd), wd, bd))
    for groups in (1, 2):
        w1 = torch.randn(4 * groups, 6 // groups, 1, generator=g)
        got = grouped_linear(cl(x), w1).flatten(2)                    # (B, L, groups·4)
        torch.testing.assert_close(cl(got), F.conv1d(x, w1, groups=groups))


@pytest.mark.skipif(ss._cuda_selective_scan is not None, reason="mamba-ssm is installed")
def test_forcing_missing_cuda_backend_says_how_to_fix():
    inp = {k: v.float() for k, v in _scan_inputs(4).items()}
    with pytest.raises(RuntimeError, match=r"pip install \.\[gpu\]"):
        ss.selective_scan_fn(**inp, backend="cuda")
    with pytest.raises(RuntimeError, match=r"pip install \.\[gpu\]"):
        ssd.mamba_chunk_scan_combined(torch.randn(1, 4, 2, 3), torch.rand(1, 4, 2), -torch.ones(2),
                                      torch.randn(1, 4, 1, 2), torch.randn(1, 4, 1, 2), 4, backend="cuda")
    with pytest.raises(ValueError, match="unknown"):
        ss.selective_scan_fn(**inp, backend="triton")


@pytest.mark.parametrize("length", [5, 8, 13])
def test_ssd_single_chunk_shortcut_matches_reference(length):
    """One chunk, no states requested: the shortcut path equals the loop (and the multi-chunk path)."""
    g = torch.Generator().manual_seed(3)
    for heads, groups in ((3, 1), (4, 2)):
        x, dt = torch.randn(2, length, heads, 4, generator=g), torch.randn(2, length, heads, generator=g)
        A = -torch.rand(heads, generator=g)
        B, C = (torch.randn(2, length, groups, 5, generator=g) for _ in range(2))
        want = ssd.ssd_ref(x, dt, A, B, C, dt_softplus=True)
        torch.testing.assert_close(ssd.ssd_chunked(x, dt, A, B, C, 16, dt_softplus=True), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ssd.ssd_chunked(x, dt, A, B, C, 4, dt_softplus=True), want, atol=1e-5, rtol=1e-4)


def test_fast_softplus_equals_torch_softplus_values_and_gradient():
    x = torch.cat([torch.linspace(-60, 60, 2001, dtype=torch.float64), torch.tensor([0.0, 1e-8, -1e-8], dtype=torch.float64)])
    want = F.softplus(x, threshold=1000)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        xi = x.to(dtype).requires_grad_()
        got = ss.softplus(xi)
        rel = ((got.double() - want) / want).abs().max()
        assert rel <= tol, (dtype, float(rel))
        (g,) = torch.autograd.grad(got.sum(), xi)
        torch.testing.assert_close(g.double(), torch.sigmoid(x), atol=tol, rtol=tol)
