"""sedic evaluate: dataset evaluation against baselines (protocol in docs/evaluation.md)."""

from __future__ import annotations

import shlex
import sys

from ..errors import InputError


def register(sub) -> None:
    from ..evaluation import DEFAULT_BASELINES, DEFAULT_BPPS, DEFAULT_CLIP

    p = sub.add_parser("evaluate", help="compress a folder of images at several rates with sedic and "
                       "baselines; write a CSV, summary JSON, markdown table and plots",
                       description="Every image is encoded and decoded at every rate by every method; "
                       "results already in --out are reused, so an interrupted run resumes. An image that fails is "
                       "recorded as failed rows and the others still run; the exit code is 2 when any image or "
                       "method failed (a rate a method cannot meet is a result, not a failure).")
    p.add_argument("dataset", metavar="DATASET_DIR", help="folder of PNG/JPEG/WebP images (sorted by name)")
    p.add_argument("--out", required=True, metavar="RESULTS_DIR", help="results folder (created; reused)")
    p.add_argument("--bpp", type=float, nargs="+", default=list(DEFAULT_BPPS),
                   help=f"target rates, whole file (default {' '.join(map(str, DEFAULT_BPPS))})")
    p.add_argument("--profile", default=None, help="sedic profile (default: sedic; offline: test)")
    p.add_argument("--metrics", default="all", help="comma list of psnr, ms-ssim, lpips-alex, lpips-vgg, "
                   "dists, fid, kid, clip-score, clip-i2i (lpips, clip, all; default all: those whose "
                   "weights are missing are skipped with the reason)")
    p.add_argument("--methods", default="sedic,sedic-preview",
                   help="sedic methods: sedic, sedic-preview (stage 0 of the same file) or none "
                   "(default both)")
    p.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                   help="comma list of jpeg, webp, avif, jxl, heic, compressai-<architecture>, or none "
                   f"(default {','.join(DEFAULT_BASELINES)}; unavailable ones are skipped with the reason)")
    p.add_argument("--semantics-dir", default=None, metavar="DIR",
                   help="cached semantics: DIR/<image stem>.json is used instead of running the analysis")
    p.add_argument("--no-analyze", action="store_true",
                   help="images without cached semantics are coded as the reference alone")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--device", default=None, help="device for sedic and learned metrics (default: cuda if "
                   "available, else cpu)")
    p.add_argument("--stages", type=int, default=None, metavar="N",
                   help="restoration stages for the `sedic` method (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sedic decoder seed (default 0)")
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder with metric weights under their upstream file names (alexnet-owt-7be5be79.pth, "
                   "vgg16-397923af.pth, weights-inception-2015-12-05-6726825d.pth, lpips-v0.1-alex.pth, "
                   "lpips-v0.1-vgg.pth, dists-weights.pt); the torch hub cache is searched too")
    p.add_argument("--clip-model", default=DEFAULT_CLIP,
                   help=f"CLIP model id in the Hugging Face cache or a local folder (default {DEFAULT_CLIP})")
    p.add_argument("--compressai-checkpoint", action="append", default=[], metavar="ARCH:QUALITY=PATH",
                   help="a CompressAI checkpoint (repeatable), e.g. cheng2020-attn:1=/path/ckpt.pth.tar")
    p.add_argument("--fid-patch", type=int, default=256, help="FID/KID patch size in pixels (default 256)")
    p.add_argument("--published", choices=("auto", "always", "never"), default="auto",
                   help="draw the peers' published Kodak points on the plots (auto: when the dataset "
                   "folder is named kodak)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="one image per task on Ray (the executor of `sedic batch`): a local Ray when no "
                   "ADDRESS, else that cluster (--ray=ADDRESS); RESULTS_DIR must be on storage every node sees")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="one image per task on N local worker processes (default: all in this process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)


def parse_checkpoints(items: list[str]) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for item in items:
        try:
            key, path = item.split("=", 1)
            arch, quality = key.rsplit(":", 1)
            out.setdefault(arch, {})[int(quality)] = path
        except ValueError:
            raise InputError(f"--compressai-checkpoint {item!r}: expected ARCH:QUALITY=PATH") from None
    return out


def _evaluate(args) -> int:
    from ..evaluation import evaluate
    from ..evaluation.runner import is_failure

    if args.fid_patch < 32:
        raise InputError("--fid-patch must be at least 32")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    executor = None
    if args.ray is not None or args.workers is not None:
        from functools import partial

        from ..batch import make_executor

        executor = partial(make_executor, args.ray, workers=args.workers)
    summary = evaluate(args.dataset, args.out, bpps=args.bpp, profile=args.profile, metrics=args.metrics,
                    methods=args.methods, baselines=args.baselines, semantics_dir=args.semantics_dir,
                    analyze=not args.no_analyze, limit=args.limit, device=args.device, stages=args.stages,
                    weights_dir=args.weights_dir, clip_model=args.clip_model,
                    compressai_checkpoints=parse_checkpoints(args.compressai_checkpoint), fid_patch=args.fid_patch,
                    seed=args.seed, progress=not args.no_progress, published=args.published, executor=executor,
                    command="sedic " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["evaluate"]
                    else None)
    # as `sedic batch`: the reports are written, each failure was one line on stderr, exit code 2
    return 2 if any(is_failure(f) for f in summary["failures"]) else 0
