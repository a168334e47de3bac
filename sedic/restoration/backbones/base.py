"""What a decoder backbone is, as one record: `BackboneSpec` (docs/backbones.md).

Light on purpose (no torch, no diffusers at import): `sedic models list` and the decoder's model
check read the descriptions without loading anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import SedicError

if TYPE_CHECKING:
    import torch

    from ...models import ModelRef
    from ..backbone import Backbone
    from ..settings import DecoderSettings

CONDITIONS = ("latent", "pixel")
SD_LATENT_SCALE = 0.18215  # SD 1.x/2.x VAE's scaling_factor


@dataclass(frozen=True)
class BackboneSpec:
    """One decoder backbone: its name, the models it needs, how it loads, and the constants of its
    networks that the decoder (ORAG's mask pyramid, the padding, the sampler) relies on.

    Everything here is checked against the real models by tests/test_backbone.py
    (`test_each_description_matches_its_models`).
    """

    name: str            # DecoderSettings.backbone
    summary: str         # one line for docs and messages
    # What `controlnet_cond` is: "latent": the scaled VAE latent of the image being restored
    # (IRControlNet); "pixel": the image in [0, 1], (B, 3, H, W) (a stock diffusers ControlNet).
    condition: str
    # The UNet's resolution levels (len(block_out_channels): SD 1.x/2.x have 4, three 2x
    # down-samplings). ORAG keeps one mask coverage map per level (OragState(levels)).
    unet_levels: int
    # models(settings) -> the ModelRefs `sedic models list/download` and codec.decode's check use.
    models: Callable[[DecoderSettings], list[ModelRef]]
    # load(settings, dtype) -> Backbone with every model built (load_backbone then places it).
    load: Callable[[DecoderSettings, torch.dtype], Backbone]
    # Image pixels per latent cell (the VAE's 2^(blocks - 1)). The .sedic masks are on the 8-pixel
    # grid, so a backbone with another factor would need its masks resampled (not supported).
    vae_factor: int = 8
    # Images are padded (bottom/right) to a multiple of this: vae_factor x 2^(unet_levels - 1)
    # keeps every down-sampling exact (64 for SD).
    pad_multiple: int = 64
    # The VAE's latent scale when its config has none (the loaders read vae.config.scaling_factor).
    latent_scale: float = SD_LATENT_SCALE

    def __post_init__(self):  # a mistake in a description, found when it is registered
        if self.condition not in CONDITIONS:
            raise SedicError(f"backbone {self.name!r}: condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.unet_levels < 1 or self.pad_multiple % (self.vae_factor * 2 ** (self.unet_levels - 1)):
            raise SedicError(f"backbone {self.name!r}: pad_multiple must be a multiple of "
                             f"vae_factor x 2^(unet_levels - 1) (the UNet's down-samplings)")
