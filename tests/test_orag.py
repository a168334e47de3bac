"""ORAG mechanics on the tiny random backbone: attention mass, latent blending, exactness when off."""

import numpy as np
import pytest
import torch

from sedic.errors import InputError
from sedic.restoration.backbones import backbone_spec
from sedic.restoration.orag import OragState, install, object_token_mask, uninstall
from sedic.restoration.sampler import Denoiser, StageSpec, sample_stage, spaced_timesteps
from sedic.restoration.settings import OragSettings

LH, LW = 8, 16  # latent grid of a 64x128 image




@pytest.fixture(scope="module")
def stage(bb):
    """A stage's inputs: latent, object mask (left part of the grid), prompt, tokens."""
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(1, 4, LH, LW, generator=g) * 0.8
    mask = torch.zeros(1, 1, LH, LW, dtype=torch.bool)
    mask[..., 1:7, 2:8] = True
    name, desc = "dog", "a brown dog with long floppy ears"
    cond = bb.encode_prompt([f"{name}, {desc}"])
    uncond = bb.encode_prompt(["low quality, blurry"])
    tokens = object_token_mask(bb.tokenizer, name, desc, OragSettings())
    spec = StageSpec(cond=cond, uncond=uncond, cfg=3.5, control=z0, orag_mask=mask.float(), orag_tokens=tokens)
    return z0, mask, spec


def _run(bb, spec, z0, orag, blend_mask=None, state=None, callback=None, steps=4, batched=True):
    den = Denoiser(bb, state=state, batched_cfg=batched)
    return sample_stage(den, bb.scheduler_config, spec, z0, steps=steps, start_strength=0.7,
                        generator=torch.Generator().manual_seed(11), orag=orag, blend_mask=blend_mask,
                        callback=callback)


def _installed(bb, state):
    return [(bb.unet, install(bb.unet, state, label="unet")),
            (bb.controlnet, install(bb.controlnet, state, label="controlnet"))]


def _remove(installed):
    for model, originals in installed:
        uninstall(model, originals)


def test_token_mask_positions(bb):
    tok = bb.tokenizer
    name, desc = "red car", "a shiny red car, chrome wheels"
    ids = tok(f"{name}, {desc}", padding="max_length", max_length=77).input_ids
    eos = ids.index(tok.eos_token_id, 1)
    full = object_token_mask(tok, name, desc, OragSettings())
    assert full.shape == (77,) and not full[0] and not full[eos:].any()
    assert full[1:eos].all()
    n_name = len(tok(f"{name},", add_special_tokens=False).input_ids)
    only_desc = object_token_mask(tok, name, desc, OragSettings(tokens="description"))
    assert only_desc.sum() == full.sum() - n_name and not only_desc[1:1 + n_name].any()
    with_eos = object_token_mask(tok, name, desc, OragSettings(include_eos=True))
    assert with_eos[eos] and with_eos.sum() == full.sum() + 1


def test_step_weights_and_validation():
    s = OragSettings(strength=0.5, decay=2.0, stop_fraction=0.5)
    assert s.step_weight(0, 10) == 0.5
    assert s.step_weight(2, 10) == pytest.approx(0.5 * 0.8 ** 2)
    assert s.step_weight(5, 10) == 0.0  # past stop_fraction
    assert OragSettings(enabled=False).step_weight(0, 10) == 0.0
    with pytest.raises(InputError):
        OragSettings(range_mode="max")
    with pytest.raises(InputError):
        OragSettings(unet_blocks=("left",))
    assert spaced_timesteps(4, 1.0) == [999, 666, 333, 0]
    assert spaced_timesteps(10, 0.6)[0] == 599 and spaced_timesteps(10, 0.6)[-1] == 0


def test_guidance_off_is_bit_exact(bb, stage):
    z0, mask, spec = stage
    plain = _run(bb, spec, z0, orag=None)
    state = OragState(bb.levels)
    installed = _installed(bb, state)
    try:
        off = _run(bb, spec, z0, orag=OragSettings(strength=0.0, blend=False), state=state)
        disabled = _run(bb, spec, z0, orag=OragSettings(enabled=False), state=state)
        on = _run(bb, spec, z0, orag=OragSettings(strength=0.5, blend=False), state=state)
    finally:
        _remove(installed)
    assert torch.equal(plain, off)
    assert torch.equal(plain, disabled)
    assert not torch.equal(plain, on)  # the guidance does act when on
    # processors removed: back to the stock path
    assert all(type(p).__name__ != "OragAttnProcessor" for p in bb.unet.attn_processors.values())


@pytest.mark.parametrize("range_mode", ["query", "fixed"])
def test_attention_mass_of_object_tokens_rises_inside_mask(bb, stage, range_mode):
    z0, mask, spec = stage
    records = {}

    def probe(name, query, key, bias, scale):
        # Test-only: the probabilities the SDPA call computes, rebuilt from its inputs.
        probs = torch.softmax(query.float() @ key.float().transpose(-1, -2) * scale + bias.float(), dim=-1)
        mass = probs[..., state.tokens.bool()].sum(-1)          # (B, heads, N)
        inside = (state.signs(query.shape[2], query.device, torch.float32)[0, 0, :, 0] > 0)
        records.setdefault(name, []).append((mass[1, :, inside].mean().item(), mass[1, :, ~inside].mean().item(),
                                             probs[0].clone()))

    state = OragState(bb.levels)
    state.probe = probe
    installed = _installed(bb, state)
    den = Denoiser(bb, state=state)
    z = z0 + 0.5 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
    try:
        state.range_mode = range_mode
        for w in (0.0, 0.4, 1.0):
            state.set_weight(w)
            den(z, 500, spec)
    finally:
        _remove(installed)
    cross = {k: v for k, v in records.items() if len(v) == 3}
    assert any(k.startswith("controlnet:") for k in cross) and any(k.startswith("unet:") for k in cross)
    assert len(cross) >= 4  # UNet and ControlNet cross-attention layers were probed
    for name, ((in0, out0, unc0), (in1, out1, unc1), (in2, out2, _)) in cross.items():
        # more mass on the object's tokens inside its mask, growing with w; less outside.
        # (Random tiny weights give nearly flat logits, so the range-scaled rise is small but strict.)
        assert in0 < in1 < in2, (name, in0, in1, in2)
        assert out0 > out1 > out2, (name, out0, out1, out2)
        # the unconditional row is unguided: its attention is untouched (only earlier layers could
        # change it, and they do not touch that row either)
        assert torch.equal(unc0, unc1), name


