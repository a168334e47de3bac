"""ORAG's attention, checked from its output: every cross-attention layer of a UNet and ControlNet
with SD 2.1's topology returns what an independent softmax(Q K^T * scale + B) V computes, with the
bias B built here from the mask and the token positions (not by the code under test).

float64 throughout, so the comparison is tight and means the same on every machine."""

import numpy as np
import pytest
import torch

from sedic.restoration.orag import OragState, install, uninstall
from sedic.restoration.sampler import Denoiser, StageSpec

from tiny_decoder import sd21_backbone, sign_reference

LH, LW = 13, 19  # odd, non-square latent: levels 13x19, 7x10, 4x5 and the mid block's 2x3
NAME, DESC = "dog", "a brown dog with long floppy ears"


@pytest.fixture(scope="module")
def sd21():
    return sd21_backbone(torch.float64)


def asymmetric_mask():
    """An L-shaped object off the centre: a flip or a mirror of it is a different mask."""
    m = np.zeros((LH, LW), bool)
    m[1:9, 2:7] = True
    m[6:11, 7:15] = True
    return m


def object_tokens(tokenizer, prompt):
    """Positions of the prompt's text tokens (after BOS, before the first EOS), from the ids."""
    ids = tokenizer(prompt, padding="max_length", max_length=77).input_ids
    eos = ids.index(tokenizer.eos_token_id, 1)
    t = np.zeros(77, bool)
    t[1:eos] = True
    return t


def record_cross_attention(model, label, records):
    handles = []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "Attention" and mod.is_cross_attention:
            def hook(m, args, kwargs, out, name=name):
                records.append((f"{label}:{name}", m, args[0].detach().clone(),
                                kwargs["encoder_hidden_states"].detach().clone(), out.detach().clone()))
            handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    return handles


