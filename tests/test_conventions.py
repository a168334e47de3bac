"""The decoder's conventions against diffusers itself, on the same tiny SD 2.1-topology weights:
diffusers' own classes are the peer (they are run, not copied), float64 where the models run.

- text states: what StableDiffusionPipeline.encode_prompt computes (SD 2: the final layer norm);
- VAE: AutoencoderKL called directly, posterior mode x scaling_factor (not 1 in the tiny config);
- one denoising step: DDPMScheduler on the same timesteps, and the DDPM posterior written out;
- CFG: two explicit network calls combined as eps_u + g (eps_c - eps_u);
- ControlNet: its 13 residuals (12 down + mid) reach the UNet as diffusers' ControlNet pipeline
  passes them.
"""

import math

import pytest
import torch

from sedic.errors import InputError
from sedic.restoration.backbone import SD_SCHEDULER_CONFIG
from sedic.restoration.sampler import Denoiser, StageSpec, sample_stage, spaced_timesteps

from tiny_decoder import sd21_backbone

LH, LW = 8, 12


@pytest.fixture(scope="module")
def sd21():
    return sd21_backbone(torch.float64)


def test_text_states_equal_diffusers_stable_diffusion_pipeline(sd21):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=sd21.vae, text_encoder=sd21.text_encoder, tokenizer=sd21.tokenizer,
                                   unet=sd21.unet, scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    prompt, negative = "a red car, shiny chrome wheels", "low quality, blurry"
    cond, uncond = pipe.encode_prompt(prompt, torch.device("cpu"), 1, True, negative_prompt=negative)
    torch.testing.assert_close(sd21.encode_prompt([prompt]), cond, rtol=0, atol=0)
    torch.testing.assert_close(sd21.encode_prompt([negative]), uncond, rtol=0, atol=0)
    # the final layer norm is part of it: the last layer's raw output is something else
    raw = sd21.text_encoder(sd21.tokenizer([prompt], padding="max_length", max_length=77,
                                           return_tensors="pt").input_ids, output_hidden_states=True).hidden_states[-1]
    assert (raw - cond).abs().max() > 1e-3


