"""A printer of the decoder's progress for the command line.

On a terminal, each stage gets one line that is rewritten after every denoising step with the
steps done, seconds per step and the time left in the stage. Elsewhere (a log file, a pipe), each
stage prints a single line when it ends, with its steps and time, so logs stay short, and a step
line when nothing was printed for HEARTBEAT_S seconds (a slow step on a CPU is minutes).

Use its two methods as restore()'s callbacks: progress=printer.stage, on_step=printer.step, then
printer.finish().
"""

from __future__ import annotations

import os
import sys
import time

HEARTBEAT_S = 30.0


class DecodeProgress:
    def __init__(self, stream=None, tty: bool | None = None, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.clock = clock
        self._stage: tuple[int, int, str, float] | None = None  # (index, total, label, started)
        self._done = 0
        self._steps = 0
        # off a terminal: when the last line was printed (the command printed one as it started)
        self._written = None if self.tty else clock()

    # restore(progress=...)
    def stage(self, index: int, total: int, label: str) -> None:
        self._end_stage()
        self._stage = (index, total, label, self.clock())
        self._done = self._steps = 0
        if self.tty:
            self._write(f"\r{self._fit(self._head(), '')}\x1b[K")

    # restore(on_step=...)
    def step(self, index: int, total: int, step: int, steps: int) -> None:
        if self._stage is None or self._stage[0] != index:
            self.stage(index, total, "")
        self._done, self._steps = step, steps
        if self.tty:
            per_step = self._elapsed() / step
            left = per_step * (steps - step)
            tail = f"  {step}/{steps} steps, {per_step:.2f} s/step, ETA {_duration(left)}"
            self._write(f"\r{self._fit(self._head(), tail)}\x1b[K")
        elif self.clock() - self._written >= HEARTBEAT_S:
            self._write(f"{self._head()}  {step}/{steps} steps, {_duration(self._elapsed())} so far\n")

    def finish(self) -> None:
        self._end_stage()

    # --------------------------------------------------------------------------------------

    def _head(self) -> str:
        assert self._stage is not None  # called while a stage runs
        index, total, label, _ = self._stage
        return f"stage {index}/{total}" + (f": {label}" if label else "")

    def _fit(self, head: str, tail: str) -> str:
        """head + tail within one terminal row: a line that wraps cannot be rewritten in place
        (the carriage return only goes back to the start of its last row)."""
        columns = _columns(self.stream)
        room = columns - 1 - len(tail)  # the last column would wrap on some terminals
        if len(head) > room:
            head = head[:max(room - 3, 0)] + "..."
        return (head + tail)[:max(columns - 1, 1)]

    def _elapsed(self) -> float:
        assert self._stage is not None  # called while a stage runs
        return max(self.clock() - self._stage[3], 0.0)

    def _end_stage(self) -> None:
        if self._stage is None:
            return
        elapsed = self._elapsed()
        summary = f"{self._head()}  {self._done} step{'' if self._done == 1 else 's'} in {_duration(elapsed)}"
        if self._done:
            summary += f" ({elapsed / self._done:.2f} s/step)"
        self._write(("\r" + summary + "\x1b[K\n") if self.tty else summary + "\n")
        self._stage = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        if not self.tty:
            self._written = self.clock()


def _columns(stream) -> int:
    """$COLUMNS, else the stream's terminal width, else 80 (a pseudo-terminal may report 0)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
    return columns if columns > 0 else 80


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s"
