"""Batch progress: tqdm's bar on a terminal, plain lines in a pipe or a log file.

tqdm rewrites one line with carriage returns; in a pipe every refresh stays in the log and its
close() prints the final state a second time. Off a terminal the batch therefore prints whole
lines instead: one every `every` seconds at most, and the last one when the count is complete.
"""

from __future__ import annotations

import sys
import time


class NoBar:
    """No display (--no-progress, nothing to do); messages are still printed."""

    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def set_description(self, text, refresh=True):
        pass

    def write(self, text, file=None):
        print(text, file=file or sys.stderr, flush=True)

    def close(self):
        pass


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LineProgress(NoBar):
    """Whole lines with count, rate and ETA: `batch compress: 3/10 (30%) 0.50 img/s, ETA 0:14`."""

    def __init__(self, *, total: int, desc: str, unit: str = "img", file=None, every: float = 10.0,
                 clock=time.monotonic):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.file = file or sys.stderr
        self._clock = clock
        self.start = self._last = clock()
        self.count = 0
        self.postfix: dict = {}
        self.current = ""  # set_description: what is being worked on

    def update(self, n=1):
        self.count += n
        now = self._clock()
        if self.count >= self.total or now - self._last >= self.every:
            self._last = now
            print(self.line(now), file=self.file, flush=True)

    def set_postfix(self, refresh=True, **kw):
        self.postfix.update(kw)

    def set_description(self, text, refresh=True):
        self.current = text

    def write(self, text, file=None):
        print(text, file=file or self.file, flush=True)

    def line(self, now: float) -> str:
        elapsed = now - self.start
        text = f"{self.desc}: {self.count}/{self.total}"
        if self.total:
            text += f" ({100 * self.count // self.total}%)"
        if self.count and elapsed > 0:
            rate = self.count / elapsed
            text += f" {rate:.2f} {self.unit}/s" if rate >= 1 else f" {1 / rate:.1f} s/{self.unit}"
            if self.count < self.total:
                text += f", ETA {_clock((self.total - self.count) / rate)}"
        text += f", {_clock(elapsed)} elapsed"
        text += "".join(f", {k}={v}" for k, v in self.postfix.items())
        return f"{text} ({self.current})" if self.current and self.count < self.total else text


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(*, total: int, desc: str, unit: str = "img", file=None, disable: bool = False):
    """tqdm on a terminal (when installed), whole lines elsewhere, nothing when disabled."""
    file = file or sys.stderr
    if disable:
        return NoBar()
    if _is_terminal(file):
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True)
    return LineProgress(total=total, desc=desc, unit=unit, file=file)
