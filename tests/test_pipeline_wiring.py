"""What each stage of restore() receives, observed at the sampler's boundary (sample_stage), for the
default (`sedic`), `sedic-fast` and `authors` profiles, against docs/orag.md; and locality: an object
stage changes the latent inside its mask only, at the mask's pixel positions."""

import dataclasses

import numpy as np
import pytest
import torch

from sedic.config import PROFILES
from sedic.restoration import pipeline
from sedic.restoration.plan import plan_stages
from sedic.semantics import SemanticObject, Semantics

from tiny_decoder import FAST, gradient_image

H, W = 48, 72  # latent grid 6x9, padded to 8x16 (64x128 pixels)


def _semantics():
    """Two asymmetric objects (an L and a bar off the centre): a flip or transpose shows."""
    gh, gw = 6, 9
    a = np.zeros((gh, gw), bool)
    a[0:4, 1:3] = True
    a[3, 3:5] = True
    b = np.zeros((gh, gw), bool)
    b[4:6, 5:9] = True
    return Semantics("a dog and a ball in a garden",
                     [SemanticObject("dog", "a brown dog", a), SemanticObject("ball", "a red ball", b)])


def _record(monkeypatch):
    calls = []
    real = pipeline.sample_stage

    def spy(denoiser, config, spec, z_input, **kw):
        gen_state = kw["generator"].get_state().clone()
        out = real(denoiser, config, spec, z_input, **kw)
        calls.append(dict(spec=spec, z_in=z_input.clone(), kw=kw, gen=gen_state, out=out.clone()))
        return out

    monkeypatch.setattr(pipeline, "sample_stage", spy)
    return calls


def _settings(name):
    steps = {k: v for k, v in FAST.items() if "steps" not in k} if name == "authors" else FAST
    return dataclasses.replace(PROFILES[name].decoder, **steps)


def _reference_latent(bb, image):
    """z^(0): the VAE posterior mode of the [-1, 1] image, padded reflectively to 64 px, x factor."""
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    x = torch.nn.functional.pad(x, (0, -W % 64, 0, -H % 64), mode="replicate" if -H % 64 >= H else "reflect")
    return bb.vae.encode(x).latent_dist.mode() * bb.vae.config.scaling_factor


def _grid_mask(obj):
    m = torch.zeros(1, 1, 8, 16, dtype=torch.bool)
    m[0, 0, :6, :9] = torch.from_numpy(obj.mask)
    return m


@pytest.mark.parametrize("profile", ["sedic", "authors"])
def test_sequential_stages_receive_what_the_docs_say(bb, monkeypatch, profile):
    settings, sem, seed = _settings(profile), _semantics(), 5
    image = gradient_image(H, W)
    calls = _record(monkeypatch)
    pipeline.restore(image, sem, settings, seed=seed, backbone=bb)
    plan = plan_stages(sem, settings)
    assert [c["kw"]["steps"] for c in calls] == [s.steps for s in plan]
    st, orag = settings.pipeline, settings.orag
    z_ref = _reference_latent(bb, image)
    negative = bb.encode_prompt([settings.negative_prompt])
    torch.testing.assert_close(calls[0]["z_in"], z_ref, rtol=1e-5, atol=1e-5)
    for k, (obj, c) in enumerate(zip(sem.objects, calls[:2], strict=True), start=1):
        spec, kw = c["spec"], c["kw"]
        prompt = obj.description if st.object_prompt == "description" else f"{obj.name}, {obj.description}"
        assert torch.equal(spec.cond, bb.encode_prompt([prompt]))
        assert torch.equal(spec.uncond, negative) and spec.cfg == settings.object_cfg
        assert kw["steps"] == settings.object_steps_for(k)
        assert kw["start_strength"] == st.object_start_strength and kw["start"] == st.object_start
        if k > 1:
            assert torch.equal(c["z_in"], calls[k - 2]["out"])           # z^(k-1) is the input...
        assert torch.equal(spec.control, c["z_in"])                    # ...and the condition
        assert torch.equal(kw["blend_mask"], _grid_mask(obj))          # the object's mask, in place
        assert kw["blend_every_step"] == orag.blend_every_step
        if orag.attention_on:
            assert torch.equal(spec.orag_mask.bool(), _grid_mask(obj))
        else:
            assert spec.orag_tokens is None
        assert torch.equal(c["gen"], pipeline.stage_generator(seed, k).get_state())
    final = calls[2]
    spec, kw = final["spec"], final["kw"]
    assert torch.equal(spec.cond, bb.encode_prompt([sem.overall])) and spec.cfg == settings.final_cfg
    assert kw["steps"] == settings.final_steps and kw["start_strength"] == st.final_start_strength
    assert kw["blend_mask"] is None and spec.orag_tokens is None
    assert torch.equal(final["z_in"], calls[1]["out"])
    if st.final_condition == "reference":
        torch.testing.assert_close(spec.control, z_ref, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(spec.control, calls[1]["out"])               # the object-restored latent
    assert torch.equal(final["gen"], pipeline.stage_generator(seed, 3).get_state())
    gens = [c["gen"] for c in calls]
    assert not torch.equal(gens[0], gens[1]) and not torch.equal(gens[1], gens[2])


def test_fused_pass_receives_what_the_docs_say(bb, monkeypatch):
    settings, sem, seed = _settings("sedic-fast"), _semantics(), 5
    image = gradient_image(H, W)
    calls = _record(monkeypatch)
    pipeline.restore(image, sem, settings, seed=seed, backbone=bb)
    assert len(calls) == 1
    spec, kw, z_in = calls[0]["spec"], calls[0]["kw"], calls[0]["z_in"]
    z_ref = _reference_latent(bb, image)
    torch.testing.assert_close(z_in, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spec.control, z_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(spec.cond[:, :77], bb.encode_prompt([sem.overall]))
    assert torch.equal(spec.uncond[:, :77], bb.encode_prompt([settings.negative_prompt]))
    assert spec.cfg == settings.final_cfg and kw["steps"] == settings.final_steps
    assert kw["start_strength"] == settings.pipeline.final_start_strength and kw["blend_mask"] is None
    assert torch.equal(spec.orag_mask.bool(), torch.cat([_grid_mask(o) for o in sem.objects], 1))
    for k, obj in enumerate(sem.objects):
        alone = bb.encode_prompt([f"{obj.name}, {obj.description}"])[0]
        n = len(bb.tokenizer(f"{obj.name}, {obj.description}").input_ids) - 2
        assert int(spec.orag_tokens[k].sum()) == n
        torch.testing.assert_close(spec.cond[0, spec.orag_tokens[k].bool()], alone[1:1 + n], rtol=0, atol=0)
    assert torch.equal(calls[0]["gen"], pipeline.stage_generator(seed, 3).get_state())


def test_an_object_stage_changes_its_mask_only(bb, monkeypatch):
    """Locality, at pixel positions: after object stage k the latent equals the stage input exactly
    outside mask k and differs from it at every latent cell inside (all four channels)."""
    sem = _semantics()
    calls = _record(monkeypatch)
    pipeline.restore(gradient_image(H, W), sem, _settings("sedic"), seed=1, stages=2, backbone=bb)
    for obj, c in zip(sem.objects, calls, strict=True):
        changed = (c["out"] != c["z_in"]).all(1)[0]                     # (8, 16)
        want = torch.zeros(8, 16, dtype=torch.bool)
        want[:6, :9] = torch.from_numpy(obj.mask)
        assert torch.equal(changed, want), obj.name
        assert torch.equal(c["out"][:, :, ~want], c["z_in"][:, :, ~want])
