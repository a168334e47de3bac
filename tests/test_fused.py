"""The fused schedule (one pass, every object routed to its own mask) on the tiny random backbone."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sedic import bitstream as bs, codec
from sedic.config import PROFILES, get_profile
from sedic.errors import BitstreamError, InputError
from sedic.restoration import restore
from sedic.restoration.orag import OragState, install, object_token_mask, uninstall
from sedic.restoration.pipeline import fused_context
from sedic.restoration.sampler import Denoiser, StageSpec, sample_stage
from sedic.restoration.settings import SCHEDULES, DecoderSettings, OragSettings, PipelineSettings
from sedic.schedule import OVERRIDES, ScheduleOverrides
from sedic.semantics import SemanticObject, Semantics

from tiny_decoder import FAST, box_semantics, gradient_image

LH, LW = 8, 16  # latent grid of a 64x128 image




_image, _semantics = gradient_image, box_semantics


# --- K = 0: the fused pass is the final stage alone ------------------------------------------

def test_fused_without_objects_is_the_final_stage(bb):
    img = _image(48, 64)
    sem = Semantics("a garden", [])
    fused = restore(img, sem, DecoderSettings(**FAST, schedule="fused"), seed=3, backbone=bb)
    final_only = restore(img, sem, DecoderSettings(**FAST), seed=3, backbone=bb)
    assert np.array_equal(fused, final_only)  # bit-identical
    # an object whose mask misses the latent grid adds nothing, as in the sequential schedule
    # (whose final stage then draws the noise of stage K+1 = 2, as the fused pass does)
    empty = Semantics("a garden", [SemanticObject("ghost", "nothing", np.zeros((6, 8), bool))])
    assert np.array_equal(restore(img, empty, DecoderSettings(**FAST, schedule="fused"), seed=3, backbone=bb),
                          restore(img, empty, DecoderSettings(**FAST), seed=3, backbone=bb))


def test_fused_runs_one_pass_and_the_guidance_acts(bb):
    img = _image(48, 64)
    sem = _semantics(48, 64, 3)
    calls, steps = [], []
    settings = DecoderSettings(**FAST, schedule="fused")
    out = restore(img, sem, settings, seed=3, backbone=bb, progress=lambda *a: calls.append(a),
                  on_step=lambda *a: steps.append(a))
    assert out.shape == img.shape
    assert [c[:2] for c in calls] == [(1, 1)]
    assert steps == [(1, 1, i, 3) for i in (1, 2, 3)]  # final_steps network evaluations, one stage
    unguided = restore(img, sem, replace(settings, orag=OragSettings(enabled=False)), seed=3, backbone=bb)
    assert not np.array_equal(out, unguided)
    with pytest.raises(InputError, match="fused"):
        restore(img, sem, settings, seed=3, stages=1, backbone=bb)


def test_fused_options_tiles_and_cfg_batching(bb):
    h, w = 72, 200  # latent 16x32 after padding -> several 16x16 tiles
    img, sem = _image(h, w), _semantics(h, w, 3)
    base = DecoderSettings(**FAST, schedule="fused")
    tiled = replace(base, pipeline=PipelineSettings(max_pixels=32 * 32, tile=16, tile_overlap=8))
    assert restore(img, sem, tiled, seed=4, backbone=bb).shape == (h, w, 3)
    other = replace(base, orag=OragSettings(range_mode="fixed", tokens="description", controlnet=False),
                    pipeline=PipelineSettings(object_prompt="description"))
    assert restore(img, sem, other, seed=4, backbone=bb).shape == (h, w, 3)
    # one batched call per step equals two calls: both rows have the same context length
    small_img, small_sem = _image(48, 64), _semantics(48, 64, 2)
    a = restore(small_img, small_sem, base, seed=4, backbone=bb)
    b = restore(small_img, small_sem, replace(base, pipeline=PipelineSettings(batched_cfg=False)), seed=4,
                backbone=bb)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# --- the context: overall prompt, then each object's own tokens -------------------------------

def _fused_spec(bb, overall, objs, masks, negative="low quality", cfg=5.0):
    """The fused pass's StageSpec as restore() builds it (pipeline.fused_context)."""
    token_masks = [object_token_mask(bb.tokenizer, n, d, OragSettings()) for n, d in objs]
    cond, tokens = fused_context(bb.encode_prompt([overall]), bb.encode_prompt([f"{n}, {d}" for n, d in objs]),
                                 token_masks)
    uncond = torch.cat([bb.encode_prompt([negative]), cond[:, 77:]], dim=1)
    z0 = torch.randn(1, 4, *masks.shape[-2:], generator=torch.Generator().manual_seed(1))
    return StageSpec(cond=cond, uncond=uncond, cfg=cfg, control=z0, orag_mask=masks, orag_tokens=tokens), z0


