"""Every pretrained model sedic reads, of every kind: which files a loader opens, whether they are
in the local cache, fetching exactly them, and loading them (the local cache first, then the
hub) with errors a user can act on.

What each part of the codec needs lives with that part and is described here as `ModelRef`s:
the analysis models in analysis/models.py, the decoder's in restoration/models.py, the
CompressAI reference's in `reference_models` below. This module knows the libraries (the file
layouts of transformers and diffusers models, the CompressAI zoo's URLs, huggingface_hub's cache)
and nothing about any model in particular.

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
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ModelUnavailableError, one_line

log = logging.getLogger(__name__)

# Weight files of one model folder, per library: the default variant (no fp16, no non_ema) in
# safetensors, sharded or not; `.bin` only for a folder without safetensors (what the loaders do).
WEIGHTS = {
    "transformers": (("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
                     ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")),
    "diffusers": (("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*-of-*.safetensors",
                   "diffusion_pytorch_model.safetensors.index.json"),
                  ("diffusion_pytorch_model.bin", "diffusion_pytorch_model-*-of-*.bin",
                   "diffusion_pytorch_model.bin.index.json")),
}
# Small files a transformers model and its processor may read at the repository root.
_TRANSFORMERS_SMALL = ("*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken")


@dataclass(frozen=True)
class Folder:
    """One folder of a multi-folder repository (kind "pipeline") as its loader reads it."""

    path: str
    library: str | None       # "transformers" / "diffusers": its weights are read; None: no weights
    files: tuple[str, ...]    # the small files read (glob patterns)


@dataclass(frozen=True)
class ModelRef:
    """One model a profile needs. Kinds: "transformers" and "diffusers-model" (one model at the
    repository root), "pipeline" (several folders, `folders`), "file" (one file of a repository),
    "compressai" (zoo weights in torch.hub's cache)."""

    role: str                 # what the model does in sedic
    repo_id: str              # hub id or local path; for kind "compressai" the zoo architecture
    revision: str | None
    kind: str
    filename: str | None = None  # kind "file": the one file used from the repository
    # kind "transformers": small files the model's processor needs besides config.json
    # (they must be cached for the model to count as available).
    needs: tuple[str, ...] = ()
    # kind "pipeline": the folders read, and the files that must be cached for it to count as
    # available ("a|b" = either, "a+b" = both).
    folders: tuple[Folder, ...] = ()
    required: tuple[str, ...] = ()
    # kind "compressai": the qualities whose weights are used, and the zoo's metric.
    qualities: tuple[int, ...] = ()
    metric: str = "mse"

    @property
    def label(self) -> str:
        if self.kind == "compressai":
            return f"CompressAI {self.repo_id} ({self.metric}, qualities {_ranges(self.qualities)})"
        return self.repo_id + (f" [{self.filename}]" if self.filename else "")

    @property
    def file(self) -> str:
        """The one file of a kind "file" ref (the profiles always name it)."""
        assert self.filename is not None, f"{self.label}: a kind 'file' ref names its file"
        return self.filename


def _ranges(qualities) -> str:
    q = sorted(qualities)
    return f"{q[0]}-{q[-1]}" if q and q == list(range(q[0], q[-1] + 1)) and len(q) > 1 else ",".join(map(str, q))


# ---------------------------------------------------------------------------------------------
# The models of a profile

def reference_models(r) -> list[ModelRef]:
    """The reference codec's downloadable models (its class's `models`: CompressAI zoo weights
    when the codec is CompressAI without a local checkpoint)."""
    from .streams.codecs import codec_class

    return codec_class(r.codec).models(r)


def compressai_ref(model: str, metric: str = "mse", qualities: tuple[int, ...] | None = None) -> ModelRef:
    """The zoo weights of a CompressAI architecture (every quality the reference codec uses)."""
    from .streams.codecs import CompressAICodec

    quals = tuple(qualities or CompressAICodec(model, metric).qualities())
    return ModelRef("reference codec (CompressAI zoo)", model, None, "compressai", qualities=quals, metric=metric)


def profile_models(profile) -> list[ModelRef]:
    """Every downloadable model a profile needs (encoder, reference codec, decoder)."""
    from .analysis.models import encoder_models
    from .restoration.models import decoder_models

    return encoder_models(profile.analysis) + reference_models(profile.reference) + decoder_models(profile.decoder)


# ---------------------------------------------------------------------------------------------
# Which files: patterns for a download, required files for "available"

def _weight_folders(ref: ModelRef) -> dict[str, str]:
    if ref.kind == "transformers":
        return {"": "transformers"}
    if ref.kind == "diffusers-model":
        return {"": "diffusers"}
    if ref.kind == "pipeline":
        return {f.path: f.library for f in ref.folders if f.library}
    return {}


def allow_patterns(ref: ModelRef, safetensors: bool | dict = True) -> list[str]:
    """Glob patterns (huggingface_hub's fnmatch semantics) of every file the loaders read.

    safetensors: False (or a dict folder -> False) selects `.bin` weights for folders without
    safetensors. Root-level kinds are also given ignore pattern "*/*" (see `ignore_patterns`)."""
    def weights(folder: str, lib: str) -> tuple[str, ...]:
        st = safetensors.get(folder, True) if isinstance(safetensors, dict) else safetensors
        return WEIGHTS[lib][0 if st else 1]

    if ref.kind == "file":
        return [ref.file]
    if ref.kind == "transformers":
        return list(_TRANSFORMERS_SMALL) + list(weights("", "transformers"))
    if ref.kind == "diffusers-model":
        return ["config.json"] + list(weights("", "diffusers"))
    if ref.kind == "pipeline":
        out = ["model_index.json"]
        for f in ref.folders:
            out += [f"{f.path}/{p}" for p in f.files]
            if f.library:
                out += [f"{f.path}/{p}" for p in weights(f.path, f.library)]
        return out
    raise ModelUnavailableError(f"no hub files for model kind {ref.kind!r}")


def ignore_patterns(ref: ModelRef) -> list[str] | None:
    # transformers and diffusers models read only the repository root (`*` matches "/" too).
    return ["*/*"] if ref.kind in ("transformers", "diffusers-model") else None


def select_files(ref: ModelRef, repo_files) -> list[str]:
    """The files of a repository listing that `download` fetches (the loaders' files)."""
    from huggingface_hub.utils import filter_repo_objects

    files = list(repo_files)
    # A folder without safetensors weights falls back to .bin, as the loaders do.
    has_st = {}
    for folder, lib in _weight_folders(ref).items():
        pats = [f"{folder}/{p}" if folder else p for p in WEIGHTS[lib][0]]
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
    for single, _, index in WEIGHTS[lib]:
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
    if is_local_path(ref.repo_id):
        root = Path(ref.repo_id).expanduser()

        def get(name):
            return str(root / name) if (root / name).is_file() else None
        if ref.kind == "file" and root.is_file():
            return []
    else:
        def get(name):
            return _hub_cached(ref.repo_id, name, ref.revision)
    if ref.kind == "file":
        return [] if get(ref.file) else [ref.file]
    required = list(ref.required) if ref.kind == "pipeline" else ["config.json", *ref.needs]
    missing = [f for f in required
               if not any(all(get(part) for part in alt.split("+")) for alt in f.split("|"))]
    for folder, lib in _weight_folders(ref).items():
        if not _weights_cached(get, folder, lib):
            missing.append(f"{folder + '/' if folder else ''}{WEIGHTS[lib][0][0]} (weights)")
    return missing


def required_count(ref: ModelRef) -> int:
    """How many entries `missing_files` lists when nothing at all is available."""
    if ref.kind == "compressai":
        return len(compressai_paths(ref))
    if ref.kind == "file":
        return 1
    small = len(ref.required) if ref.kind == "pipeline" else 1 + len(ref.needs)
    return small + len(_weight_folders(ref))


def is_cached(ref: ModelRef) -> bool:
    """Whether every file the loaders read is available without the network (cache or local path)."""
    return not missing_files(ref)


def is_local_path(repo_id: str) -> bool:
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
    import socket

    import torch.hub
    from compressai.zoo.image import model_urls

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


def _reason(exc: BaseException) -> str:
    """One line of a hub error (they span several lines and can embed whole responses)."""
    # snapshot_download wraps the real cause as "Got: ConnectError: ..."
    return one_line(exc, limit=200).replace(": Got: ", ": ", 1)


@lru_cache(maxsize=64)
def repo_listing(repo_id: str, revision: str | None) -> tuple[tuple[str, int | None], ...]:
    """(path, size in bytes) of every file of a hub repository (one API call)."""
    from huggingface_hub import HfApi

    with quiet_hub():
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    return tuple((s.rfilename, s.size) for s in (info.siblings or []))


def download_size(ref: ModelRef) -> int | None:
    """Bytes `download` fetches for `ref` (all its files, cached or not); None when unknown."""
    if ref.kind == "compressai" or is_local_path(ref.repo_id) or hub_offline():
        return None
    try:
        listing = dict(repo_listing(ref.repo_id, ref.revision))
    except Exception:  # noqa: BLE001 - unreachable hub, unknown repo: size unknown
        return None
    files = [ref.file] if ref.kind == "file" else select_files(ref, listing)
    sizes = [size for f in files if (size := listing.get(f)) is not None]
    return sum(sizes) if len(sizes) == len(files) else None


def download(ref: ModelRef) -> str:
    """Fetch exactly the files the loaders read into the local cache; returns the local path."""
    if ref.kind == "compressai":
        try:
            return _compressai_download(ref)
        except Exception as exc:  # noqa: BLE001 - network, hash mismatch, disk: one clear line
            raise ModelUnavailableError(f"cannot download {ref.label}: {_reason(exc)}") from None
    if is_local_path(ref.repo_id):
        return ref.repo_id
    if hub_offline():
        raise ModelUnavailableError(f"cannot download {ref.label}: the hub is offline (HF_HUB_OFFLINE is set)")
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        with quiet_hub():
            if ref.kind == "file":
                return hf_hub_download(ref.repo_id, ref.file, revision=ref.revision)
            files = select_files(ref, dict(repo_listing(ref.repo_id, ref.revision)))
            if not files:
                raise ModelUnavailableError(f"{ref.repo_id} has none of the files a {ref.kind} loader reads")
            return snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=files)
    except ModelUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: one clear line
        raise ModelUnavailableError(f"cannot download {ref.repo_id}: {_reason(exc)}") from None


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
# Loading: the local cache first (no network request at all when it is complete), then the hub

