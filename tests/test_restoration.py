"""The multistage decoder `restore()` on the tiny random backbone (pictures are meaningless)."""

import math
import numpy as np
import pytest
import torch

from sedic.errors import InputError
from sedic.restoration import restore
from sedic.restoration.pipeline import color_fix, get_backbone, pad_image
from sedic.restoration.sampler import tile_starts, tile_weight
from sedic.restoration.settings import DecoderSettings, OragSettings, PipelineSettings
from sedic.semantics import SemanticObject, Semantics


Settings = DecoderSettings
FAST = dict(backbone="tiny", base_model="", controlnet="", controlnet_file="", object_steps=2, final_steps=3)


@pytest.fixture(scope="module")
def bb():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_orag.py
    yield get_backbone(Settings(**FAST), torch.device("cpu"), torch.float32)
    torch.set_num_threads(threads)


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.0 * x], -1) * 200
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def _semantics(h, w, k=2):
    gh, gw = math.ceil(h / 8), math.ceil(w / 8)
    objs = []
    for i in range(k):
        m = np.zeros((gh, gw), bool)
        m[i:i + gh // 2 + 1, 2 * i:2 * i + gw // 2 + 1] = True
        objs.append(SemanticObject(["dog", "ball", "tree"][i % 3], f"a detailed thing number {i}", m))
    return Semantics("a photo of a dog with a ball in a garden", objs)


def test_odd_size_all_stages_and_progress(bb):
    img = _image(61, 83)
    calls = []
    out = restore(img, _semantics(61, 83), Settings(**FAST), seed=5, backbone=bb,
                  progress=lambda i, n, label: calls.append((i, n, label)))
    assert out.shape == (61, 83, 3) and out.dtype == np.uint8
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert calls[0][2].startswith("object 1/2") and calls[-1][2] == "overall"


def test_stages_zero_returns_preview(bb):
    img = _image(40, 56)
    out = restore(img, _semantics(40, 56), Settings(**FAST), seed=1, stages=0, backbone=bb)
    assert np.array_equal(out, img) and out is not img


def test_partial_stages_and_bounds(bb):
    img = _image(48, 64)
    sem = _semantics(48, 64)
    calls = []
    out = restore(img, sem, Settings(**FAST), seed=1, stages=1, backbone=bb,
                  progress=lambda i, n, label: calls.append(label))
    assert out.shape == img.shape and calls == ["object 1/2: dog"]
    for bad in (-1, 4):
        with pytest.raises(InputError):
            restore(img, sem, Settings(**FAST), seed=1, stages=bad, backbone=bb)


def test_no_objects(bb):
    img = _image(64, 64)
    out = restore(img, Semantics("a garden", []), Settings(**FAST), seed=2, backbone=bb)
    assert out.shape == img.shape


def test_deterministic_and_seed_dependent(bb):
    img = _image(48, 72)
    sem = _semantics(48, 72)
    a = restore(img, sem, Settings(**FAST), seed=7, backbone=bb)
    b = restore(img, sem, Settings(**FAST), seed=7, backbone=bb)
    c = restore(img, sem, Settings(**FAST), seed=8, backbone=bb)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_backbone_loaded_from_settings_once(bb):
    # no backbone argument: restore() takes the cached one for these settings
    img = _image(32, 40)
    out = restore(img, _semantics(32, 40, 1), Settings(**FAST), seed=3, device="cpu")
    assert out.shape == img.shape
    assert get_backbone(Settings(**FAST), torch.device("cpu"), torch.float32) is bb


def test_tiled_run_has_right_size(bb):
    h, w = 72, 200  # latent 16x32 after padding to 128x256 -> several 16x16 tiles
    settings = Settings(**FAST, pipeline=PipelineSettings(max_pixels=32 * 32, tile=16, tile_overlap=8))
    out = restore(_image(h, w), _semantics(h, w), settings, seed=4, backbone=bb)
    assert out.shape == (h, w, 3)


def test_options_run(bb):
    img = _image(40, 48)
    sem = _semantics(40, 48, 1)
    for pipe, orag in ((PipelineSettings(final_condition="reference", color_fix="adain", batched_cfg=False), OragSettings()),
                       (PipelineSettings(color_fix="none", pad_mode="replicate"),
                        OragSettings(range_mode="fixed", tokens="description", controlnet=False, blend=False)),
                       (PipelineSettings(), OragSettings(enabled=False))):
        out = restore(img, sem, Settings(**FAST, pipeline=pipe, orag=orag), seed=1, backbone=bb)
        assert out.shape == img.shape
    # processors are restored after every call
    assert all(type(p).__name__ != "OragAttnProcessor" for p in bb.unet.attn_processors.values())


def test_mask_grid_mismatch_is_an_input_error(bb):
    img = _image(40, 48)
    sem = Semantics("x", [SemanticObject("dog", "a dog", np.ones((4, 4), bool))])
    with pytest.raises(InputError):
        restore(img, sem, Settings(**FAST), seed=1, backbone=bb)


def test_padding_and_tiles_helpers():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    p = pad_image(x, 8, "reflect")
    assert p.shape == (2, 3, 8, 8) and torch.equal(p[..., :5, :7], x)
    big = pad_image(x, 64, "reflect")  # pad longer than the image: falls back to replicate
    assert big.shape == (2, 3, 64, 64) and torch.equal(big[..., :5, :7], x)
    for size, tile, ov in ((32, 16, 8), (40, 16, 4), (96, 96, 16), (200, 96, 16)):
        starts = tile_starts(size, tile, ov)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + tile] = True
            assert s % 8 == 0 or s == size - tile
        assert covered.all() and starts[-1] + min(tile, size) == size
    wt = tile_weight(16, 16, 16, 0, 32, 32, 8)  # bottom-left tile: ramps on top and right only
    assert wt.shape == (1, 1, 16, 16) and (wt > 0).all() and wt[0, 0, -1, 0] == 1 and wt[0, 0, 0, 0] < 1