def test_context_holds_the_overall_prompt_then_each_objects_own_tokens(bb):
    objs = [("dog", "a brown dog"), ("ball", "a red ball with white stripes")]
    overall = bb.encode_prompt(["a garden at dusk"])
    embs = bb.encode_prompt([f"{n}, {d}" for n, d in objs])
    masks = [object_token_mask(bb.tokenizer, n, d, OragSettings()) for n, d in objs]
    ctx, tokens = fused_context(overall, embs, masks)
    n_tok = [int(m.sum()) for m in masks]
    assert ctx.shape == (1, 77 + sum(n_tok), embs.shape[-1])  # no padding, no second BOS
    assert torch.equal(ctx[:, :77], overall)
    assert tokens.shape == (2, ctx.shape[1]) and not tokens[:, :77].any() and (tokens.sum(0) <= 1).all()
    for k, m in enumerate(masks):
        assert int(tokens[k].sum()) == n_tok[k]
        torch.testing.assert_close(ctx[0, tokens[k].bool()], embs[k][m], rtol=0, atol=0)
    # include_eos adds each object's EOS state, still inside its own columns
    with_eos = [object_token_mask(bb.tokenizer, n, d, OragSettings(include_eos=True)) for n, d in objs]
    assert fused_context(overall, embs, with_eos)[0].shape[1] == ctx.shape[1] + 2


def _masks(k: int) -> torch.Tensor:
    """k object masks on the latent grid; the tiny backbone's cross-attention runs at 1/4 of it."""
    if k == 32:  # the 4x4 blocks of a 16x32 grid: one cell each at the cross-attention's resolution
        m = torch.zeros(1, k, 16, 32)
        for i in range(k):
            y, x = divmod(i, 8)
            m[0, i, 4 * y:4 * y + 4, 4 * x:4 * x + 4] = 1
        return m
    m = torch.zeros(1, k, LH, LW)
    if k == 1:
        m[0, 0, 1:7, 2:8] = 1
    else:
        m[0, 0, 0:4, 0:8] = 1
        m[0, 1, 4:8, 0:6] = 1
        m[0, 2, 2:8, 9:16] = 1
    return m


# --- where SDPA gets a mask: sequential unguided steps keep the plain call (flash on CUDA) --------

