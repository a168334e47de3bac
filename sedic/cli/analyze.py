"""`sedic analyze` (image -> cached semantics JSON) and `sedic models list|download`."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("analyze", help="describe and segment an image; write the semantics JSON "
                       "(masks as PNGs beside it) for compress --semantics")
    p.add_argument("image", help="input image (PNG, JPEG, WebP, AVIF or HEIC)")
    p.add_argument("-o", "--output", required=True, help="output semantics JSON")
    p.add_argument("--profile", default=None, help="models and settings (default: sedic; offline: test)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--device", default=None, help="device for the models (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="model weights' dtype (default: the profile's, auto = bf16 on GPU, fp32 on CPU)")
    p.add_argument("--backend", default=None, choices=["local", "openai", "tiny"],
                   help="description backend: local transformers model, OpenAI-compatible endpoint, "
                   "or tiny random models (default: the profile's)")
    p.add_argument("--objects", type=int, default=None, metavar="K",
                   help="number of objects to describe and segment (default: the profile's, 3)")
    p.add_argument("--description-tokens", type=int, default=None, metavar="N",
                   help="CLIP-token budget of each object prompt 'name, description' (<= 75)")
    p.add_argument("--overall-tokens", type=int, default=None, metavar="N",
                   help="CLIP-token budget of the overall description (<= 75)")
    p.add_argument("--vlm-model", default=None, help="local vision-language model id or path")
    p.add_argument("--openai-base-url", default=None,
                   help="base URL of the OpenAI-compatible endpoint (e.g. http://localhost:8000/v1)")
    p.add_argument("--openai-model", default=None, help="model name at the endpoint")
    p.add_argument("--timeout", type=float, default=None, help="endpoint time-out in seconds")
    p.add_argument("--static-cache", action="store_true",
                   help="local VLM: static KV cache with compiled decoding (GPU; faster after warm-up)")
    p.set_defaults(func=_analyze)

    m = sub.add_parser("models", help="list or pre-fetch the pretrained models of a profile")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    p = msub.add_parser("list", help="show each model of a profile and whether it is available locally")
    p.add_argument("profile", nargs="?", default=None, help="profile (default: all profiles)")
    p.set_defaults(func=_models_list)
    p = msub.add_parser("download", help="fetch a profile's models into the Hugging Face cache")
    p.add_argument("profile", help="profile name")
    p.set_defaults(func=_models_download)


def settings_from_args(args, profile):
    """The profile's analysis settings with the command-line overrides applied."""
    changes = {}
    for attr, field in (("backend", "backend"), ("objects", "num_objects"), ("dtype", "dtype"),
                        ("description_tokens", "description_tokens"), ("overall_tokens", "overall_tokens"),
                        ("vlm_model", "vlm_model"), ("openai_base_url", "openai_base_url"),
                        ("openai_model", "openai_model"), ("timeout", "timeout_s")):
        value = getattr(args, attr, None)
        if value is not None:
            changes[field] = value
    if getattr(args, "static_cache", False):
        changes.update(static_cache=True, compile=True)
    return replace(profile.analysis, **changes)


def _analyze(args) -> int:
    from ..analysis import analyze
    from ..config import get_profile
    from ..devices import resolve_device
    from ..imageio import load_image
    from ..semantics import check_outputs

    profile = get_profile(args.profile)
    settings = settings_from_args(args, profile)
    if args.device is not None:
        resolve_device(args.device)
    out = Path(args.output)
    # the JSON and every mask it may get: fail before minutes of model work, not after
    check_outputs(out, settings.num_objects, args.force, inputs=[args.image])
    image = load_image(args.image)
    semantics = analyze(image, settings, device=args.device, profile=args.profile or profile.name)
    semantics.save(out, force=args.force, inputs=[args.image])
    print(f"{out}: {len(semantics.objects)} object(s): "
          + (", ".join(repr(o.name) for o in semantics.objects) or "none"), file=sys.stderr)
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _models_list(args) -> int:
    from ..config import PROFILES, get_profile
    from ..models import download_size, hub_offline, missing_files, profile_models, required_count

    profiles = [get_profile(args.profile)] if args.profile else list(PROFILES.values())
    if hub_offline():
        print("(offline: download sizes are unknown; `available` means every file the loaders read is cached)")
    for profile in profiles:
        refs = profile_models(profile)
        print(f"profile {profile.name}:")
        if not refs:
            print("  (no pretrained models: everything is built in-process)")
        for ref in refs:
            rev = f" @ {ref.revision}" if ref.revision else ""
            missing = missing_files(ref)
            state = "available" if not missing else "missing"
            size = "" if hub_offline() else f"  {_size(download_size(ref))}"
            print(f"  {state:9}  {ref.label}{rev}{size}  ({ref.role})")
            if 0 < len(missing) < required_count(ref):  # partly there: say what is missing
                print(f"             not cached: {', '.join(missing)}")
        if profile.analysis.backend == "openai":
            print(f"  endpoint   {profile.analysis.openai_model} at {profile.analysis.openai_base_url}")
    return 0


def _models_download(args) -> int:
    from ..config import get_profile
    from ..errors import ModelUnavailableError
    from ..models import download, download_size, hub_offline, is_cached, profile_models

    profile = get_profile(args.profile)
    refs = profile_models(profile)
    if not refs:
        print(f"profile {profile.name} uses no pretrained models", file=sys.stderr)
    todo = [ref for ref in refs if not is_cached(ref)]
    if todo and hub_offline():  # one line, before anything else is printed
        raise ModelUnavailableError(
            f"cannot download {len(todo)} model(s) of profile {args.profile} while the hub is offline "
            f"(HF_HUB_OFFLINE is set): {', '.join(r.label for r in todo)}")
    for ref in refs:
        if ref not in todo:
            print(f"{ref.label}: already available", file=sys.stderr)
    for i, ref in enumerate(todo):
        print(f"{ref.label}: downloading {_size(download_size(ref))} ({ref.role})", file=sys.stderr)
        try:
            path = download(ref)
        except ModelUnavailableError as exc:
            failed = todo[i:]
            raise ModelUnavailableError(
                f"{exc}; not downloaded: {', '.join(r.label for r in failed)} "
                f"({len(todo) - len(failed)} of {len(todo)} done)") from None
        print(f"{ref.label}: {path}", file=sys.stderr)
    return 0
