"""The decoder's pretrained models as `sedic.models.ModelRef`s: what `sedic models` lists and
fetches for a profile's decoder, and which files of each the loaders in backbone.py read.
Each backbone names its own models (`BackboneSpec.models`, backbones/)."""

from __future__ import annotations

from ..models import Folder, ModelRef

# What `backbone.load_sd_backbone` reads of a diffusers Stable Diffusion repository: per folder,
# its library (None: no weights) and the small files.
SD_FOLDERS = (
    Folder("unet", "diffusers", ("config.json",)),
    Folder("vae", "diffusers", ("config.json",)),
    Folder("text_encoder", "transformers", ("config.json",)),
    Folder("tokenizer", None, ("*",)),
    Folder("scheduler", None, ("scheduler_config.json",)),
)
# Files that must be cached for an SD repository to count as available (the loaders read them);
# "a|b" = either. The CLIP tokenizer reads tokenizer.json when present (transformers >= 5 saves
# only that), else vocab.json and merges.txt (what SD repositories ship).
SD_REQUIRED = ("unet/config.json", "vae/config.json", "text_encoder/config.json",
               "tokenizer/tokenizer.json|tokenizer/vocab.json+tokenizer/merges.txt",
               "scheduler/scheduler_config.json")
DEFAULT_CONTROLNET_FILE = "v2.pth"  # DiffBIR v2's IRControlNet checkpoint in its repository


def sd_pipeline(role: str, repo_id: str, revision: str | None) -> ModelRef:
    """A Stable Diffusion repository in the diffusers layout, as the decoder reads it."""
    return ModelRef(role, repo_id, revision, "pipeline", folders=SD_FOLDERS, required=SD_REQUIRED)


def decoder_models(d) -> list[ModelRef]:
    """The decoder models of DecoderSettings `d`, as its backbone's description names them (none
    for the tiny backbone); an unknown backbone is a ModelUnavailableError naming the known ones."""
    from .backbones import backbone_spec

    return backbone_spec(getattr(d, "backbone", "tiny")).models(d)
