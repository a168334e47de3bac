"""Profiles: one typed configuration naming every model and setting of a codec run.

A profile has a small integer id that the .sedic file carries, so a file names how it is to be
decoded. Profile `test` builds tiny random-weight models in-process: every command runs offline
with it, and its pictures are meaningless.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .analysis.settings import AnalysisSettings
from .errors import InputError
from .restoration.settings import DecoderSettings, OragSettings, PipelineSettings

# the AVIF reference's encoder efforts (what encode_reference does after the rate search; see
# ReferenceSettings.effort)
REFERENCE_EFFORTS = (0, 1, 2)


def check_effort(effort) -> None:
    """InputError unless effort is one of REFERENCE_EFFORTS (a profile, the API and the CLI say the same)."""
    if isinstance(effort, bool) or not isinstance(effort, int) or effort not in REFERENCE_EFFORTS:
        raise InputError(f"effort must be 0, 1 or 2 (the AVIF reference's encoder effort), got {effort!r}")


@dataclass(frozen=True)
class ReferenceSettings:
    codec: str = "avif"                    # "avif" (Pillow/aom) or "compressai"
    compressai_model: str = "cheng2020-attn"
    compressai_checkpoint: str | None = None  # local state-dict path; else CompressAI's zoo
    # AVIF encoder effort after the rate search (encoder only; files decode the same way):
    # 0 none, 1 speed-2 re-encodes filling the budget, 2 also neighbouring sizes and pre-filtered
    # downscales (docs/reference-stream.md, "Refinement": +0.30 dB on Kodak at 0.02 bpp, against
    # +0.26 at 1, for 2-3x the encode time of 1)
    effort: int = 2

    def __post_init__(self):
        check_effort(self.effort)


@dataclass(frozen=True)
class Profile:
    name: str
    id: int
    description: str
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)


# The schedule of the SEDIC authors' released code (github.com/yang-xidian/SEDIC, SEDIC.py), in
# this decoder's terms: object stages prompted with the description alone, started from pure noise,
# 5 steps in the first and 10 in the others, CFG 3.5, each conditioned on the previous stage and
# pasted over it inside the mask once at the end (no attention guidance); the final stage 50
# steps at CFG 7, conditioned on the reference, started from the noised low-frequency band of the
# last object stage (DiffBIR's "better start", with the image in [-1, 1] where that code passed
# 0..255); no colour correction. Where it differs from ours: docs/orag.md, "The authors' schedule".
AUTHORS_DECODER = DecoderSettings(
    object_steps=10, object_cfg=3.5, final_steps=50, final_cfg=7.0,
    orag=OragSettings(strength=0.0, blend=True, blend_every_step=False),
    pipeline=PipelineSettings(object_start="noise", object_start_strength=1.0, object_stage_steps=(5,),
                              object_prompt="description", final_start="low-frequency",
                              final_start_strength=1.0, final_condition="reference", color_fix="none"),
)

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
        Profile("sedic-fast", 3, "the paper's models with the fused schedule: regional prompting in one pass "
                "of 20 steps, each object's text acting only inside its mask; no object stages, no "
                "blending (docs/orag.md)",
                decoder=DecoderSettings(schedule="fused")),
        Profile("authors", 4, "the paper's models with the SEDIC authors' released decoder schedule, for "
                "comparison: pure-noise object stages of 5/10/10 steps, 50 final steps (docs/orag.md)",
                decoder=AUTHORS_DECODER),
    )
}
DEFAULT_PROFILE = "sedic"


def get_profile(name: str | Profile | None) -> Profile:
    """A built-in profile by name, or a profile file (`*.json`, see `load_profile_file`); a
    Profile is returned as it is (the public API takes either)."""
    if isinstance(name, Profile):
        return name
    if name is None:
        name = DEFAULT_PROFILE
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise InputError(f"profile must be a profile name or a .json profile file's path, got {name!r}")
    if name.endswith(".json"):
        return load_profile_file(name)
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown profile {name!r} (known: {', '.join(PROFILES)}, or a .json profile file)") from None


def load_profile_file(path: str | Path) -> Profile:
    """A built-in profile with settings changed by a JSON file, so no knob needs a code edit:

        {"base": "sedic",
         "decoder": {"base_model": "/models/sd21-base", "final_cfg": 6.0, "orag": {"strength": 0.5}},
         "reference": {"codec": "compressai", "compressai_checkpoint": "/models/cheng_q{quality}.pth"}}

    Files record only the base profile's id, so decode with the same file (`--profile FILE`).
    """
    from . import jsontext
    from .imageio import read_text_file

    path = Path(path)
    try:
        raw = jsontext.loads(read_text_file(path, "profile file"), f"profile file {path}")
    except OSError as exc:
        raise InputError(f"cannot read profile file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"profile file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"profile file {path}: top level must be an object")
    base_name = raw.pop("base", DEFAULT_PROFILE)
    if not isinstance(base_name, str) or base_name not in PROFILES:
        raise InputError(f"profile file {path}: 'base' must name one of {', '.join(PROFILES)}")
    base = PROFILES[base_name]
    changed = _apply(base, raw, str(path), frozen_keys=("name", "id"))
    return replace(changed, description=f"{base.description} (changed by {path})")


def _apply(obj, changes, where: str, frozen_keys=()):
    """dataclasses.replace, recursively, with every key and value type checked."""
    if not isinstance(changes, dict):
        raise InputError(f"{where}: expected an object of settings")
    field_types = {f.name: f.type for f in dataclasses.fields(obj)}
    fields = set(field_types) - set(frozen_keys)
    updates = {}
    for key, value in changes.items():
        if key not in fields:
            raise InputError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(fields))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            value = _apply(current, value, f"{where}: {key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif current is None and value is not None and "str" in str(field_types[key]) \
                and not isinstance(value, str):  # e.g. compressai_checkpoint: a path, or null
            raise InputError(f"{where}: {key} must be a string or null, got {value!r}")
        elif current is not None and value is not None:
            expected = (int, float) if isinstance(current, float) else type(current)
            if not isinstance(value, expected) or (isinstance(value, bool) and not isinstance(current, bool)):
                raise InputError(f"{where}: {key} must be {type(current).__name__}, got {value!r}")
            if isinstance(current, float):
                value = float(value)
                if not math.isfinite(value):  # Python's json reads NaN and Infinity
                    raise InputError(f"{where}: {key} must be a finite number, got {value!r}")
        updates[key] = value
    try:
        return replace(obj, **updates)
    except (TypeError, InputError) as exc:  # the settings' own checks (__post_init__)
        raise InputError(f"{where}: {exc}") from None


def profile_by_id(profile_id: int) -> Profile:
    for p in PROFILES.values():
        if p.id == profile_id:
            return p
    from .errors import BitstreamError

    raise BitstreamError(f"file names profile id {profile_id}, unknown to this version of sedic; "
                         f"name a profile to decode it with (--profile NAME or a .json profile file)")

