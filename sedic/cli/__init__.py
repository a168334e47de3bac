"""The `sedic` command line. Every user-caused error is one line on stderr and exit code 2; an
unexpected one (a bug) is one line and exit code 1, its traceback with SEDIC_TRACEBACK=1."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..errors import SedicError

# Each module exposes register(subparsers) and sets func=callable(args) -> int on its parsers.
COMMAND_MODULES = ("sedic.cli.codec_commands", "sedic.cli.analyze", "sedic.cli.evaluate", "sedic.cli.serve",
                   "sedic.cli.batch")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line too (argparse prints the whole usage first), exit code 2.

    Sub-command parsers inherit the class, so `sedic compress --bpp -inf` is one line as well."""

    def error(self, message):
        where = "" if self.prog == "sedic" else f"{self.prog}: "
        self.exit(2, f"sedic: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(prog="sedic", description="Extremely low-bitrate semantic image codec (SEDIC).")
    parser.add_argument("--version", action="version", version=f"sedic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"sedic: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else 2
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    # libraries' deprecation notices (torch.jit in compressai...) are for developers, not users
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader left early (`sedic inspect f.sedic | head -1`): stop quietly, as cat does.
        _discard_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe
    except SedicError as exc:
        print(f"sedic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sedic: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("sedic: error: out of memory (try a smaller image, --threads 1, or a machine with more memory)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours or of a library: one line, the traceback on request
        if os.environ.get("SEDIC_TRACEBACK"):
            raise
        from ..errors import one_line

        print(f"sedic: internal error: {one_line(exc, 300)} (a bug: please report it "
              f"with the command; SEDIC_TRACEBACK=1 prints the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def run() -> None:
    sys.exit(main())
