"""The batch manifest: one JSON line per image processed, appended atomically.

Each line is written with a single os.write on a descriptor opened with O_APPEND, so a line is
whole or absent even when the driver is killed, and concurrent writers never interleave lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FIELDS = ("image", "status", "output", "bytes", "bpp", "seconds", "attempts", "error", "warnings", "finished")


class Manifest:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        line = (json.dumps({k: record.get(k) for k in FIELDS}, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk mid-line: say so rather than leave a torn line unnoticed
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        finally:
            os.close(fd)

    def records(self) -> list[dict]:
        """Every whole line (a torn last line, from a crash mid-write on a full disk, is skipped)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
