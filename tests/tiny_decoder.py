"""Inputs shared by the decoder tests: the tiny backbone's settings, a noisy gradient image and
semantics with overlapping rectangular masks on the latent grid."""

import math

import numpy as np

from sedic.semantics import SemanticObject, Semantics

FAST = dict(backbone="tiny", base_model="", controlnet="", controlnet_file="", object_steps=2, final_steps=3)


def gradient_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.0 * x], -1) * 200
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def box_semantics(h, w, k=2):
    gh, gw = math.ceil(h / 8), math.ceil(w / 8)
    objs = []
    for i in range(k):
        m = np.zeros((gh, gw), bool)
        m[i:i + gh // 2 + 1, 2 * i:2 * i + gw // 2 + 1] = True
        objs.append(SemanticObject(["dog", "ball", "tree"][i % 3], f"a detailed thing number {i}", m))
    return Semantics("a photo of a dog with a ball in a garden", objs)


# --- SD 2.1's topology in miniature -------------------------------------------------------------
# The profile `test` backbone has cross-attention at one resolution only (it keeps decodes fast).
# Convention tests use this one: SD 2.1-base's block layout (cross-attention in the down and up
# blocks of levels 0, 1, 2 and in the mid block at level 3, two layers per block, so 13 control
# residuals), linear projections, several heads, with tiny channels.

def sd21_topology_config():
    from sedic.restoration.ircontrolnet import LdmControlNetConfig

    return LdmControlNetConfig(model_channels=16, channel_mult=(1, 1, 2, 2), num_res_blocks=2,
                               attention_levels=(0, 1, 2), num_head_channels=8, context_dim=32, norm_groups=8)


_SD21: dict = {}


def sd21_backbone(dtype=None):
    """The SD 2.1-topology tiny backbone (random weights, seed 0), cached per dtype (default float64)."""
    import torch

    from sedic.restoration.backbone import build_tiny_backbone

    dtype = dtype or torch.float64
    if dtype not in _SD21:
        bb = build_tiny_backbone(seed=0, controlnet_config=sd21_topology_config()).to(dtype=dtype)
        # the text encoder stays float32: transformers 4.x's CLIP cannot run in float64 (its causal
        # mask is built in the default dtype); its states are cast to the networks' dtype
        torch.nn.Module.to(bb.text_encoder, dtype=torch.float32)
        _SD21[dtype] = bb
    return _SD21[dtype]


def sd21_shaped_tiny_backbone(seed=0):
    """A float32 tiny backbone with SD 2.1's 4 UNet levels (sd21_topology_config), for tests that
    save a base model and load it as `sd21-ircontrolnet` or `controlnet` (both described with 4
    levels; load_backbone refuses another count). Its control checkpoint is
    `sd21_shaped_control_checkpoint(seed + 1)`, as build_tiny_backbone draws it."""
    from sedic.restoration.backbone import build_tiny_backbone

    return build_tiny_backbone(seed=seed, controlnet_config=sd21_topology_config())


def sd21_shaped_control_checkpoint(seed=1):
    """The LDM-layout IRControlNet state dict of sd21_shaped_tiny_backbone(seed - 1)."""
    import torch

    from sedic.restoration.ircontrolnet import random_ldm_ircontrolnet_state_dict

    return random_ldm_ircontrolnet_state_dict(sd21_topology_config(), torch.Generator().manual_seed(seed))


def coverage_reference(mask, level):
    """The fraction of each UNet level-`level` cell covered by `mask` ((h, w) numpy), written out
    from the UNet's geometry: cell (i, j) holds latent rows i*2^l .. (i+1)*2^l - 1 and the same
    columns, cut at the grid's edge."""
    f = 2 ** level
    h, w = mask.shape
    lh, lw = -(-h // f), -(-w // f)
    out = np.zeros((lh, lw))
    for i in range(lh):
        for j in range(lw):
            out[i, j] = mask[i * f:min((i + 1) * f, h), j * f:min((j + 1) * f, w)].mean()
    return out


def sign_reference(mask, level):
    """The documented ORAG sign (docs/orag.md): the coverage where the mask touches the cell, -1
    where it does not."""
    a = coverage_reference(mask, level)
    return np.where(a > 0, a, -1.0)