def test_vae_encode_decode_equal_autoencoder_kl(sd21):
    vae = sd21.vae
    factor = vae.config.scaling_factor
    assert factor != 1.0  # so a missing factor shows
    x = torch.rand(1, 3, 8 * LH, 8 * LW, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    want = vae.encode(x).latent_dist.mode() * factor
    torch.testing.assert_close(sd21.encode_image(x), want, rtol=0, atol=0)
    z = torch.randn(1, 4, LH, LW, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(sd21.decode_latent(z), vae.decode(z / factor).sample, rtol=0, atol=0)
    # the IRControlNet's condition is that latent itself
    torch.testing.assert_close(sd21.control_condition(x, want), want, rtol=0, atol=0)


def test_spaced_timesteps_one_step_and_too_many():
    assert spaced_timesteps(1, 0.6) == [599]      # one step runs at the stage's top timestep
    assert spaced_timesteps(1, 1.0) == [999]
    assert spaced_timesteps(2, 0.6) == [599, 0]
    assert spaced_timesteps(4, 1.0) == [999, 666, 333, 0]
    assert len(set(spaced_timesteps(600, 0.6))) == 600
    with pytest.raises(InputError, match="at most 600"):
        spaced_timesteps(700, 0.6)
    with pytest.raises(InputError):
        spaced_timesteps(0, 0.6)


class _LinearEps:
    """A stand-in denoiser whose prediction is a known function of (z, t)."""
    state = None
    device = torch.device("cpu")

    def __call__(self, z, t, spec):
        return 0.3 * z + 1e-4 * t


@pytest.mark.parametrize("steps, strength", [(1, 0.6), (2, 0.6), (3, 1.0)])
def test_denoising_steps_equal_ddpm_scheduler_and_the_posterior(steps, strength):
    from diffusers import DDPMScheduler

    z0 = torch.randn(1, 4, LH, LW, generator=torch.Generator().manual_seed(4))
    spec = StageSpec(cond=None, uncond=None, cfg=1.0, control=None)
    seen = []
    out = sample_stage(_LinearEps(), dict(SD_SCHEDULER_CONFIG), spec, z0, steps=steps, start_strength=strength,
                       generator=torch.Generator().manual_seed(9), callback=lambda i, t, tn, z: seen.append((t, z)))
    top = round(strength * 999)
    ts = [top] if steps == 1 else [round(top * (steps - 1 - i) / (steps - 1)) for i in range(steps)]
    assert [t for t, _ in seen] == ts

    # the posterior, written out (DDPM, epsilon prediction, "fixed_small" variance, x_0 unclipped)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(9)
    eps0 = torch.randn(z0.shape, generator=g)
    z = (abar[ts[0]].sqrt() * z0.double() + (1 - abar[ts[0]]).sqrt() * eps0.double())
    sched = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    sched.set_timesteps(timesteps=ts)
    zd = z.float()
    gd = torch.Generator().manual_seed(9)
    torch.randn(z0.shape, generator=gd)  # the start noise, drawn first
    for i, t in enumerate(ts):
        a_t = abar[t]
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps = 0.3 * z + 1e-4 * t
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        beta_t = 1 - a_t / a_prev
        mean = a_prev.sqrt() * beta_t / (1 - a_t) * x0 + (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t) * z
        var = (1 - a_prev) / (1 - a_t) * beta_t
        z = (mean + var.clamp(min=1e-20).sqrt() * torch.randn(z0.shape, generator=g).double()
             if i + 1 < len(ts) else mean)
        torch.testing.assert_close(seen[i][1].double(), z, rtol=1e-4, atol=1e-5)
        zd = sched.step(0.3 * zd + 1e-4 * t, t, zd, generator=gd).prev_sample
        torch.testing.assert_close(seen[i][1], zd, rtol=1e-5, atol=1e-6)
    assert torch.equal(out, seen[-1][1])


def _diffusers_eps(bb, x, t, emb, control):
    """One network evaluation as diffusers' StableDiffusionControlNetPipeline makes it."""
    tt = torch.full((x.shape[0],), t, dtype=torch.long)
    down, mid = bb.controlnet(x, tt, encoder_hidden_states=emb, controlnet_cond=control, conditioning_scale=1.0,
                              return_dict=False)
    return bb.unet(x, tt, encoder_hidden_states=emb, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0], down, mid


@pytest.mark.parametrize("batched", [True, False])
def test_cfg_equals_two_explicit_calls_with_all_13_control_residuals(sd21, batched):
    bb = sd21
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64)
    control = torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64)
    cond, uncond = (bb.encode_prompt([p]).double() for p in ("a dog on grass", "low quality"))
    cfg = 4.5
    with torch.inference_mode():
        got = Denoiser(bb, batched_cfg=batched)(x, 400, StageSpec(cond=cond, uncond=uncond, cfg=cfg, control=control))
        eps_c, down, mid = _diffusers_eps(bb, x, 400, cond, control)
        eps_u, _, _ = _diffusers_eps(bb, x, 400, uncond, control)
        # each residual matters: the UNet without the mid one, or without the down ones, differs
        tt = torch.full((1,), 400, dtype=torch.long)
        no_mid = bb.unet(x, tt, encoder_hidden_states=cond, down_block_additional_residuals=down,
                         mid_block_additional_residual=torch.zeros_like(mid), return_dict=False)[0]
        no_down = bb.unet(x, tt, encoder_hidden_states=cond, down_block_additional_residuals=[d * 0 for d in down],
                          mid_block_additional_residual=mid, return_dict=False)[0]
    assert len(down) == 12 and mid.shape[-2:] == (1, 2)  # 13 residuals, the mid one at level 3
    want = eps_u + cfg * (eps_c - eps_u)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)  # float32 output: a few ulps
    assert (no_mid - eps_c).abs().max() > 1e-5 and (no_down - eps_c).abs().max() > 1e-5
    # no CFG at scale 1: one conditional call
    with torch.inference_mode():
        one = Denoiser(bb)(x, 400, StageSpec(cond=cond, uncond=uncond, cfg=1.0, control=control))
    torch.testing.assert_close(one, eps_c.float(), rtol=1e-5, atol=1e-6)


def test_control_residuals_reach_the_unet_through_the_denoiser(sd21):
    """A different control latent changes the prediction, by what diffusers computes for it."""
    bb = sd21
    g = torch.Generator().manual_seed(5)
    x, c1, c2 = (torch.randn(1, 4, LH, LW, generator=g, dtype=torch.float64) for _ in range(3))
    cond = bb.encode_prompt(["a house"]).double()
    with torch.inference_mode():
        a = Denoiser(bb)(x, 700, StageSpec(cond=cond, uncond=None, cfg=1.0, control=c1))
        b = Denoiser(bb)(x, 700, StageSpec(cond=cond, uncond=None, cfg=1.0, control=c2))
        want_b = _diffusers_eps(bb, x, 700, cond, c2)[0]
    assert (a - b).abs().max() > 1e-6  # random control weights: small but far above float64 noise
    torch.testing.assert_close(b, want_b.float(), rtol=1e-5, atol=1e-6)
    assert math.isclose(bb.control_scale, 1.0)
