"""A plain reference decoder, written from docs/orag.md's equations with diffusers' building blocks
(DDPMScheduler, the UNet/ControlNet/VAE/text encoder called directly, an attention processor that
computes softmax(Q K^T * scale + B) V itself), compared with restore() in float64.

Nothing from sedic.restoration is used here but the tiny backbone's construction (tiny_decoder),
so a convention that restore() gets wrong and this file gets right (or the other way round) fails
the comparison on every machine: no hashes, a tolerance.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sedic.semantics import SemanticObject, Semantics

from tiny_decoder import FAST, gradient_image, sd21_backbone

H, W = 40, 56       # padded to 64x64: latent 8x8
OBJ_STEPS, FINAL_STEPS = 2, 3
NEGATIVE = "low quality, blurry"


@pytest.fixture(scope="module")
def sd21():
    return sd21_backbone(torch.float64)


def _semantics():
    a = np.zeros((5, 7), bool)
    a[0:4, 1:3] = True
    a[3, 3:5] = True
    b = np.zeros((5, 7), bool)
    b[3:5, 4:7] = True
    return Semantics("a dog and a ball in a garden",
                     [SemanticObject("dog", "a brown dog", a), SemanticObject("ball", "a red ball", b)])


# --- the reference ------------------------------------------------------------------------------

def generator(seed, stage):
    """The documented noise stream of a stage: numpy's SeedSequence([seed, stage]), two 32-bit
    words s0, s1, torch CPU generator seeded with (s0 << 31) ^ s1."""
    s = np.random.SeedSequence([seed, stage]).generate_state(2, np.uint32)
    return torch.Generator("cpu").manual_seed(int(s[0]) << 31 ^ int(s[1]))


def text(bb, prompt):
    ids = bb.tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return bb.text_encoder(ids)[0].to(bb.unet.dtype)


def text_tokens(bb, prompt):
    ids = bb.tokenizer(prompt, padding="max_length", max_length=77).input_ids
    eos = ids.index(bb.tokenizer.eos_token_id, 1)
    t = torch.zeros(77, dtype=torch.bool)
    t[1:eos] = True
    return t


def coverage(mask, level):
    """a(q) at UNet level `level`: the fraction of each 2^l x 2^l block of latent cells covered."""
    f = 2 ** level
    h, w = mask.shape
    out = torch.zeros(-(-h // f), -(-w // f), dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = mask[i * f:(i + 1) * f, j * f:(j + 1) * f].double().mean()
    return out.reshape(-1)


class ReferenceAttention:
    """Cross-attention with the docs' bias; self-attention plain. Row 0 of a batch of 2 is the
    unconditional row. Sequential: B = w R s(q) 1[j in T], s = a where a > 0 else -1.
    Fused: object k's columns are -inf where a_k = 0 and in row 0, else + w R a_k (R over the
    first 77 keys)."""

    def __init__(self, run):
        self.run = run

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        d = q.shape[-1] // heads
        q, k, v = (x.view(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
        r = self.run
        if encoder_hidden_states is not None and r.get("objects"):
            level = r["levels"][n]
            rows = r["rows"]
            bias = torch.zeros_like(logits)
            cache = r.setdefault("coverage", {})
            for row in range(b):
                for i, (cols, mask) in enumerate(r["objects"]):
                    if (i, level) not in cache:
                        cache[i, level] = coverage(mask, level)
                    a = cache[i, level]
                    if r["fused"]:
                        rng = logits[row, ..., :77].amax(-1) - logits[row, ..., :77].amin(-1)   # (heads, N)
                        value = torch.where(a > 0, r["w"] * rng * a, -math.inf) if rows[row] else -math.inf
                    elif rows[row] and r["w"]:
                        rng = logits[row].amax(-1) - logits[row].amin(-1)
                        value = r["w"] * rng * torch.where(a > 0, a, -1.0)
                    else:
                        continue
                    bias[row, :, :, cols] = torch.as_tensor(value, dtype=bias.dtype)[..., None]
            logits = logits + bias
        out = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(b, n, heads * d)
        return attn.to_out[1](attn.to_out[0](out))


def low_high(x):
    """Five dilated 3x3 binomial blurs (dilations 1..16, replicate padding): (low band, the rest)."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    high = torch.zeros_like(x)
    for i in range(5):
        low = F.conv2d(F.pad(x, (2 ** i,) * 4, mode="replicate"), k, dilation=2 ** i, groups=x.shape[1])
        high, x = high + (x - low), low
    return x, high


