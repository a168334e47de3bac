"""Which pretrained models a profile uses, whether they are in the local Hugging Face cache,
pre-fetching them, and loading them with errors a user can act on."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import ModelUnavailableError

log = logging.getLogger(__name__)

# Files a repository of each kind is recognised by in the cache.
_MARKER = {"transformers": "config.json", "diffusers": "model_index.json", "file": None}
# Weights formats nobody here loads: skipped by `download` (SD repositories carry several copies).
_IGNORE = ["*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.mlmodel",
           "*.pb", "flax_model*", "tf_model*", "*.gguf", "*fp16*", "*.non_ema*", "*ema-only*"]


@dataclass(frozen=True)
class ModelRef:
    role: str                 # what the model does in sedic
    repo_id: str
    revision: str | None
    kind: str                 # "transformers" | "diffusers" | "file"
    filename: str | None = None  # for kind "file": the one file used from the repository


def profile_models(profile) -> list[ModelRef]:
    """Every downloadable model a profile needs (encoder and decoder). Tiny backends need none."""
    a, d = profile.analysis, profile.decoder
    refs = []
    if a.backend == "local":
        refs.append(ModelRef("vision-language model (descriptions)", a.vlm_model, a.vlm_revision, "transformers"))
    if a.backend in ("local", "openai"):
        refs.append(ModelRef("Grounding DINO (boxes)", a.grounding_model, a.grounding_revision, "transformers"))
        refs.append(ModelRef(f"{'SAM 2' if a.sam_variant == 'sam2' else 'SAM'} (masks)", a.sam_model,
                             a.sam_revision, "transformers"))
    if getattr(d, "backbone", "tiny") != "tiny":
        if d.base_model:
            refs.append(ModelRef("diffusion base model (decoder)", d.base_model, d.revision, "diffusers"))
        if d.controlnet:
            if d.controlnet_file:
                refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "file",
                                     d.controlnet_file))
            else:
                refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "transformers"))
    return refs


def _is_local_path(repo_id: str) -> bool:
    from pathlib import Path

    return repo_id.startswith((".", "/", "~")) or Path(repo_id).expanduser().exists()


def is_cached(ref: ModelRef) -> bool:
    """Whether the model can be loaded without the network (local path, or in the HF cache)."""
    from pathlib import Path

    if _is_local_path(ref.repo_id):
        p = Path(ref.repo_id).expanduser()
        return (p / ref.filename).exists() if ref.filename else p.exists()
    from huggingface_hub import try_to_load_from_cache

    filename = ref.filename or _MARKER[ref.kind]
    try:
        found = try_to_load_from_cache(ref.repo_id, filename, revision=ref.revision)
    except Exception:  # noqa: BLE001 - malformed ids etc.: simply "not cached"
        return False
    return isinstance(found, str)


def download(ref: ModelRef) -> str:
    """Fetch one model into the Hugging Face cache; returns its local path."""
    if _is_local_path(ref.repo_id):
        return ref.repo_id
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if ref.kind == "file":
            return hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision)
        return snapshot_download(ref.repo_id, revision=ref.revision, ignore_patterns=_IGNORE)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: one clear line
        raise ModelUnavailableError(f"cannot download {ref.repo_id}: {type(exc).__name__}: {exc}") from None


def unavailable(repo_id: str, profile: str | None, reason: str = "") -> ModelUnavailableError:
    which = profile or "PROFILE"  # the caller did not say which profile it runs
    extra = f" ({reason})" if reason else ""
    return ModelUnavailableError(
        f"model {repo_id} is not available locally and could not be fetched{extra}; "
        f"run `sedic models download {which}` while online")


def load_pretrained(loader, repo_id: str, revision: str | None, profile: str | None = None, **kwargs):
    """`loader.from_pretrained` with a missing/offline model turned into ModelUnavailableError."""
    try:
        return loader.from_pretrained(repo_id, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        # transformers raises OSError for "not cached and offline" and for missing repositories,
        # and ValueError for some unreachable-hub cases.
        msg = str(exc)
        log.debug("loading %s failed: %s", repo_id, msg)
        raise unavailable(repo_id, profile, msg.splitlines()[0][:200] if msg else "") from None
    except ImportError as exc:
        raise ModelUnavailableError(f"model {repo_id} needs a missing package: {exc}") from None