def _sdpa_calls(bb, monkeypatch, spec, z0, fused):
    calls = []
    sdpa = F.scaled_dot_product_attention
    state = OragState()

    def recording(q, key, v, attn_mask=None, *args, **kwargs):
        calls.append((state.guiding, key.shape[-2] == spec.cond.shape[1], attn_mask is not None))
        return sdpa(q, key, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    # guide the ControlNet and only the UNet's up blocks, for the first half of the steps
    installed = [(bb.unet, install(bb.unet, state, ("up",), label="unet", route_all=fused)),
                 (bb.controlnet, install(bb.controlnet, state, label="controlnet", route_all=fused))]
    try:
        sample_stage(Denoiser(bb, state=state), bb.scheduler_config, spec, z0, steps=4, start_strength=1.0,
                     generator=torch.Generator().manual_seed(2), orag=OragSettings(strength=0.5, stop_fraction=0.5))
    finally:
        for model, originals in installed:
            uninstall(model, originals)
    per_step = len(calls) // 4
    assert len(calls) == 4 * per_step
    return calls[:2 * per_step], calls[2 * per_step:]


def test_sequential_unguided_steps_call_sdpa_without_a_mask(bb, monkeypatch):
    z0 = torch.randn(1, 4, LH, LW, generator=torch.Generator().manual_seed(1))
    spec = StageSpec(cond=bb.encode_prompt(["thing, detail"]), uncond=bb.encode_prompt(["bad"]), cfg=5.0,
                     control=z0, orag_mask=_masks(1),
                     orag_tokens=object_token_mask(bb.tokenizer, "thing", "detail", OragSettings()))
    guided, unguided = _sdpa_calls(bb, monkeypatch, spec, z0, fused=False)
    assert all(g for g, _, _ in guided) and not any(g for g, _, _ in unguided)
    assert not any(masked for _, _, masked in unguided)       # steps 3 and 4: no mask anywhere
    masked = [cross for _, cross, m in guided if m]
    assert masked and all(masked)                             # only cross-attention gets a bias...
    cross_per_step = sum(cross for _, cross, _ in guided) // 2
    assert 0 < len(masked) // 2 < cross_per_step              # ...and not in the unguided UNet blocks


def test_fused_routes_every_cross_attention_at_every_step(bb, monkeypatch):
    """The fused pass's routing is structural: object text is invisible outside its mask in every
    cross-attention layer (guided blocks or not) at every step; self-attention stays plain."""
    spec, z0 = _fused_spec(bb, "overall", [("thing", f"detail {i}") for i in range(3)], _masks(3))
    guided, unguided = _sdpa_calls(bb, monkeypatch, spec, z0, fused=True)
    for calls in (guided, unguided):
        assert all(masked == cross for _, cross, masked in calls)
        assert any(cross for _, cross, _ in calls)


def test_schedule_travels_in_the_file(tmp_path, small_image):
    h, w = small_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[8:40, 16:60] = True
    sem = Semantics("a photo", [SemanticObject("dog", "a brown dog", mask)])
    # a built-in fused profile: the id says it, nothing else is stored
    data = codec.encode(small_image, sem, "sedic-fast", bpp=0.5)
    parsed = codec.parse(data)
    assert parsed.params.profile_id == 3 and parsed.params.overrides.schedule is None
    assert codec.decoder_settings(parsed).schedule == "fused"
    # ...and stays the file's under another profile (a profile file naming local weights, say)
    assert codec.decoder_settings(parsed, get_profile("test")).schedule == "fused"
    plain = codec.parse(codec.encode(small_image, sem, "test", bpp=0.5))
    assert codec.decoder_settings(plain, get_profile("sedic-fast")).schedule == "sequential"
    # a profile file based on `test` that switches the schedule: the file stores it
    prof = tmp_path / "fast-test.json"
    prof.write_text('{"base": "test", "decoder": {"schedule": "fused", "final_steps": 2}}')
    data = codec.encode(small_image, sem, get_profile(str(prof)), bpp=0.5)
    parsed = codec.parse(data)
    assert parsed.params.profile_id == PROFILES["test"].id
    assert parsed.params.overrides == ScheduleOverrides(schedule="fused")
    assert codec.decoder_settings(parsed).schedule == "fused"  # decoded with the file's own profile
    assert codec.inspect(data)["schedule"] == {"schedule": "fused"}
    # the container's codes for the choices, and their limits
    spec = next(s for s in OVERRIDES if s.name == "schedule")
    assert spec.choices == SCHEDULES and (spec.key, spec.low, spec.high) == (5, 0, 1)
    raw = bs.DecoderParams(1, 0, ScheduleOverrides(schedule="sequential")).to_bytes()
    assert raw == bytes([1, 0, 5, 0])
    assert bs.DecoderParams.from_bytes(raw).overrides.as_dict() == {"schedule": "sequential"}
    assert bs.DecoderParams.from_bytes(bytes([1, 0, 5, 1])).overrides.schedule == "fused"
    with pytest.raises(InputError, match="schedule must be one of sequential, fused"):
        ScheduleOverrides(schedule="banana")  # type: ignore[arg-type]
    with pytest.raises(BitstreamError):
        bs.DecoderParams.from_bytes(bytes([1, 0, 5, 2]))
    with pytest.raises(InputError):
        codec.encode(small_image, sem, "test", bpp=0.5, overrides={"schedule": "banana"})


def test_schedule_setting_is_checked():
    with pytest.raises(InputError, match="schedule"):
        DecoderSettings(schedule="parallel")
    assert PROFILES["sedic-fast"].id == 3 and PROFILES["sedic-fast"].decoder.schedule == "fused"


# --- compiled networks: the guidance's tensors are inputs, not constants -----------------------

def test_compiled_networks_do_not_recompile_per_step(bb):
    """torch.compile (dynamo; the eager backend keeps this cheap on a CPU) traces a network with the
    ORAG processors once (the fused routing runs the same code at every step); other weights, masks
    and steps reuse it.
    Only the ControlNet is compiled here (the UNet's attention layers are the same code), to halve
    the tracing time."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    k = 3
    base, z0 = _fused_spec(bb, "overall", [("thing", f"detail {i}") for i in range(k)], _masks(k), negative="bad")
    state = OragState()
    installed = [(bb.unet, install(bb.unet, state, label="unet")),
                 (bb.controlnet, install(bb.controlnet, state, label="controlnet"))]
    torch._dynamo.reset()
    counters.clear()
    den = Denoiser(bb, controlnet=torch.compile(bb.controlnet, backend="eager"), state=state)

    def run(masks, orag, steps):
        spec = replace(base, orag_mask=masks)
        return sample_stage(den, bb.scheduler_config, spec, z0, steps=steps, start_strength=1.0,
                            generator=torch.Generator().manual_seed(2), orag=orag)

    try:
        with torch.inference_mode():
            first = run(_masks(k), OragSettings(strength=0.5, stop_fraction=0.5), 2)
            graphs = counters["stats"]["unique_graphs"]
            run(_masks(k).roll(3, dims=-1), OragSettings(strength=0.3, decay=2.0, stop_fraction=0.7), 3)
            assert counters["stats"]["unique_graphs"] == graphs  # nothing recompiled
            # the next decode installs new processors and a new state: still nothing recompiled
            for model, originals in installed:
                uninstall(model, originals)
            state = den.state = OragState()
            installed = [(bb.unet, install(bb.unet, state, label="unet")),
                         (bb.controlnet, install(bb.controlnet, state, label="controlnet"))]
            run(_masks(k), OragSettings(strength=0.5, stop_fraction=0.5), 2)
            assert counters["stats"]["unique_graphs"] == graphs
    finally:
        for model, originals in installed:
            uninstall(model, originals)
        torch._dynamo.reset()
    assert graphs == 1  # fused: one code path whether guiding or not (w is a tensor), no graph break
    # and the compiled networks compute what the eager ones do
    state2 = OragState()
    installed = [(bb.unet, install(bb.unet, state2, label="unet")),
                 (bb.controlnet, install(bb.controlnet, state2, label="controlnet"))]
    try:
        den = Denoiser(bb, state=state2)
        with torch.inference_mode():
            eager = run(_masks(k), OragSettings(strength=0.5, stop_fraction=0.5), 2)
    finally:
        for model, originals in installed:
            uninstall(model, originals)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-4)
