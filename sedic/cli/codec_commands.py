"""compress, decompress and inspect."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .. import schedule
from ..bitstream import read_file
from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("compress", help="compress an image into a .sedic file")
    p.add_argument("image", help="input image (PNG, JPEG, WebP, AVIF or HEIC)")
    p.add_argument("-o", "--output", required=True, help="output .sedic file")
    p.add_argument("--bpp", type=float, default=0.03, help="target rate of the whole file in bits per pixel "
                   "(default 0.03); the file never exceeds it")
    p.add_argument("--reference-bpp", type=float, default=None, help="cap the reference stream alone (bpp)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--semantics", help="semantics JSON (overall, objects with name, description, mask PNG)")
    group.add_argument("--no-semantics", action="store_true", help="code the reference image alone")
    p.add_argument("--save-semantics", help="write the semantics computed by the analysis to this JSON")
    p.add_argument("--profile", default=None, help="models and settings: sedic (default), sedic-fast (one-pass "
                   "decoder), authors, sd15-tile, test (offline, tiny random models) or a .json profile file "
                   "(docs/profiles.md)")
    p.add_argument("--seed", type=int, default=0, help="decoder seed stored in the file (default 0)")
    schedule.add_arguments(p, "stored in the file (default: the profile's)")
    p.add_argument("--device", default=None, help="device for the analysis models (e.g. cuda, cpu)")
    p.add_argument("--best-effort", action="store_true", help="when the target cannot be met, write the "
                   "smallest file instead of failing")
    p.add_argument("--effort", type=int, default=None, help="AVIF reference encoder effort: 0 the rate search "
                   "alone, 1 speed-2 re-encodes filling the budget, 2 also neighbouring sizes and pre-filtered "
                   "downscales (default: the profile's, 2; about 2-3x the time of 1 on Kodak-size images)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_compress)

    p = sub.add_parser("decompress", help="decode a .sedic file to an image")
    p.add_argument("input", help="input .sedic file")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .webp lossless)")
    p.add_argument("--profile", default=None, help="override the profile the file names (a name or a .json "
                   "profile file)")
    p.add_argument("--stages", type=int, default=None, help="decode progressively: 0 = the preview, "
                   "k = objects 1..k, K+1 = everything (default)")
    p.add_argument("--device", default=None, help="device for the decoder (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (default 1, as in `sedic batch decompress`: CPU pixels depend on it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_decompress)

    p = sub.add_parser("inspect", help="show sizes, bits per stream and texts of a .sedic file")
    p.add_argument("input", help="input .sedic file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_inspect)


def _compress(args) -> int:
    import sedic

    from ..codec import settings_section
    from ..config import check_effort, get_profile
    from ..devices import resolve_device
    from ..imageio import atomic_write_bytes, check_writable, load_image
    from ..semantics import check_outputs, input_files

    # Everything that can be wrong with the options fails here, before minutes of analysis.
    analysis = args.semantics is None and not args.no_semantics
    if args.save_semantics and not analysis:
        raise InputError("--save-semantics needs the analysis (not --semantics or --no-semantics)")
    inputs = [args.image] + (input_files(args.semantics) if args.semantics else [])  # masks are inputs too
    check_writable(Path(args.output), args.force, inputs)
    if Path(args.output).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        raise InputError(f"{args.output}: compress writes a .sedic file, not an image; name the output *.sedic "
                         f"(decompress writes images)")
    profile = get_profile(args.profile)
    if args.effort is not None:
        check_effort(args.effort)
    settings_section(profile, bpp=args.bpp, reference_bpp=args.reference_bpp, seed=args.seed,
                     overrides=schedule.from_arguments(args))
    if args.device is not None:
        resolve_device(args.device)
    if args.save_semantics:
        check_outputs(args.save_semantics, profile.analysis.num_objects, args.force, inputs + [args.output])
    say = StatusLines("compress")
    try:
        image = load_image(args.image)
        say(f"read {args.image}: {image.shape[1]}x{image.shape[0]}")
        semantics = args.semantics
        if analysis:
            say(f"analysis with profile {profile.name} (descriptions and masks)")
            semantics = sedic.analyze(image, profile=args.profile, device=args.device)
            say(f"analysis done: {len(semantics.objects)} objects")
            if args.save_semantics:
                semantics.save(args.save_semantics, force=args.force, inputs=inputs + [args.output])
        data = sedic.compress(image, bpp=args.bpp, reference_bpp=args.reference_bpp, semantics=semantics,
                              analyze=False, profile=args.profile, best_effort=args.best_effort, seed=args.seed,
                              schedule=schedule.from_arguments(args), effort=args.effort, progress=say)
    finally:
        say.close()
    atomic_write_bytes(args.output, data, force=args.force)
    info = sedic.inspect(data)
    s = info["streams"]
    print(f"{args.output}: {info['bytes']} bytes, {info['bpp']:.4f} bpp "
          f"(reference {s['reference']}, text {s['text']}, masks {s['masks']}, header {s['header']} bits)",
          file=sys.stderr)
    return 0


class StatusLines:
    """One line per step of long work on stderr, with the time since the command started, on a
    terminal and in a log alike. Lines said in the first GRACE_S seconds wait: printed when the
    grace ends, dropped by close() when the command ended sooner, so that a quick command (and any
    early error, which must be its one line) prints nothing more."""

    GRACE_S = 1.0

    def __init__(self, command: str, stream=None):
        import threading
        import time

        self.command, self.stream, self.clock = command, stream or sys.stderr, time.monotonic
        self.started = self.clock()
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._timer = threading.Timer(self.GRACE_S, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def __call__(self, text: str) -> None:
        line = f"{self.command}: {text} ({self.clock() - self.started:.1f} s)\n"
        with self._lock:
            self._pending.append(line)
        if self.clock() - self.started >= self.GRACE_S:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self.stream.write("".join(self._pending))
                    self.stream.flush()
                except (OSError, ValueError):  # the stream closed under the timer: nothing to tell
                    self._closed = True
            self._pending.clear()

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            self._pending.clear()


# control characters (C0, DEL, C1) and invisible format characters (bidi overrides): a file's
# texts must not change the terminal's colours or title when printed
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_CONTROL_JSON = re.compile(r"[\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")  # json escapes C0


def shown(text: str) -> str:
    """A text from a file as it may be printed: control characters written as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def _decompress(args) -> int:
    import sedic

    from ..devices import resolve_device
    from ..imageio import check_image_suffix, check_writable, save_image

    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.device is not None:
        resolve_device(args.device)
    check_image_suffix(args.output)
    check_writable(Path(args.output), args.force, [args.input])
    data = read_file(args.input)

    from ..restoration.progress import DecodeProgress

    say = StatusLines("decompress")
    info = sedic.inspect(data)
    say(f"{args.input}: {info['width']}x{info['height']}, {info['bytes']} bytes, profile {info['profile']}: "
        f"decoding the reference")

    def preview_ready(stages, image):
        if stages == 0 and args.stages != 0:
            say("preview ready; loading the decoder models, then the diffusion stages")

    # per step on a terminal (steps, s/step, ETA), one line per stage in a log
    printer = DecodeProgress(sys.stderr)
    if args.stages != 0:  # the preview needs no torch; the diffusion stages do
        _set_torch_threads(args.threads)
    try:
        def stage(*where):  # what was said before a stage comes first
            say.flush()
            printer.stage(*where)

        image = sedic.decompress(data, profile=args.profile, stages=args.stages, device=args.device,
                                 progress=stage, on_step=printer.step, on_image=preview_ready)
    finally:
        say.close()
        printer.finish()
    save_image(args.output, image, force=args.force)
    return 0