def unavailable(what: str, profile: str | None, reason: str = "") -> ModelUnavailableError:
    which = profile or "PROFILE"  # the caller did not say which profile it runs
    extra = f" ({reason})" if reason else ""
    return ModelUnavailableError(
        f"{what} is not available locally and could not be fetched{extra}; "
        f"run `sedic models download {which}` while online, or point the profile at a local copy")


def _not_here() -> tuple[type[BaseException], ...]:
    """What the loaders raise for "not in the cache / not on the hub / hub unreachable": OSError
    (transformers, diffusers, most hub errors), ValueError (some unreachable-hub cases, malformed
    ids) and huggingface_hub's EntryNotFoundError (a plain Exception)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    with contextlib.suppress(ImportError):
        from huggingface_hub.errors import EntryNotFoundError

        errors.append(EntryNotFoundError)
    return tuple(errors)


def local_first(load, repo_id: str, *, what: str | None = None, profile: str | None = None, **kwargs):
    """`load(repo_id, local_files_only=True, **kwargs)`, else (hub online) `load(repo_id, **kwargs)`.

    `load` is any huggingface loader taking `local_files_only`: `X.from_pretrained`,
    `X.load_config`, `hf_hub_download`. Every "not here" becomes one ModelUnavailableError
    line naming the model (`what`, default "model REPO") and the download command."""
    what = what or f"model {repo_id}"
    not_here = _not_here()
    with quiet_hub():
        try:
            return load(repo_id, local_files_only=True, **kwargs)
        except not_here as exc:
            log.debug("%s is not complete in the local cache (%s); trying the hub", repo_id, exc)
        except ImportError as exc:
            raise ModelUnavailableError(f"{what} needs a missing package: {exc}") from None
        if hub_offline():
            raise unavailable(what, profile, "the hub is offline (HF_HUB_OFFLINE is set)")
        try:
            return load(repo_id, **kwargs)
        except not_here as exc:
            log.debug("loading %s failed: %s", repo_id, exc)
            raise unavailable(what, profile, _reason(exc)) from None
        except ImportError as exc:
            raise ModelUnavailableError(f"{what} needs a missing package: {exc}") from None


def load_pretrained(loader, repo_id: str, revision: str | None, profile: str | None = None, *,
                    what: str | None = None, **kwargs):
    """`loader.from_pretrained(repo_id, revision=...)` through `local_first`."""
    return local_first(loader.from_pretrained, repo_id, what=what, profile=profile, revision=revision, **kwargs)


def hub_file(repo_id: str, filename: str, revision: str | None, *, what: str | None = None,
             profile: str | None = None) -> str:
    """Local path of one file of a hub repository, through `local_first`."""
    from huggingface_hub import hf_hub_download

    return local_first(hf_hub_download, repo_id, what=what or f"{repo_id}/{filename}", profile=profile,
                       filename=filename, revision=revision)


# Loaded models, shared by every caller in the process. The key is what determines the loaded
# object (loader, repository, revision, device and the loader's arguments such as the dtype),
# never who asks: profiles with equal model settings share one copy. A few entries: the analysis
# holds six (VLM, detector, segmenter and their processors).
MAX_LOADED = 8
_LOADED: OrderedDict = OrderedDict()


def load_shared(loader, repo_id: str, revision: str | None, profile: str | None = None, *,
                device: str | None = None, what: str | None = None, **kwargs):
    """`load_pretrained` once per process per key; a model (`device` given) is moved there in eval mode."""
    key = (loader, repo_id, revision, device, tuple(sorted(kwargs.items())))
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    loaded = load_pretrained(loader, repo_id, revision, profile, what=what, **kwargs)
    if device is not None:
        loaded = loaded.to(device).eval()
    _LOADED[key] = loaded
    while len(_LOADED) > MAX_LOADED:
        _LOADED.popitem(last=False)
    return loaded


def release_shared() -> None:
    """Drop every model `load_shared` holds (e.g. before loading the decoder on a small GPU)."""
    _LOADED.clear()


def load_compressai(model: str, metric: str, quality: int, profile: str | None = None):
    """A CompressAI zoo model with its pretrained weights: from torch.hub's cache, else (hub
    online) downloaded there and verified first; errors as one ModelUnavailableError line."""
    from compressai.zoo import image as zoo

    ref = compressai_ref(model, metric, (quality,))
    what = f"CompressAI {model} ({metric}) quality {quality}"
    if not compressai_paths(ref):
        raise ModelUnavailableError(f"CompressAI's zoo has no weights for {model} ({metric}) quality {quality}")
    if missing_files(ref):
        if hub_offline():
            raise unavailable(what, profile, "the hub is offline (HF_HUB_OFFLINE is set)")
        download(ref)
    try:  # reads the cached file (torch.hub looks there first)
        return zoo._load_model(model, metric, quality, pretrained=True, progress=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file in the cache
        raise ModelUnavailableError(f"{what} cannot be loaded from torch.hub's cache: {one_line(exc)}") from None
