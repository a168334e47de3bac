"""What a large decode costs: the VAE's tiles and the colour fix at full size (docs/performance.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sedic.restoration import pipeline


def _wavelet_reference(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The wavelet colour fix on the whole image, written from its definition: five levels of a
    [1, 2, 1]^2 / 16 blur with dilation 2^i and replicate padding; the reference's last low band
    plus the output's high bands."""
    def bands(x):
        high = torch.zeros_like(x, dtype=torch.float64)
        x = x.double()
        kernel = (torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)[:, None]
                  * torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)[None, :] / 16).expand(3, 1, 3, 3)
        for i in range(5):
            d = 2 ** i
            low = F.conv2d(F.pad(x, (d, d, d, d), mode="replicate"), kernel, dilation=d, groups=3)
            high, x = high + (x - low), low
        return x, high

    return bands(ref)[0] + bands(out)[1]


def test_banded_colour_fix_equals_the_whole_image_one(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(pipeline, "_WAVELET_BAND", 40)  # many bands on a small image
    for h, w in ((203, 61), (40, 33), (81, 120)):
        out, ref = torch.rand(1, 3, h, w) * 2 - 1, torch.rand(1, 3, h, w) * 2 - 1
        got = pipeline.color_fix(out, ref, "wavelet")
        assert got.shape == out.shape
        assert (got.double() - _wavelet_reference(out, ref)).abs().max() < 1e-5


def test_the_offline_vae_tiles_are_not_tiny():
    from sedic.restoration.backbone import build_tiny_backbone

    vae = build_tiny_backbone().vae
    # diffusers tiles in config.sample_size pixels; 64 px tiles made a 12 MP decode take ~15 min
    assert vae.tile_sample_min_size >= 512 and vae.tile_latent_min_size == vae.tile_sample_min_size // 8
