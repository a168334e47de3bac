"""Which pretrained models a profile uses, which files of each the loaders read, whether those
files are in the local cache, fetching exactly them, and loading with errors a user can act on.

The file selection mirrors the loaders, so `sedic models download` fetches what a run reads and
nothing else (hub repositories carry several copies of the weights: root LDM checkpoints, `.bin`
beside `.safetensors`, fp16 and EMA variants), and "available" means every file a loader opens
is cached, not merely a marker file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelUnavailableError

log = logging.getLogger(__name__)

# Weight files of one model folder, per library: the default variant (no fp16, no non_ema) in
# safetensors, sharded or not; `.bin` only for a folder without safetensors (what the loaders do).
_WEIGHTS = {
    "transformers": (("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
                     ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")),
    "diffusers": (("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*-of-*.safetensors",
                   "diffusion_pytorch_model.safetensors.index.json"),
                  ("diffusion_pytorch_model.bin", "diffusion_pytorch_model-*-of-*.bin",
                   "diffusion_pytorch_model.bin.index.json")),
}
# Small files a transformers model and its processor may read at the repository root.
_TRANSFORMERS_SMALL = ("*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken")
# What the decoder reads of a diffusers Stable Diffusion repository (backbone._load_sd_parts):
# per folder, its library (None: no weights) and the small files.
_SD_FOLDERS = {
    "unet": ("diffusers", ("config.json",)),
    "vae": ("diffusers", ("config.json",)),
    "text_encoder": ("transformers", ("config.json",)),
    "tokenizer": (None, ("*",)),
    "scheduler": (None, ("scheduler_config.json",)),
}
# Files that must be cached for an SD repository to count as available (the loaders read them);
# "a|b" = either. The CLIP tokenizer reads tokenizer.json when present (transformers >= 5 saves
# only that), else vocab.json and merges.txt (what SD repositories ship).
_SD_REQUIRED = ("unet/config.json", "vae/config.json", "text_encoder/config.json",
                "tokenizer/tokenizer.json|tokenizer/vocab.json+tokenizer/merges.txt",
                "scheduler/scheduler_config.json")

KINDS = ("transformers", "sd-pipeline", "diffusers-model", "file", "compressai")


@dataclass(frozen=True)
class ModelRef:
    role: str                 # what the model does in sedic
    repo_id: str              # hub id or local path; for kind "compressai" the zoo architecture
    revision: str | None
    kind: str                 # one of KINDS
    filename: str | None = None  # kind "file": the one file used from the repository
    # kind "transformers": small files the model's processor needs besides config.json
    # (they must be cached for the model to count as available).
    needs: tuple[str, ...] = ()
    # kind "compressai": the qualities whose weights are used, and the zoo's metric.
    qualities: tuple[int, ...] = ()
    metric: str = "mse"

    @property
    def label(self) -> str:
        if self.kind == "compressai":
            return f"CompressAI {self.repo_id} ({self.metric}, qualities {_ranges(self.qualities)})"
        return self.repo_id + (f" [{self.filename}]" if self.filename else "")


def _ranges(qualities) -> str:
    q = sorted(qualities)
    return f"{q[0]}-{q[-1]}" if q and q == list(range(q[0], q[-1] + 1)) and len(q) > 1 else ",".join(map(str, q))


# ---------------------------------------------------------------------------------------------
# The models of a profile

def encoder_models(a, num_objects: int | None = None) -> list[ModelRef]:
    """The analysis models of AnalysisSettings `a` (none for the tiny backend); with
    num_objects=0 the grounding models are not needed."""
    refs = []
    if a.backend == "local":
        refs.append(ModelRef("vision-language model (descriptions)", a.vlm_model, a.vlm_revision, "transformers",
                             needs=("preprocessor_config.json", "tokenizer_config.json")))
    k = a.num_objects if num_objects is None else num_objects
    if a.backend in ("local", "openai") and k > 0:
        refs.append(ModelRef("Grounding DINO (boxes)", a.grounding_model, a.grounding_revision, "transformers",
                             needs=("preprocessor_config.json", "tokenizer_config.json")))
        sam2 = a.sam_variant == "sam2"
        refs.append(ModelRef(f"{'SAM 2' if sam2 else 'SAM'} (masks)", a.sam_model, a.sam_revision, "transformers",
                             needs=() if sam2 else ("preprocessor_config.json",)))
    return refs


def decoder_models(d) -> list[ModelRef]:
    """The decoder models of DecoderSettings `d` (none for the tiny backbone)."""
    refs = []
    if getattr(d, "backbone", "tiny") == "tiny":
        return refs
    if d.base_model:
        refs.append(ModelRef("diffusion base model (decoder)", d.base_model, d.revision, "sd-pipeline"))
    if d.controlnet:
        if d.backbone == "controlnet":  # a diffusers ControlNetModel repository
            refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "diffusers-model"))
        else:  # the IRControlNet: one checkpoint file
            refs.append(ModelRef("control network (decoder)", d.controlnet, d.controlnet_revision, "file",
                                 d.controlnet_file or "v2.pth"))
    return refs


def reference_models(r) -> list[ModelRef]:
    """CompressAI zoo weights when the reference codec is CompressAI without a local checkpoint."""
    if r.codec != "compressai" or r.compressai_checkpoint:
        return []
    quals = (1, 2, 3, 4, 5, 6) if r.compressai_model.startswith("cheng2020") else tuple(range(1, 9))
    return [ModelRef("reference codec (CompressAI zoo)", r.compressai_model, None, "compressai", qualities=quals)]


def profile_models(profile) -> list[ModelRef]:
    """Every downloadable model a profile needs (encoder, reference codec, decoder)."""
    return encoder_models(profile.analysis) + reference_models(profile.reference) + decoder_models(profile.decoder)


# ---------------------------------------------------------------------------------------------
# Which files: patterns for a download, required files for "available"

def allow_patterns(ref: ModelRef, safetensors: bool | dict = True) -> list[str]:
    """Glob patterns (huggingface_hub's fnmatch semantics) of every file the loaders read.

    safetensors: False (or a dict folder -> False) selects `.bin` weights for folders without
    safetensors. Root-level kinds are also given ignore pattern "*/*" (see `ignore_patterns`)."""
    def weights(folder: str, lib: str) -> tuple[str, ...]:
        st = safetensors.get(folder, True) if isinstance(safetensors, dict) else safetensors
        return _WEIGHTS[lib][0 if st else 1]

    if ref.kind == "file":
        return [ref.filename]
    if ref.kind == "transformers":
        return list(_TRANSFORMERS_SMALL) + list(weights("", "transformers"))
    if ref.kind == "diffusers-model":
        return ["config.json"] + list(weights("", "diffusers"))
    if ref.kind == "sd-pipeline":
        out = ["model_index.json"]
        for folder, (lib, small) in _SD_FOLDERS.items():
            out += [f"{folder}/{p}" for p in small]
            if lib:
                out += [f"{folder}/{p}" for p in weights(folder, lib)]
        return out
    raise ValueError(f"no hub files for model kind {ref.kind!r}")


def ignore_patterns(ref: ModelRef) -> list[str] | None:
    # transformers and diffusers models read only the repository root (`*` matches "/" too).
    return ["*/*"] if ref.kind in ("transformers", "diffusers-model") else None


def _weight_folders(ref: ModelRef) -> dict[str, str]:
    if ref.kind == "transformers":
        return {"": "transformers"}
    if ref.kind == "diffusers-model":
        return {"": "diffusers"}
    if ref.kind == "sd-pipeline":
        return {f: lib for f, (lib, _) in _SD_FOLDERS.items() if lib}
    return {}


def select_files(ref: ModelRef, repo_files) -> list[str]:
    """The files of a repository listing that `download` fetches (the loaders' files)."""
    from huggingface_hub.utils import filter_repo_objects

    files = list(repo_files)
    # A folder without safetensors weights falls back to .bin, as the loaders do.
    has_st = {}
    for folder, lib in _weight_folders(ref).items():
        pats = [f"{folder}/{p}" if folder else p for p in _WEIGHTS[lib][0]]
        in_folder = [f for f in files if (f.rpartition("/")[0] == folder)]
        has_st[folder] = any(filter_repo_objects(in_folder, allow_patterns=pats))
    return sorted(filter_repo_objects(files, allow_patterns=allow_patterns(ref, has_st),
                                      ignore_patterns=ignore_patterns(ref)))


def _hub_cached(repo_id: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - malformed ids etc.: simply "not cached"
        return None
    return found if isinstance(found, str) else None


def _weights_cached(get, folder: str, lib: str) -> bool:
    """One folder's weights: single file, or an index and every shard it names; safetensors or bin."""
    prefix = f"{folder}/" if folder else ""
    for single, _, index in _WEIGHTS[lib]:
        if get(prefix + single):
            return True
        index_path = get(prefix + index)
        if index_path:
            try:
                shards = set(json.loads(Path(index_path).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if shards and all(get(prefix + s) for s in shards):
                return True
    return False


def missing_files(ref: ModelRef) -> list[str]:
    """Files (or groups of files) a loader reads that are not available locally; [] = available."""
    if ref.kind == "compressai":
        try:
            paths = compressai_paths(ref)
        except ImportError:
            return ["(the compressai package is not installed)"]
        return [os.path.basename(p) for p in paths.values() if not os.path.isfile(p)]
    if _is_local_path(ref.repo_id):
        root = Path(ref.repo_id).expanduser()

        def get(name):
            return str(root / name) if (root / name).is_file() else None
        if ref.kind == "file" and root.is_file():
            return []
    else:
        def get(name):
            return _hub_cached(ref.repo_id, name, ref.revision)
    if ref.kind == "file":
        return [] if get(ref.filename) else [ref.filename]
    if ref.kind == "sd-pipeline":
        required = list(_SD_REQUIRED)
    else:
        required = ["config.json", *ref.needs]
    missing = [f for f in required
               if not any(all(get(part) for part in alt.split("+")) for alt in f.split("|"))]
    for folder, lib in _weight_folders(ref).items():
        if not _weights_cached(get, folder, lib):
            missing.append(f"{folder + '/' if folder else ''}{_WEIGHTS[lib][0][0]} (weights)")
    return missing


def required_count(ref: ModelRef) -> int:
    """How many entries `missing_files` lists when nothing at all is available."""
    if ref.kind == "compressai":
        return len(compressai_paths(ref))
    if ref.kind == "file":
        return 1
    small = len(_SD_REQUIRED) if ref.kind == "sd-pipeline" else 1 + len(ref.needs)
    return small + len(_weight_folders(ref))


def is_cached(ref: ModelRef) -> bool:
    """Whether every file the loaders read is available without the network (cache or local path)."""
    return not missing_files(ref)


def _is_local_path(repo_id: str) -> bool:
    return repo_id.startswith((".", "/", "~")) or Path(repo_id).expanduser().exists()


def hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    return bool(constants.HF_HUB_OFFLINE)


# ---------------------------------------------------------------------------------------------
# CompressAI zoo weights (torch.hub's cache, where the zoo itself looks)

def compressai_paths(ref: ModelRef) -> dict[int, str]:
    """quality -> the path torch.hub.load_state_dict_from_url caches the zoo's weights at."""
    import torch.hub
    from compressai.zoo.image import model_urls

    urls = model_urls.get(ref.repo_id, {}).get(ref.metric, {})
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    return {q: os.path.join(folder, os.path.basename(urls[q])) for q in ref.qualities if q in urls}


def _compressai_download(ref: ModelRef) -> str:
    import re

    import torch.hub
    from compressai.zoo.image import model_urls

    import socket

    urls = model_urls.get(ref.repo_id, {}).get(ref.metric, {})
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # torch.hub opens the URL without a time-out: a stalled server would hang
    try:
        for q, path in compressai_paths(ref).items():
            if os.path.isfile(path):
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # The zoo's file names end in the first hex digits of their SHA-256: verify them.
            m = re.search(r"-([a-f0-9]+)\.", os.path.basename(path))
            torch.hub.download_url_to_file(urls[q], path, hash_prefix=m.group(1) if m else None, progress=True)
    finally:
        socket.setdefaulttimeout(previous)
    return os.path.join(torch.hub.get_dir(), "checkpoints")


# ---------------------------------------------------------------------------------------------
# Downloading

@contextlib.contextmanager
def quiet_hub():
    """Silence huggingface_hub's retry and fallback chatter ("Retrying in 1s [Retry 1/5]"):
    failures reach the user as one ModelUnavailableError line instead."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)


def _one_line(exc: BaseException) -> str:
    """`Type: first line` of an exception (hub errors span several lines)."""
    text = str(exc).strip()
    for prefix in ("Got: ",):  # snapshot_download wraps the real cause as "Got: ConnectError: ..."
        text = text.removeprefix(prefix)
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@lru_cache(maxsize=64)
def repo_listing(repo_id: str, revision: str | None) -> tuple[tuple[str, int | None], ...]:
    """(path, size in bytes) of every file of a hub repository (one API call)."""
    from huggingface_hub import HfApi

    with quiet_hub():
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    return tuple((s.rfilename, s.size) for s in (info.siblings or []))


def download_size(ref: ModelRef) -> int | None:
    """Bytes `download` fetches for `ref` (all its files, cached or not); None when unknown."""
    if ref.kind == "compressai" or _is_local_path(ref.repo_id) or hub_offline():
        return None
    try:
        listing = dict(repo_listing(ref.repo_id, ref.revision))
    except Exception:  # noqa: BLE001 - unreachable hub, unknown repo: size unknown
        return None
    files = [ref.filename] if ref.kind == "file" else select_files(ref, listing)
    sizes = [listing.get(f) for f in files]
    return None if any(s is None for s in sizes) else sum(sizes)


def download(ref: ModelRef) -> str:
    """Fetch exactly the files the loaders read into the local cache; returns the local path."""
    if ref.kind == "compressai":
        try:
            return _compressai_download(ref)
        except Exception as exc:  # noqa: BLE001 - network, hash mismatch, disk: one clear line
            raise ModelUnavailableError(f"cannot download {ref.label}: {_one_line(exc)}") from None
    if _is_local_path(ref.repo_id):
        return ref.repo_id
    if hub_offline():
        raise ModelUnavailableError(f"cannot download {ref.label}: the hub is offline (HF_HUB_OFFLINE is set)")
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        with quiet_hub():
            if ref.kind == "file":
                return hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision)
            files = select_files(ref, dict(repo_listing(ref.repo_id, ref.revision)))
            if not files:
                raise ModelUnavailableError(f"{ref.repo_id} has none of the files a {ref.kind} loader reads")
            return snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=files)
    except ModelUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: one clear line
        raise ModelUnavailableError(f"cannot download {ref.repo_id}: {_one_line(exc)}") from None


def _is_connection_failure(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(s in text for s in ("ConnectError", "ConnectionError", "Timeout", "Name or service not known",
                                   "offline", "LocalEntryNotFoundError"))


def require_models(refs: list[ModelRef], profile: str | None) -> None:
    """Make sure every model in `refs` is available locally before any is loaded.

    Missing models are fetched when the hub is reachable; otherwise one error names every
    model that is missing and the command that fetches them."""
    missing = [r for r in refs if not is_cached(r)]
    if not missing:
        return
    which = profile or "PROFILE"
    if hub_offline():
        failed, reason = missing, "the hub is offline (HF_HUB_OFFLINE is set)"
    else:
        failed, reason = [], ""
        for i, ref in enumerate(missing):
            try:
                log.info("fetching %s (%s)", ref.label, ref.role)
                download(ref)
            except ModelUnavailableError as exc:
                failed.append(ref)
                reason = str(exc).removeprefix(f"cannot download {ref.label}: ").removeprefix(
                    f"cannot download {ref.repo_id}: ")
                if _is_connection_failure(exc):  # the others would fail the same way, slowly
                    failed += missing[i + 1:]
                    break
        if not failed:
            return
    names = ", ".join(f"{r.label} ({r.role})" for r in failed)
    raise ModelUnavailableError(
        f"{len(failed)} model(s) of profile {which} are not available locally and could not be fetched "
        f"({reason}): {names}; run `sedic models download {which}` while online")


# ---------------------------------------------------------------------------------------------
# Loading

def unavailable(repo_id: str, profile: str | None, reason: str = "") -> ModelUnavailableError:
    which = profile or "PROFILE"  # the caller did not say which profile it runs
    extra = f" ({reason})" if reason else ""
    return ModelUnavailableError(
        f"model {repo_id} is not available locally and could not be fetched{extra}; "
        f"run `sedic models download {which}` while online")


def load_pretrained(loader, repo_id: str, revision: str | None, profile: str | None = None, **kwargs):
    """`loader.from_pretrained`, from the local cache when it is complete (no network request at
    all), else from the hub; a missing/offline model becomes one ModelUnavailableError line."""
    with quiet_hub():
        try:
            return loader.from_pretrained(repo_id, revision=revision, local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            log.debug("%s is not complete in the local cache (%s); trying the hub", repo_id, exc)
        except ImportError as exc:
            raise ModelUnavailableError(f"model {repo_id} needs a missing package: {exc}") from None
        if hub_offline():
            raise unavailable(repo_id, profile, "the hub is offline (HF_HUB_OFFLINE is set)")
        try:
            return loader.from_pretrained(repo_id, revision=revision, **kwargs)
        except (OSError, ValueError) as exc:
            # transformers raises OSError for "not cached and offline" and for missing repositories,
            # and ValueError for some unreachable-hub cases.
            log.debug("loading %s failed: %s", repo_id, exc)
            raise unavailable(repo_id, profile, _one_line(exc)) from None
        except ImportError as exc:
            raise ModelUnavailableError(f"model {repo_id} needs a missing package: {exc}") from None