def reference_decode(bb, image, sem, seed, fused, strength=0.4):
    from diffusers import DDPMScheduler

    sf = bb.vae.config.scaling_factor
    x = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None] / 127.5 - 1
    xp = F.pad(x, (0, -W % 64, 0, -H % 64), mode="reflect")
    lh, lw = xp.shape[-2] // 8, xp.shape[-1] // 8
    levels = {(-(-lh // 2 ** lv)) * (-(-lw // 2 ** lv)): lv for lv in range(4)}
    z_ref = bb.vae.encode(xp).latent_dist.mode() * sf
    neg = text(bb, NEGATIVE)
    masks = []
    for o in sem.objects:
        m = torch.zeros(lh, lw, dtype=torch.bool)
        m[:o.mask.shape[0], :o.mask.shape[1]] = torch.from_numpy(o.mask)
        masks.append(m)
    run = {"fused": fused, "levels": levels, "objects": None, "w": 0.0, "rows": [0, 1]}
    proc = ReferenceAttention(run)
    originals = [(m, dict(m.attn_processors)) for m in (bb.unet, bb.controlnet)]
    for m in (bb.unet, bb.controlnet):
        m.set_attn_processor(proc)

    def eps_of(z, t, cond, uncond, control, cfg):
        zz, emb = torch.cat([z, z]), torch.cat([uncond, cond])
        tt = torch.full((2,), t, dtype=torch.long)
        down, mid = bb.controlnet(zz, tt, encoder_hidden_states=emb, controlnet_cond=torch.cat([control, control]),
                                  return_dict=False)
        e = bb.unet(zz, tt, encoder_hidden_states=emb, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]
        eu, ec = e.chunk(2)
        return eu + cfg * (ec - eu)

    def stage(z_in, cond, uncond, control, steps, strength_t0, cfg, gen, blend=None, guide=False):
        top = round(strength_t0 * 999)
        ts = [top] if steps == 1 else [round(top * (steps - 1 - i) / (steps - 1)) for i in range(steps)]
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)
        sched.set_timesteps(timesteps=ts)
        z0 = z_in.float()
        noise = torch.randn(z0.shape, generator=gen)
        z = sched.add_noise(z0, noise, torch.tensor([ts[0]]))
        for i, t in enumerate(ts):
            run["w"] = strength * (1 - i / steps) if guide else 0.0
            e = eps_of(z.double(), t, cond, uncond, control, cfg).float()
            z = sched.step(e, t, z, generator=gen).prev_sample
            if blend is not None:
                keep = z0 if i + 1 == len(ts) else sched.add_noise(z0, noise, torch.tensor([ts[i + 1]]))
                z = torch.where(blend, z, keep)
        return z

    try:
        with torch.no_grad():
            if fused:
                live = [(o, m) for o, m in zip(sem.objects, masks, strict=True)]
                parts, objects, col = [text(bb, sem.overall)], [], 77
                for o, m in live:
                    p = f"{o.name}, {o.description}"
                    t = text_tokens(bb, p)
                    parts.append(text(bb, p)[:, t])
                    objects.append((list(range(col, col + int(t.sum()))), m))
                    col += int(t.sum())
                cond = torch.cat(parts, 1)
                uncond = torch.cat([neg, cond[:, 77:]], 1)
                run["objects"] = objects
                z = stage(z_ref, cond, uncond, z_ref, FINAL_STEPS, 1.0, 7.0, generator(seed, len(live) + 1),
                          guide=True)
            else:
                z = z_ref.float()
                for k, (o, m) in enumerate(zip(sem.objects, masks, strict=True), start=1):
                    p = f"{o.name}, {o.description}"
                    run["objects"] = [(list(torch.nonzero(text_tokens(bb, p)).flatten()), m)]
                    run["coverage"] = {}
                    z = stage(z, text(bb, p), neg, z.double(), OBJ_STEPS, 0.6, 3.5, generator(seed, k),
                              blend=m[None, None].expand(1, 4, lh, lw), guide=True)
                run["objects"] = None
                z = stage(z, text(bb, sem.overall), neg, z.double(), FINAL_STEPS, 1.0, 7.0,
                          generator(seed, len(sem.objects) + 1))
            out = bb.vae.decode(z.double() / sf).sample.float()[..., :H, :W]
            out = low_high(x.float())[0] + low_high(out)[1]          # wavelet colour fix
    finally:
        for m, procs in originals:
            m.set_attn_processor(procs)
    image = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return z, image


# --- the comparison ---------------------------------------------------------------------------

def _final_latent_of(bb, fn):
    """Run fn() and return the latent that the VAE's last decode got (its post_quant_conv input x factor)."""
    seen = []
    h = bb.vae.post_quant_conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        result = fn()
    finally:
        h.remove()
    return result, seen[-1] * bb.vae.config.scaling_factor


@pytest.mark.parametrize("schedule", ["sequential", "fused"])
def test_restore_equals_the_reference_decoder(sd21, schedule):
    import dataclasses

    from sedic.restoration import restore
    from sedic.restoration.settings import DecoderSettings

    sem, seed = _semantics(), 11
    image = gradient_image(H, W, seed=2)
    settings = DecoderSettings(**{**FAST, "object_steps": OBJ_STEPS, "final_steps": FINAL_STEPS},
                               negative_prompt=NEGATIVE, schedule=schedule)
    settings = dataclasses.replace(settings, pipeline=dataclasses.replace(settings.pipeline, batched_cfg=True))
    got, z_got = _final_latent_of(sd21, lambda: restore(image, sem, settings, seed=seed, backbone=sd21))
    (z_want, want), _ = _final_latent_of(sd21, lambda: reference_decode(sd21, image, sem, seed,
                                                                        fused=schedule == "fused"))
    torch.testing.assert_close(z_got.double(), z_want.double(), rtol=1e-5, atol=1e-5)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