def _set_torch_threads(threads: int) -> None:
    """CPU results of the diffusion decoder change with torch's thread count (its reductions split
    differently), so the default is the batch workers' 1 and the same file decodes alike in both."""
    try:
        import torch
    except ImportError:  # without torch only the preview decodes, and it does not use threads
        return
    torch.set_num_threads(threads)


def _inspect(args) -> int:
    import sedic

    info = sedic.inspect(read_file(args.input))
    if args.json:  # json escapes C0 controls itself; C1 (\x9b is CSI) and bidi marks are escaped here
        print(_CONTROL_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(info, indent=2, ensure_ascii=False)))
        return 0
    info["profile"] = shown(str(info["profile"]))
    info["semantics"] = {"overall": shown(info["semantics"]["overall"]),
                         "objects": [{k: shown(v) for k, v in o.items()} for o in info["semantics"]["objects"]]}
    s = info["streams"]
    print(f"{args.input}: {info['width']}x{info['height']}, {info['bytes']} bytes, {info['bpp']:.5f} bpp, "
          f"profile {info['profile']}, seed {info['seed']}")
    if info["schedule"]:  # what the file changes in its profile's decoder schedule
        print("  schedule: " + ", ".join(f"{k} {v}" for k, v in info["schedule"].items()))
    ref = info["reference"]
    coded = ", ".join([f"{ref['codec']} {ref['width']}x{ref['height']}",
                       *(f"{k} {shown(str(v))}" for k, v in ref.items() if k not in ("codec", "width", "height"))])
    for name in ("reference", "text", "masks", "header"):
        print(f"  {name:<9} {s[name]:>7} bits  {s[name] / (info['width'] * info['height']):.5f} bpp"
              + (f"  ({coded})" if name == "reference" else ""))
    sem = info["semantics"]
    if sem["overall"] or sem["objects"]:
        print(f"  overall: {sem['overall']}")
        for k, obj in enumerate(sem["objects"], 1):
            print(f"  object {k}: {obj['name']}: {obj['description']}")
    return 0