def expected_attention(attn, hidden, context, bias_of_row):
    """to_out(softmax(Q K^T * scale + B) V), heads split as diffusers' Attention does."""
    b, n, _ = hidden.shape
    q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
    heads = attn.heads
    d = q.shape[-1] // heads
    q, k, v = (x.view(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
    logits = q @ k.transpose(-1, -2) * (d ** -0.5)
    bias = torch.stack([bias_of_row(r, logits[r]) for r in range(b)])
    out = torch.softmax(logits + bias, dim=-1) @ v
    out = out.transpose(1, 2).reshape(b, n, heads * d)
    return attn.to_out[1](attn.to_out[0](out))


def run_recorded(bb, state, spec, z, t, w, route_all=False) -> list:
    """One guided denoiser call at timestep t with ORAG installed on both networks; the records of
    every cross-attention layer's inputs and output (hooks, removed afterwards)."""
    records = []
    installed = [(bb.unet, install(bb.unet, state, label="unet", route_all=route_all)),
                 (bb.controlnet, install(bb.controlnet, state, label="controlnet", route_all=route_all))]
    handles = record_cross_attention(bb.unet, "unet", records) + record_cross_attention(bb.controlnet,
                                                                                       "controlnet", records)
    try:
        state.set_weight(w)
        with torch.inference_mode():
            Denoiser(bb, state=state)(z, t, spec)
    finally:
        for h in handles:
            h.remove()
        for model, originals in installed:
            uninstall(model, originals)
    return records


@pytest.mark.parametrize("range_mode", ["query", "fixed"])
def test_every_cross_attention_layer_equals_the_independent_formula(sd21, range_mode):
    bb = sd21
    mask = asymmetric_mask()
    prompt = f"{NAME}, {DESC}"
    tokens = torch.from_numpy(object_tokens(bb.tokenizer, prompt))
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64)
    spec = StageSpec(cond=bb.encode_prompt([prompt]), uncond=bb.encode_prompt(["low quality"]), cfg=3.5,
                     control=torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64),
                     orag_mask=torch.from_numpy(mask)[None, None].double(), orag_tokens=tokens)
    w, fixed = 0.75, 8.0  # w exact in float32 (the state keeps it in float32)
    state = OragState(bb.levels)
    state.range_mode, state.fixed_range = range_mode, fixed
    records = run_recorded(bb, state, spec, z, 500, w)

    levels = {(-(-LH // 2 ** lv)) * (-(-LW // 2 ** lv)): lv for lv in range(4)}
    signs = {lv: torch.from_numpy(sign_reference(mask, lv).reshape(-1)) for lv in range(4)}
    seen = set()
    for name, attn, hidden, context, out in records:
        level = levels[hidden.shape[1]]
        seen.add((name.split(":")[0], level))
        s = signs[level]

        def bias_of_row(row, logits, s=s):  # s bound now (B023); called within this iteration
            if row == 0:  # the unconditional row is never biased
                return torch.zeros_like(logits)
            r = (logits.amax(-1, keepdim=True) - logits.amin(-1, keepdim=True)) if range_mode == "query" else fixed
            return (w * r * s.view(1, -1, 1) * tokens.double().view(1, 1, -1)).expand_as(logits)

        want = expected_attention(attn, hidden, context, bias_of_row)
        torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")
        # and the bias is not a no-op at this layer: without it the output differs
        plain = expected_attention(attn, hidden, context, lambda r, lg: torch.zeros_like(lg))
        assert (out[1] - plain[1]).abs().max() > 1e-6, name
        torch.testing.assert_close(out[0], plain[0], rtol=1e-9, atol=1e-11)
    # every cross-attention resolution of both networks, the mid block (level 3) included
    assert seen == {(m, lv) for m in ("unet", "controlnet") for lv in range(4)}, seen
    assert len(records) == 16 + 7  # SD 2.1's 16 UNet and 7 ControlNet cross-attention layers


@pytest.mark.parametrize("k", [1, 3])
def test_fused_routing_equals_the_independent_formula(sd21, k):
    """Fused pass: the context is the overall prompt's 77 states + each object's own tokens. Object
    k's keys are visible only where its mask touches the cell (raised there by w R a_k, R the range
    of the overall prompt's logits), never in the unconditional row; so the unconditional row and
    every query outside all masks attend exactly as with the overall (negative) prompt alone."""
    from sedic.restoration.orag import object_token_mask
    from sedic.restoration.pipeline import fused_context
    from sedic.restoration.settings import OragSettings

    from tiny_decoder import coverage_reference

    bb = sd21
    objs = [("dog", "a brown dog"), ("ball", "a red ball with white stripes"), ("tree", "an old oak")][:k]
    masks = np.zeros((k, LH, LW), bool)
    masks[0] = asymmetric_mask()
    if k > 1:
        masks[1, 9:13, 0:6] = True
        masks[2, 0:4, 12:19] = True
    tmasks = [object_token_mask(bb.tokenizer, n, d, OragSettings()) for n, d in objs]
    cond, tokens = fused_context(bb.encode_prompt(["a garden"]), bb.encode_prompt([f"{n}, {d}" for n, d in objs]),
                                 tmasks)
    neg = bb.encode_prompt(["low quality"])
    g = torch.Generator().manual_seed(7)
    z = torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64)
    spec = StageSpec(cond=cond, uncond=torch.cat([neg, cond[:, 77:]], 1), cfg=7.0, control=z.clone(),
                     orag_mask=torch.from_numpy(masks)[None].double(), orag_tokens=tokens)
    w = 0.5
    state = OragState(bb.levels)
    records = run_recorded(bb, state, spec, z, 300, w, route_all=True)

    levels = {(-(-LH // 2 ** lv)) * (-(-LW // 2 ** lv)): lv for lv in range(4)}
    cols = [torch.nonzero(tokens[i]).flatten() for i in range(k)]
    assert len(records) == 23
    for name, attn, hidden, context, out in records:
        level = levels[hidden.shape[1]]
        cover = [torch.from_numpy(coverage_reference(masks[i], level).reshape(-1)) for i in range(k)]

        def bias_of_row(row, logits, cover=cover):  # bound now (B023); called within this iteration
            b = torch.zeros_like(logits)
            r = logits[..., :77].amax(-1) - logits[..., :77].amin(-1)      # (heads, N)
            for i in range(k):
                for j in cols[i]:
                    if row == 0:
                        b[..., j] = float("-inf")
                    else:
                        b[..., j] = torch.where(cover[i] > 0, w * r * cover[i], torch.tensor(float("-inf")))
            return b

        want = expected_attention(attn, hidden, context, bias_of_row)
        torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")
        # the unconditional row is the negative prompt's attention alone, whatever K is
        alone = expected_attention(attn, hidden[:1], context[:1, :77], lambda r, lg: torch.zeros_like(lg))
        torch.testing.assert_close(out[:1], alone, rtol=1e-9, atol=1e-11)
        outside = torch.stack([c == 0 for c in cover]).all(0)
        if outside.any():
            plain = expected_attention(attn, hidden[1:], context[1:, :77], lambda r, lg: torch.zeros_like(lg))
            torch.testing.assert_close(out[1, outside], plain[0, outside], rtol=1e-9, atol=1e-11)
