"""sedic batch compress|decompress: a folder at a time, locally or on Ray (docs/scale-out.md)."""

from __future__ import annotations

from .. import schedule


def _executor_options(p) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: a local Ray when no ADDRESS, else that cluster (e.g. auto, "
                   "ray://head:10001); needs the `ray` extra. Put it after IN_DIR or write --ray=ADDRESS")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local CPU worker processes (default: one per core / --threads); model stages use "
                   "one worker per GPU when there are GPUs")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads per worker (default 1; the same value gives the same CPU results)")
    p.add_argument("--attempts", type=int, default=3, metavar="N",
                   help="tries per image when a worker fails for a reason other than the input (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("batch", help="compress or decompress a folder, resumably, locally or on Ray")
    batch = p.add_subparsers(dest="batch_command", metavar="{compress,decompress}")
    batch.required = True

    c = batch.add_parser("compress", help="every PNG/JPEG/WebP of IN_DIR to OUT_DIR/<name>.sedic",
                         description="Finished outputs in OUT_DIR are kept and skipped; OUT_DIR/manifest.jsonl "
                         "gets one line per image; the exit code is 2 when any image failed.")
    c.add_argument("in_dir", metavar="IN_DIR")
    c.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (created; reused)")
    c.add_argument("--bpp", type=float, default=0.03, help="target rate of each whole file (default 0.03)")
    group = c.add_mutually_exclusive_group()
    group.add_argument("--semantics-dir", metavar="D", help="use D/<image stem>.json (from `sedic analyze`)")
    group.add_argument("--analyze", action="store_true", help="run the profile's analysis models on each image "
                       "(without this or --semantics-dir the reference alone is coded)")
    c.add_argument("--profile", default=None, help="sedic (default), test, another profile or a .json file")
    c.add_argument("--seed", type=int, default=0, help="decoder seed stored in each file (default 0)")
    c.add_argument("--best-effort", action="store_true", help="when --bpp cannot be met, write the smallest "
                   "file instead of failing that image (as `sedic compress --best-effort`; the warning goes "
                   "to the manifest)")
    schedule.add_arguments(c, "stored in each file (default: the profile's)")
    _executor_options(c)
    c.set_defaults(func=_compress)

    d = batch.add_parser("decompress", help="every .sedic of IN_DIR to OUT_DIR/<name>.png",
                         description="Finished outputs in OUT_DIR are kept and skipped; OUT_DIR/manifest.jsonl "
                         "gets one line per file; the exit code is 2 when any file failed.")
    d.add_argument("in_dir", metavar="IN_DIR")
    d.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (created; reused)")
    d.add_argument("--stages", type=int, default=None, help="0 = the previews, default all stages")
    d.add_argument("--profile", default=None, help="override the profile the files name")
    _executor_options(d)
    d.set_defaults(func=_decompress)


def _executor(args):
    """A factory: the batch calls it after checking its inputs and options."""
    from functools import partial

    from ..batch import make_executor
    from ..errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    for name in ("threads", "attempts"):  # here, before the output folder is claimed
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    return partial(make_executor, args.ray, workers=args.workers, threads=args.threads, max_attempts=args.attempts)


def _compress(args) -> int:
    from ..batch import compress_dir

    summary = compress_dir(args.in_dir, args.output, bpp=args.bpp, semantics_dir=args.semantics_dir,
                           analyze=args.analyze, profile=args.profile, seed=args.seed,
                           schedule=schedule.from_arguments(args),
                           best_effort=args.best_effort, executor=_executor(args), progress=not args.no_progress)
    return summary.exit_code


def _decompress(args) -> int:
    from ..batch import decompress_dir

    summary = decompress_dir(args.in_dir, args.output, stages=args.stages, profile=args.profile,
                             executor=_executor(args), progress=not args.no_progress)
    return summary.exit_code
