"""3D DWT against PyWavelets, and perfect reconstruction."""
import numpy as np
import pytest
import pywt
import torch

from stfmamba.ops.dwt3d import BANDS, band_index, dwt3d, dwt_output_length, idwt3d, to_pywt_key


@pytest.mark.parametrize("shape", [(2, 3, 8, 10, 12), (1, 2, 5, 7, 9), (4, 4, 16, 16)])
def test_dwt3d_matches_pywt(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    coeffs = dwt3d(x)
    ref = pywt.dwtn(x.numpy(), "sym2", mode="symmetric", axes=(-3, -2, -1))
    assert coeffs.shape == (*shape[:-3], 8, *(dwt_output_length(n) for n in shape[-3:]))
    for i, name in enumerate(BANDS):
        np.testing.assert_allclose(coeffs[..., i, :, :, :].numpy(), ref[to_pywt_key(name)], atol=1e-5, rtol=0)


def test_dwt3d_float32_and_band_names():
    x = torch.randn(2, 3, 8, 12, 12)
    ref = pywt.dwtn(x.double().numpy(), "sym2", axes=(-3, -2, -1))
    np.testing.assert_allclose(dwt3d(x)[:, :, band_index("HLL")].numpy(), ref["daa"], atol=1e-5)
    # a pure temporal flicker (alternating sign over time, constant in space) lands in H** bands
    flicker = torch.ones(1, 1, 8, 8, 8) * torch.tensor([1.0, -1.0] * 4).view(1, 1, 8, 1, 1)
    energy = dwt3d(flicker).pow(2).flatten(3).sum(-1)[0, 0]
    assert BANDS[int(energy.argmax())] == "HLL"


@pytest.mark.parametrize("shape", [(2, 3, 8, 10, 12), (1, 1, 4, 6, 8)])
def test_idwt3d_reconstructs_and_matches_pywt(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    coeffs = dwt3d(x)
    rec = idwt3d(coeffs)
    torch.testing.assert_close(rec, x, atol=1e-9, rtol=0)
    ref = pywt.idwtn({to_pywt_key(b): coeffs[..., i, :, :, :].numpy() for i, b in enumerate(BANDS)}, "sym2",
                     axes=(-3, -2, -1))
    np.testing.assert_allclose(rec.numpy(), ref, atol=1e-9)


def test_dwt3d_is_differentiable():
    x = torch.randn(1, 1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dwt3d(t)[:, :, band_index("HLL")].pow(2).sum(), (x,))


def test_dwt3d_rejects_too_short_axis():
    with pytest.raises(ValueError, match="shorter than"):
        dwt3d(torch.randn(1, 1, 2, 8, 8))