def test_blending_keeps_outside_at_renoised_input(bb, stage):
    z0, mask, spec = stage
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(bb.scheduler_config)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(11))  # the stage's first draw
    seen = []

    def check(i, t, t_next, z):
        expected = z0 if t_next is None else sched.add_noise(z0, noise, torch.tensor([t_next]))
        outside = ~mask.expand_as(z)
        assert torch.equal(z[outside], expected[outside]), (i, t)
        assert not torch.equal(z[~outside], expected[~outside])  # the object does change
        seen.append(t_next)

    state = OragState(bb.levels)
    installed = _installed(bb, state)
    try:
        out = _run(bb, spec, z0, orag=OragSettings(), blend_mask=mask, state=state, callback=check, steps=5)
    finally:
        _remove(installed)
    assert len(seen) == 5 and seen[-1] is None
    assert torch.equal(out[~mask.expand_as(out)], z0[~mask.expand_as(z0)])


def test_sequential_cfg_matches_batched(bb, stage):
    z0, mask, spec = stage
    state = OragState(bb.levels)
    installed = _installed(bb, state)
    try:
        a = _run(bb, spec, z0, orag=OragSettings(), blend_mask=mask, state=state, batched=True)
        b = _run(bb, spec, z0, orag=OragSettings(), blend_mask=mask, state=state, batched=False)
    finally:
        _remove(installed)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _sd21_levels_of(mask):
    """set_mask's per-level signs as (lh, lw) arrays, keyed by level (the latent grid halves with ceil)."""
    state = OragState(backbone_spec("sd21-ircontrolnet").unet_levels)  # SD 2.1's 4 levels
    state.set_mask(torch.from_numpy(mask)[None, None].float())
    h, w = mask.shape
    out = {}
    for level in range(4):
        lh, lw = -(-h // 2 ** level), -(-w // 2 ** level)
        out[level] = state.signs(lh * lw, "cpu", torch.float64)[0, 0, :, 0].view(lh, lw).numpy()
    return out


@pytest.mark.parametrize("size", [2, 4, 6, 8])
@pytest.mark.parametrize("offset", [(0, 0), (3, 5)])
def test_no_cell_an_object_touches_repels_its_tokens_on_sd21_geometry(size, offset):
    """A 768x512 image: latent 64x96, SD 2.1's cross-attention at 64x96, 32x48, 16x24 and the mid
    block's 8x12. Small objects (2..8 latent cells), aligned to the coarse grid or not, and 1-cell
    poles: every cell the mask touches raises the object's tokens (sign > 0), every other one
    lowers them fully (-1), and the sign equals the documented rule computed from the geometry."""
    from tiny_decoder import sign_reference

    shapes = [(size, size), (size * 4, 1), (1, size * 4)]  # a square object, a vertical and a horizontal pole
    for sh, sw in shapes:
        m = np.zeros((64, 96), bool)
        y0, x0 = 16 + offset[0], 40 + offset[1]
        m[y0:y0 + sh, x0:x0 + sw] = True
        got = _sd21_levels_of(m)
        for level in range(4):
            f = 2 ** level
            touched = np.zeros_like(got[level], bool)
            touched[y0 // f:(y0 + sh - 1) // f + 1, x0 // f:(x0 + sw - 1) // f + 1] = True
            assert (got[level][touched] > 0).all(), (sh, sw, level)
            assert (got[level][~touched] == -1).all(), (sh, sw, level)
            np.testing.assert_allclose(got[level], sign_reference(m, level), rtol=0, atol=1e-7)


def test_explicit_logits_honour_upcast_attention_in_float16():
    """SD 2.1 (768) sets upcast_attention: its Q K^T overflows float16. ORAG's own Q K^T (for the
    range R) must be computed in float32 there too, or R is inf - inf = nan and the layer's output nan."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    for upcast in (True, False):
        torch.manual_seed(0)
        attn = Attention(query_dim=16, cross_attention_dim=16, heads=2, dim_head=8, upcast_attention=upcast)
        attn = attn.to(torch.float16).eval()
        with torch.no_grad():
            for lin in (attn.to_q, attn.to_k):
                lin.weight.copy_(torch.eye(16, dtype=torch.float16) * 40)
        state = OragState(levels=1)  # one attention layer, at the mask's own 2x2 grid
        state.tokens = torch.ones(4)
        state.rows = torch.tensor([1.0])
        state.set_mask(torch.ones(1, 1, 2, 2))
        state.set_weight(0.5)
        from sedic.restoration.orag import OragAttnProcessor
        attn.set_processor(OragAttnProcessor(state, AttnProcessor2_0()))
        x = torch.full((1, 4, 16), 8.0, dtype=torch.float16)  # q.k = 16 * 320 * 320 / ... overflows 65504
        ctx = torch.full((1, 4, 16), 8.0, dtype=torch.float16)
        with torch.no_grad():
            out = attn(x, encoder_hidden_states=ctx)
        if upcast:
            assert torch.isfinite(out).all()
