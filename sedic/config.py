"""Profiles: one typed configuration naming every model and setting of a codec run.

A profile has a small integer id that the .sedic file carries, so a file names how it is to be
decoded. Profile `test` builds tiny random-weight models in-process: every command runs offline
with it, and its pictures are meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .analysis.settings import AnalysisSettings
from .errors import InputError
from .restoration.settings import DecoderSettings


@dataclass(frozen=True)
class ReferenceSettings:
    codec: str = "avif"                    # "avif" (Pillow/aom) or "compressai"
    compressai_model: str = "cheng2020-attn"
    compressai_checkpoint: str | None = None  # local state-dict path; else CompressAI's zoo


@dataclass(frozen=True)
class Profile:
    name: str
    id: int
    description: str
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("sedic", 0, "the paper's setting: SD 2.1-base + DiffBIR v2 IRControlNet decoder, "
                "Qwen2.5-VL descriptions, Grounding DINO + SAM masks, AVIF reference"),
        Profile("test", 1, "tiny random-weight models built in-process; runs offline, pictures are meaningless",
                analysis=AnalysisSettings(backend="tiny"),
                decoder=DecoderSettings(backbone="tiny", base_model="", controlnet="", controlnet_file="")),
        Profile("sd15-tile", 2, "SD 1.5 + ControlNet tile decoder (diffusers ControlNetModel)",
                decoder=DecoderSettings(backbone="controlnet",
                                        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
                                        controlnet="lllyasviel/control_v11f1e_sd15_tile",
                                        controlnet_file="")),
    )
}
DEFAULT_PROFILE = "sedic"


def get_profile(name: str | None) -> Profile:
    if name is None:
        name = DEFAULT_PROFILE
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})") from None


def profile_by_id(profile_id: int) -> Profile:
    for p in PROFILES.values():
        if p.id == profile_id:
            return p
    from .errors import BitstreamError

    raise BitstreamError(f"file names profile id {profile_id}, unknown to this version of sedic")


def with_reference_codec(profile: Profile, codec: str) -> Profile:
    return replace(profile, reference=replace(profile.reference, codec=codec))
