"""The multistage decoder `restore()` on the tiny random backbone (pictures are meaningless)."""

import dataclasses

import numpy as np
import pytest
import torch

from sedic.errors import InputError
from sedic.restoration import restore
from sedic.restoration.pipeline import color_fix, get_backbone, pad_image
from sedic.restoration.sampler import tile_starts, tile_weight
from sedic.restoration.settings import DecoderSettings, OragSettings, PipelineSettings
from sedic.semantics import SemanticObject, Semantics

from tiny_decoder import FAST, box_semantics, gradient_image

Settings = DecoderSettings




_image, _semantics = gradient_image, box_semantics


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
    for pipe, orag in ((PipelineSettings(final_condition="reference", color_fix="adain", batched_cfg=False),
                        OragSettings()),
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
    pixel_bb = dataclasses.replace(bb, controlnet=cn, spec=dataclasses.replace(bb.spec, condition="pixel"))
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


# --- per-step progress (issue 11 item 17) -----------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.5  # every reading half a second later
        return self.t


def test_step_progress_one_line_per_stage_in_a_log(bb):
    import io

    from sedic.restoration.progress import DecodeProgress

    log = io.StringIO()
    printer = DecodeProgress(log, tty=False, clock=_Clock())
    labels = []

    def stage(i, n, label):  # the stage callback keeps its signature next to the per-step hook
        labels.append((i, n, label))
        printer.stage(i, n, label)

    restore(_image(48, 64), _semantics(48, 64), Settings(**FAST), seed=1, backbone=bb,
            progress=stage, on_step=printer.step)
    printer.finish()
    lines = log.getvalue().splitlines()
    assert [c[:2] for c in labels] == [(1, 3), (2, 3), (3, 3)]
    assert len(lines) == 3 and "\r" not in log.getvalue()
    assert lines[0].startswith("stage 1/3: object 1/2: dog  2 steps in ")
    assert lines[2].startswith("stage 3/3: overall  3 steps in ") and lines[2].endswith("s/step)")


def test_step_progress_rewrites_a_line_per_step_on_a_terminal(bb):
    import io

    from sedic.restoration.progress import DecodeProgress

    term = io.StringIO()
    printer = DecodeProgress(term, tty=True, clock=_Clock())
    restore(_image(48, 64), _semantics(48, 64, 1), Settings(**FAST), seed=1, backbone=bb,
            progress=printer.stage, on_step=printer.step)
    printer.finish()
    out = term.getvalue()
    assert out.count("\n") == 2  # one finished line per stage
    updates = [u for u in out.split("\r") if "s/step, ETA" in u]
    assert len(updates) == 2 + 3  # every step of both stages
    assert "stage 1/2: object 1/1: dog  1/2 steps, " in out and "stage 2/2: overall  3/3 steps, " in out
    assert "ETA 0 s" in out


def test_decompress_cli_prints_one_line_per_stage(tmp_path, capsys):
    import sedic
    from sedic.cli import main

    h, w = 40, 48
    mask = np.zeros((h, w), bool)
    mask[4:30, 6:40] = True
    data = sedic.compress(_image(h, w), bpp=1.0, profile="test", seed=2,
                          semantics=Semantics("a garden", [SemanticObject("dog", "a dog", mask)]),
                          schedule={"object_steps": 1, "final_steps": 2})
    src = tmp_path / "x.sedic"
    src.write_bytes(data)
    assert main(["decompress", str(src), "-o", str(tmp_path / "x.png")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stage ")]
    assert len(err) == 2 and "1 step in" in err[0] and "2 steps in" in err[1]


# --- the SEDIC authors' released schedule (issue 11 item 6) -----------------------------------

def test_authors_profile_runs_the_released_schedule(bb, monkeypatch):
    from sedic.config import PROFILES
    from sedic.restoration import pipeline

    authors = PROFILES["authors"]
    assert authors.id == 4
    settings = dataclasses.replace(authors.decoder, **{k: v for k, v in FAST.items() if "steps" not in k})
    calls = []
    real = pipeline.sample_stage

    def spy(denoiser, config, spec, z_input, **kw):
        out = real(denoiser, config, spec, z_input, **kw)
        calls.append((spec, z_input, kw, out))
        return out

    monkeypatch.setattr(pipeline, "sample_stage", spy)
    h, w = 48, 64
    sem = _semantics(h, w, 3)
    steps = []
    restore(_image(h, w), sem, settings, seed=2, backbone=bb, on_step=lambda i, n, s, total: steps.append((i, total)))
    assert sorted(set(steps)) == [(1, 5), (2, 10), (3, 10), (4, 50)]  # 5/10/10 object steps, 50 final
    objects, (final_spec, final_in, final_kw, _) = calls[:3], calls[3]
    for k, (spec, z_in, kw, _) in enumerate(objects):
        assert kw["start"] == "noise" and kw["start_strength"] == 1.0      # pure noise
        assert kw["blend_every_step"] is False and kw["blend_mask"] is not None  # pasted once, at the end
        assert spec.cfg == 3.5 and spec.orag_tokens is None                # no attention guidance
        assert torch.equal(spec.control, z_in)                             # conditioned on the previous stage
        if k:
            assert torch.equal(z_in, objects[k - 1][3])
    # the object prompt is the description alone
    assert torch.equal(objects[0][0].cond, bb.encode_prompt([sem.objects[0].description]))
    # final: CFG 7, conditioned on the reference, started from the last object stage's low band
    ref = bb.encode_image(pipeline.pad_image(
        torch.from_numpy(_image(h, w).astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1, 64, "reflect"))
    assert final_spec.cfg == 7.0 and torch.allclose(final_spec.control, ref.float())
    last = objects[-1][3]
    low = pipeline._low_high(bb.decode_latent(last).float())[0]
    assert low.abs().max() <= 1.5  # the image in [-1, 1] (the released code fed 0..255 here)
    torch.testing.assert_close(final_kw["start"], bb.encode_image(low).float())
    assert final_kw["start_strength"] == 1.0 and torch.equal(final_in, last)


def test_pure_noise_start_ignores_the_stage_input(bb):
    from sedic.restoration.sampler import Denoiser, StageSpec, sample_stage

    g = torch.Generator().manual_seed(0)
    a, b, control = (torch.randn(1, 4, 6, 8, generator=g) for _ in range(3))
    spec = StageSpec(cond=bb.encode_prompt(["x"]), uncond=None, cfg=1.0, control=control)

    def run(z, start):
        return sample_stage(Denoiser(bb), bb.scheduler_config, spec, z, steps=2, start_strength=1.0,
                            generator=torch.Generator().manual_seed(1), start=start)

    assert torch.equal(run(a, "noise"), run(b, "noise"))
    assert not torch.equal(run(a, "input"), run(b, "input"))
    with pytest.raises(InputError):
        PipelineSettings(object_start="noise", object_start_strength=0.6)


def test_stage_images_of_one_decode_equal_partial_decodes(bb):
    """on_image hands out, from ONE decode, what decoding with stages=k returns, for every k."""
    img, sem = _image(48, 64), _semantics(48, 64, k=3)
    sem.objects[1] = dataclasses.replace(sem.objects[1], mask=np.zeros_like(sem.objects[1].mask))  # a no-op stage
    seen = []
    full = restore(img, sem, Settings(**FAST), seed=3, backbone=bb, on_image=lambda k, im: seen.append((k, im)))
    assert [k for k, _ in seen] == [1, 2, 3, 4]
    assert np.array_equal(seen[-1][1], full)
    for k, image in seen[:-1]:
        assert np.array_equal(image, restore(img, sem, Settings(**FAST), seed=3, stages=k, backbone=bb)), k
    assert np.array_equal(seen[0][1], seen[1][1])  # the empty object changes nothing
    partial = []
    restore(img, sem, Settings(**FAST), seed=3, stages=2, backbone=bb, on_image=lambda k, im: partial.append(k))
    assert partial == [1, 2]
    fused = []
    restore(img, sem, Settings(**FAST, schedule="fused"), seed=3, backbone=bb,
            on_image=lambda k, im: fused.append(k))
    assert fused == [4]


def test_more_steps_than_the_start_strength_allows_are_refused():
    """700 object steps from strength 0.6 (t_0 = 599) would run only 600 distinct timesteps: refused
    in the settings, at compress time (one InputError line), not silently merged."""
    import sedic

    with pytest.raises(InputError, match="at most 600"):
        Settings(**{**FAST, "object_steps": 700})
    Settings(**{**FAST, "object_steps": 600})
    with pytest.raises(InputError, match="at most 600"):
        sedic.compress(_image(48, 64), bpp=1.0, profile="test", schedule={"object_steps": 700})


# --- tiling pins: the blend, not just the shapes ----------------------------------------------

class _PointwiseNets:
    """A ControlNet + UNet pair whose prediction at a latent cell depends on that cell only (of the
    latent and of the control, pooled 8x for a pixel condition): tiled must equal untiled."""

    class _Module(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))
            self.fn = fn

        def forward(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    def __init__(self, factor):
        def control(x, t, encoder_hidden_states, controlnet_cond, conditioning_scale, return_dict):
            c = torch.nn.functional.avg_pool2d(controlnet_cond, factor) if factor > 1 else controlnet_cond
            return [c[:, :4] * conditioning_scale], None

        def unet(x, t, encoder_hidden_states, down_block_additional_residuals, mid_block_additional_residual,
                 return_dict):
            return (torch.tanh(x) * 0.5 + down_block_additional_residuals[0] * 0.25 + t[:, None, None, None] / 1000
                    + encoder_hidden_states.mean() * 0.1,)

        self.controlnet, self.unet = self._Module(control), self._Module(unet)
        self.control_scale = 1.0


@pytest.mark.parametrize("factor", [1, 8])
def test_tiled_prediction_equals_untiled_for_a_pointwise_network(factor):
    from sedic.restoration.sampler import Denoiser, StageSpec

    g = torch.Generator().manual_seed(0)
    h, w = 40, 56  # 16-cell tiles with overlap 8: several tiles in both directions, ragged last ones
    z = torch.randn(1, 4, h, w, generator=g)
    control = torch.randn(1, 4, h * factor, w * factor, generator=g)
    spec = StageSpec(cond=torch.randn(1, 77, 8, generator=g), uncond=torch.zeros(1, 77, 8), cfg=3.0,
                     control=control, control_factor=factor)
    nets = _PointwiseNets(factor)
    untiled = Denoiser(nets)(z, 500, spec)
    for tile, overlap in ((16, 8), (24, 4), (16, 0)):
        tiled = Denoiser(nets, tile=tile, overlap=overlap)(z, 500, spec)
        torch.testing.assert_close(tiled, untiled, rtol=1e-6, atol=1e-6)


def test_tile_blend_weights_are_positive_and_normalise_everywhere():
    for h, w, tile, overlap in ((40, 56, 16, 8), (32, 32, 16, 8), (96, 200, 96, 16)):
        total = torch.zeros(h, w)
        count = torch.zeros(h, w)
        for y0 in tile_starts(h, min(tile, h), overlap):
            for x0 in tile_starts(w, min(tile, w), overlap):
                wt = tile_weight(min(tile, h), min(tile, w), y0, x0, h, w, overlap)[0, 0]
                assert (wt > 0).all() and (wt <= 1).all()
                total[y0:y0 + wt.shape[0], x0:x0 + wt.shape[1]] += wt
                count[y0:y0 + wt.shape[0], x0:x0 + wt.shape[1]] += 1
        assert (total > 0).all() and (count >= 1).all()
        # at the image border no ramp: a pixel covered by one tile only has weight 1 there
        assert torch.equal(total[count == 1], torch.ones(int((count == 1).sum())))