def test_color_fix_matches_reference_low_frequencies():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 64, 64, generator=g) * 0.2 - 0.5
    out = torch.rand(1, 3, 64, 64, generator=g) * 0.2 + 0.3  # wrong tone
    for mode in ("wavelet", "adain"):
        fixed = color_fix(out, ref, mode)
        assert (fixed.mean((-2, -1)) - ref.mean((-2, -1))).abs().max() < 0.02, mode
    assert torch.equal(color_fix(out, ref, "none"), out)


def test_pixel_controlnet_backbone_untiled_and_tiled(bb):
    # A diffusers ControlNet conditioned on the image (the "controlnet" backbone kind, e.g. SD 1.5 tile):
    # the stage input is decoded for the condition, and tiles crop the condition at 8x.
    import dataclasses

    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cn = ControlNetModel.from_unet(bb.unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    pixel_bb = dataclasses.replace(bb, controlnet=cn, condition="pixel")
    h, w = 72, 136
    for pipe in (PipelineSettings(), PipelineSettings(max_pixels=32 * 32, tile=16, tile_overlap=8)):
        out = restore(_image(h, w), _semantics(h, w), Settings(**FAST, pipeline=pipe), seed=4, backbone=pixel_bb)
        assert out.shape == (h, w, 3)


def test_end_to_end_decompress_with_profile_test(bb):
    import sedic

    h, w = 61, 83
    img = _image(h, w, seed=3)
    masks = np.zeros((2, h, w), bool)
    masks[0, 5:40, 10:50] = True
    masks[1, 30:60, 40:80] = True
    sem = Semantics("a photo of a dog with a ball", [SemanticObject("dog", "a brown dog", masks[0]),
                                                     SemanticObject("ball", "a red ball", masks[1])])
    data = sedic.compress(img, bpp=0.5, semantics=sem, profile="test", seed=9)
    labels = []
    full = sedic.decompress(data, progress=lambda i, n, label: labels.append(label))
    again = sedic.decompress(data)
    assert full.shape == (h, w, 3) and np.array_equal(full, again)
    assert labels == ["object 1/2: dog", "object 2/2: ball", "overall"]
    assert sedic.decompress(data, stages=1).shape == (h, w, 3)
