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
