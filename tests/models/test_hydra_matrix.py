"""HydraMixer's token mixing against the explicit L×L quasiseparable matrix of its definition."""
import torch
import torch.nn.functional as F

from stfmamba.models.hydra import HydraMixer, hydra_mix


def ssm_matrix(dt, A, B, C):
    """Dense causal SSD matrix for one head: M[t, s] = C_t·B_s · exp(A Σ_{s<k≤t} dt_k) · dt_s (s ≤ t)."""
    L = dt.shape[0]
    M = torch.zeros(L, L, dtype=dt.dtype)
    for t in range(L):
        for s in range(t + 1):
            M[t, s] = (C[t] @ B[s]) * torch.exp(A * dt[s + 1:t + 1].sum()) * dt[s]
    return M


def quasiseparable_matrix(dt_fw, dt_bw, A, B, C, D):
    """M = Shift·SS_fw + J·Shift·SS_bw(flipped inputs)·J + D·I."""
    L = dt_fw.shape[0]
    shift = torch.diag(torch.ones(L - 1, dtype=dt_fw.dtype), -1)
    J = torch.eye(L, dtype=dt_fw.dtype).flip(0)
    fw = shift @ ssm_matrix(dt_fw, A, B, C)
    bw = J @ shift @ ssm_matrix(dt_bw.flip(0), A, B.flip(0), C.flip(0)) @ J
    return fw + bw + D * torch.eye(L, dtype=dt_fw.dtype)


def test_hydra_mix_equals_dense_quasiseparable_product():
    g = torch.Generator().manual_seed(0)
    b, L, h, p, n = 2, 7, 3, 4, 5
    x = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)
    dt_fw, dt_bw = (F.softplus(torch.randn(b, L, h, generator=g, dtype=torch.float64)) for _ in range(2))
    A = -torch.rand(h, generator=g, dtype=torch.float64) - 0.1
    B, C = (torch.randn(b, L, 1, n, generator=g, dtype=torch.float64) for _ in range(2))
    D = torch.randn(h, generator=g, dtype=torch.float64)
    y = hydra_mix(x, dt_fw, dt_bw, A, B, C, D, chunk_size=3)          # 7 is not a multiple of 3
    for bi in range(b):
        for hi in range(h):
            M = quasiseparable_matrix(dt_fw[bi, :, hi], dt_bw[bi, :, hi], A[hi], B[bi, :, 0], C[bi, :, 0], D[hi])
            torch.testing.assert_close(y[bi, :, hi], M @ x[bi, :, hi], atol=1e-10, rtol=1e-10)
            assert M.triu(1).abs().sum() > 0 and M.tril(-1).abs().sum() > 0   # truly bidirectional


def test_hydra_mixer_module_uses_the_same_mixing():
    """The module mixes tokens in both directions: an edit at one end changes the other end's output."""
    torch.manual_seed(0)
    mixer = HydraMixer(d_model=8, d_state=4, d_conv=4, expand=2, headdim=8, chunk_size=4).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    out = mixer(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # a token far away influences the output in both directions (bidirectional mixing)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert (mixer(x2) - out)[:, -1].abs().max() > 0
    x3 = x.clone()
    x3[:, -1] += 1.0
    assert (mixer(x3) - out)[:, 0].abs().max() > 0


def test_single_chunk_quadratic_path_equals_the_ssd_path():
    """L <= chunk_size on CPU takes the explicit-matrix path; it must equal the two-SSD path
    (forced with a chunk shorter than L), outputs and gradients, including dt_bias + softplus."""
    g = torch.Generator().manual_seed(1)
    b, L, h, p, n = 3, 8, 2, 4, 5
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, dt_fw, dt_bw, B, C, D, bias = r(b, L, h, p), r(b, L, h), r(b, L, h), r(b, L, 1, n), r(b, L, 1, n), r(h), r(h)
    A = (-torch.rand(h, generator=g, dtype=torch.float64) * 3 - 0.1).requires_grad_()
    inputs = [x, dt_fw, dt_bw, A, B, C, D, bias]
    quad = hydra_mix(*inputs[:7], dt_bias=bias, dt_softplus=True, chunk_size=8)
    ssd_path = hydra_mix(*inputs[:7], dt_bias=bias, dt_softplus=True, chunk_size=3)
    torch.testing.assert_close(quad, ssd_path, atol=1e-10, rtol=1e-10)
    w = torch.randn(quad.shape, generator=g, dtype=torch.float64)
    for a, b_ in zip(torch.autograd.grad((quad * w).sum(), inputs), torch.autograd.grad((ssd_path * w).sum(), inputs)):
        torch.testing.assert_close(a, b_, atol=1e-9, rtol=1e-9)

