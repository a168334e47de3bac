"""JSON from users (semantics files, profile files, uploads): parsed only when it nests shallowly.

Python's json recurses once per level, so 200000 nested `[` is a RecursionError, not a message;
the depth is measured first, in C-speed passes (strings removed, brackets counted with numpy).
"""

from __future__ import annotations

import json
import re

import numpy as np

from .errors import InputError

MAX_DEPTH = 16  # the deepest our files go is 3 (semantics: {"objects": [{...}]})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def loads(text: str, what: str) -> object:
    """json.loads with the nesting checked first; ValueError (not valid JSON) passes to the caller."""
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise InputError(f"{what} nests {depth} levels deep; at most {MAX_DEPTH} are allowed")
    return json.loads(text)
