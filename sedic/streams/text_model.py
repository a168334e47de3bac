"""Probability model and range coder of the text stream (see docs/text-stream.md).

A canonical string is split into maximal runs of ASCII letters a-z ("words") and maximal runs of
anything else ("separators"). Words are coded with an adaptive cache of the words already sent in
this list, else a static English word prior (wordfreq + in-domain tuning text), else spelled
letter by letter with an order-2 letter model. Separators come from an adaptive dictionary whose
entries also say whether the string ends after them; unseen ones are spelled by code point.

Encoder and decoder run the same code (`_Coder.code`), so they cannot drift apart.
Every probability is built from integer counts passed to constriction as float64 (exact),
with `perfect=False`: the bitstream is defined by constriction 0.5's queue.RangeEncoder and its
Categorical quantisation of those counts, which involve no platform-dependent arithmetic.
"""
from __future__ import annotations

import functools
import importlib.resources
import re

import constriction
import numpy as np

from sedic.errors import BitstreamError, InputError

# The overall description plus a name and a description for each of at most 32 objects
# (sedic.semantics.MAX_OBJECTS); the count is coded with Uniform(MAX_STRINGS + 1).
MAX_STRINGS = 1 + 2 * 32
MAX_CHARS = 4096  # per string
# Decoded characters per byte of stream, at most (plus a constant): bounds the decoder's work on
# corrupt input. Real text needs ~4 chars/byte; the encoder refuses text above this (InputError).
MAX_CHARS_PER_BYTE = 64
# Characters the decoder may still produce once the range decoder reports it may be exhausted
# (valid streams end within a few words of that point; truncated ones would run on zeros).
MAX_TAIL_CHARS = 1024

_Cat = constriction.stream.model.Categorical
_TOKEN_RE = re.compile(r"[a-z]+|[^a-z]+", re.S)
_WORD_RE = re.compile(r"[a-z]+")

# String types: position 0 is the overall description, then name, description, name, ...
_OVERALL, _NAME, _DESC = 0, 1, 2
# Start-of-string choices.
_START_WORD, _START_EMPTY, _START_SEP = 0, 1, 2
# Cache: a word already sent n times in this list gets floor(2**24 * CACHE_COUNT * n / (CACHE_DAMP + pos))
# added to its static count (static counts sum to about 2**24; pos = words coded so far), i.e. a
# mixture whose cache share grows towards CACHE_COUNT / (1 + CACHE_COUNT) as text accumulates.
# Values chosen by leave-one-image-out on the tuning text (not the evaluation set).
CACHE_COUNT = 1
CACHE_DAMP = 256
# Adaptive increments (the static priors are scaled so these are comparable).
SEP_INC = 2
# Spelling of escaped separators: 0 = end, 1..95 = ASCII 32..126, 96 = any other code point.
_SEP_CHAR_COUNTS = np.ones(97, dtype=np.float64)
for _c in " ,.-;:'()/&%+\"0123456789":
    _SEP_CHAR_COUNTS[ord(_c) - 31] = 8.0
_SEP_CHAR_COUNTS[0] = 8.0
_SEP_CHAR_COUNTS[96] = 4.0
_NONASCII = 96


def _cat(counts, lazy: bool = True) -> constriction.stream.model.Categorical:
    # perfect=False fixes the quantisation rule; `lazy` only changes speed, not the bits
    # (constriction docs), so one-off models are lazy and reused ones are built eagerly.
    return _Cat(np.asarray(counts, dtype=np.float64), perfect=False, lazy=lazy)


class _Tables:
    """The shipped static tables (integers only)."""

    def __init__(self) -> None:
        path = importlib.resources.files("sedic.streams").joinpath("data/text_model_en.npz")
        with importlib.resources.as_file(path) as p, np.load(p, allow_pickle=False) as z:
            self.words = bytes(z["words"]).decode("ascii").split("\n")
            counts = z["word_counts"].astype(np.float64)
            esc = float(z["esc_count"][0])
            char_counts = z["char_counts"].astype(np.float64)
            seps = bytes(z["sep_strings"]).decode("ascii").split("\x00")
            sep_counts = z["sep_counts"].astype(np.int64)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.esc = len(self.words)
        self.word_counts = np.append(counts, esc)  # escape is the last symbol
        self.letter_models = [[_cat(char_counts[a, b], lazy=False) for b in range(27)] for a in range(27)]
        # Separator tokens: (string, ends_string); the prior count is scaled like an adaptive hit.
        self.seps = [(s.rstrip("\x01"), s.endswith("\x01")) for s in seps]
        self.sep_counts = [1 + SEP_INC * int(c) for c in sep_counts]


@functools.lru_cache(maxsize=1)
def tables() -> _Tables:
    return _Tables()


class _Coder:
    """Adaptive state shared by encoder and decoder; `code` encodes `sym` or decodes one symbol."""

    def __init__(self, enc=None, dec=None, budget: int = 1 << 62) -> None:
        self.t = tables()
        self.budget = budget
        self.tail = 0
        self.enc, self.dec = enc, dec
        self.cache: dict[str, int] = {}   # word -> index in cache_words
        self.cache_words: list[str] = []
        self.cache_n: list[int] = []
        self.pos = 0
        self.oov: dict[str, int] = {}  # spelled words -> order of first spelling
        self.start = [[8, 1, 1], [8, 1, 1], [8, 1, 1]]
        self.seps = list(self.t.seps)
        self.sep_index = {s: i for i, s in enumerate(self.seps)}
        self.sep_counts = [list(self.t.sep_counts) for _ in range(3)]

    def code(self, model, sym=None) -> int:
        if self.enc is not None:
            self.enc.encode(int(sym), model)
            return int(sym)
        return int(self.dec.decode(model))

    # -- words ------------------------------------------------------------------------------
    def word(self, st: int, w: str | None = None) -> str:
        """One word from a single categorical: static prior (sum 2**24) plus a cache boost.

        Symbols 0..V-1 are the vocabulary, V is the escape (spell it), V+1+j is the j-th
        out-of-vocabulary word already spelled in this list. A word seen n times gets
        floor(2**24 * CACHE_COUNT * n / (CACHE_DAMP + words so far)) added to its count:
        integers only, so the model is exact everywhere.
        """
        t = self.t
        counts = np.append(t.word_counts, np.zeros(len(self.oov), dtype=np.float64))
        denom = CACHE_DAMP + self.pos
        for j, wc in enumerate(self.cache_words):
            num = CACHE_COUNT * self.cache_n[j]
            k = t.index.get(wc)
            if k is None:
                k = t.esc + 1 + self.oov[wc]
            counts[k] += float((num << 24) // denom)
        sym = None
        if w is not None:
            sym = t.index.get(w)
            if sym is None:
                sym = t.esc + 1 + self.oov[w] if w in self.oov else t.esc
        i = self.code(_cat(counts), sym)
        if i == t.esc:
            w = self.spell(w)
            if w in t.index or w in self.oov:
                raise BitstreamError("text stream: spelled word is already codable")
            self.oov[w] = len(self.oov)
        elif i < t.esc:
            w = t.words[i]
        else:
            w = self.oov_words()[i - t.esc - 1]
        slot = self.cache.get(w)
        if slot is None:
            slot = self.cache[w] = len(self.cache_words)
            self.cache_words.append(w)
            self.cache_n.append(0)
        self.cache_n[slot] += 1
        self.pos += 1
        return w

    def oov_words(self) -> list[str]:
        return list(self.oov)  # dicts keep insertion order = spelling order

    def spell(self, w: str | None) -> str:
        out = []
        a = b = 0
        for k in range(MAX_CHARS + 1):
            sym = None if w is None else (ord(w[k]) - 96 if k < len(w) else 0)
            c = self.code(self.t.letter_models[a][b], sym)
            if c == 0:
                break
            out.append(chr(96 + c))
            a, b = b, c
        else:
            raise BitstreamError("text stream: word too long")
        if not out:
            raise BitstreamError("text stream: empty spelled word")
        return "".join(out)

    # -- separators ---------------------------------------------------------------------------
    def sep(self, st: int, tok: tuple[str, bool] | None = None) -> tuple[str, bool]:
        counts = self.sep_counts[st]
        sym = None if tok is None else self.sep_index.get(tok, len(self.seps))
        i = self.code(_cat(counts + [2]), sym)
        if i == len(self.seps):
            s = self.spell_sep(None if tok is None else tok[0])
            fin = bool(self.code(_cat([1, 1]), None if tok is None else int(tok[1])))
            tok = (s, fin)
            if tok in self.sep_index or _WORD_RE.search(s) or not s:
                raise BitstreamError("text stream: invalid escaped separator")
            self.sep_index[tok] = len(self.seps)
            self.seps.append(tok)
            for c in self.sep_counts:
                c.append(1)
        tok = self.seps[i]
        counts[i] += SEP_INC
        return tok

    def spell_sep(self, s: str | None) -> str:
        out: list[str] = []
        model = _cat(_SEP_CHAR_COUNTS, lazy=False)
        for k in range(MAX_CHARS + 1):
            if s is None:
                c = self.code(model)
            else:
                o = ord(s[k]) if k < len(s) else None
                c = 0 if o is None else (o - 31 if 32 <= o <= 126 else _NONASCII)
                self.code(model, c)
            if c == 0:
                return "".join(out)
            if c == _NONASCII:
                o = None if s is None else ord(s[k])
                hi = self.code(constriction.stream.model.Uniform(0x110000 >> 11), None if o is None else o >> 11)
                lo = self.code(constriction.stream.model.Uniform(2048), None if o is None else o & 2047)
                o = (hi << 11) | lo
                if 32 <= o <= 126 or 0xD800 <= o <= 0xDFFF:
                    raise BitstreamError("text stream: invalid code point")
                out.append(chr(o))
            else:
                out.append(chr(c + 31))
        raise BitstreamError("text stream: separator too long")

    # -- strings ------------------------------------------------------------------------------
    def spend(self, chars: int) -> None:
        """Every decoded character of every string counts against 64 * len(stream) + 4096, the
        same total the encoder checks (docs/text-stream.md, "Limits")."""
        self.budget -= chars
        if self.budget < 0:
            raise BitstreamError("text stream: more text than the stream length allows")

    def string(self, st: int, s: str | None = None) -> str:
        toks = None
        if s is not None:
            toks = _TOKEN_RE.findall(s)
            start = _START_EMPTY if not s else (_START_WORD if _WORD_RE.match(toks[0]) else _START_SEP)
        else:
            start = None
        start = self.code(_cat(self.start[st]), start)
        self.start[st][start] += 1
        if start == _START_EMPTY:
            return ""
        out: list[str] = []
        n = 0
        k = 0  # index into toks when encoding
        if start == _START_SEP:
            tok = self.sep(st, None if toks is None else (toks[0], len(toks) == 1))
            if tok == ("", True):
                raise BitstreamError("text stream: empty leading separator")
            out.append(tok[0])
            n += len(tok[0])
            self.spend(len(tok[0]))  # the leading separator counts towards the budget too
            k = 1
            if tok[1]:
                return "".join(out)
        while True:
            exhausted = self.dec is not None and self.dec.maybe_exhausted()
            w = self.word(st, None if toks is None else toks[k])
            if toks is not None:
                nxt = (toks[k + 1], k + 2 == len(toks)) if k + 1 < len(toks) else ("", True)
                k += 2
            else:
                nxt = None
            tok = self.sep(st, nxt)
            out += [w, tok[0]]
            n += len(w) + len(tok[0])
            if n > MAX_CHARS:
                raise BitstreamError("text stream: string too long")
            self.spend(len(w) + len(tok[0]))
            if exhausted:
                self.tail += len(w) + len(tok[0])
                if self.tail > MAX_TAIL_CHARS:
                    raise BitstreamError("text stream: truncated")
            if tok[1]:
                return "".join(out)
            if tok[0] == "":
                raise BitstreamError("text stream: empty separator")


def _structurally_canonical(s: str) -> bool:
    """The part of the canonical form the coder itself checks (ftfy/NFKC are left to the encoder
    front end, so that decoding does not depend on those libraries' versions)."""
    if s != s.strip() or "  " in s or _BAD_CHAR_RE.search(s):
        return False
    return True


_BAD_CHAR_RE = re.compile(r"[A-Z]|(?! )\s")


def _string_type(i: int) -> int:
    return _OVERALL if i == 0 else (_NAME if i % 2 else _DESC)


def encode_list(strings: list[str]) -> bytes:
    """Encode, then decode once to be sure the decoder's resource limits accept the result."""
    data = _encode_raw(strings)
    try:
        ok = _decode_raw(data) == strings
    except BitstreamError:
        ok = False
    if not ok:
        raise InputError("text stream: text too repetitive for the decoder's limits")
    return data


def _encode_raw(strings: list[str]) -> bytes:
    if not isinstance(strings, (list, tuple)):
        raise InputError("text stream: a list of strings is needed")
    if len(strings) > MAX_STRINGS:
        raise InputError(f"text stream: at most {MAX_STRINGS} strings, got {len(strings)}")
    for s in strings:
        if not isinstance(s, str):
            raise InputError("text stream: strings only")
        if len(s) > MAX_CHARS:
            raise InputError(f"text stream: a string is longer than {MAX_CHARS} characters")
        if not _structurally_canonical(s):
            raise InputError(f"text stream: string is not canonical: {s!r:.60}")
    enc = constriction.stream.queue.RangeEncoder()
    c = _Coder(enc=enc)
    c.code(constriction.stream.model.Uniform(MAX_STRINGS + 1), len(strings))
    for i, s in enumerate(strings):
        c.string(_string_type(i), s)
    data = enc.get_compressed().astype(">u4").tobytes()
    # Trailing zero bytes carry no information (the decoder pads them back); dropping them
    # saves bits and makes the encoding unique: a stream never ends with a zero byte.
    data = data.rstrip(b"\x00")
    if sum(len(s) for s in strings) > _char_budget(len(data)):
        raise InputError("text stream: text too repetitive (more than "
                         f"{MAX_CHARS_PER_BYTE} characters per byte)")
    return data


def _char_budget(nbytes: int) -> int:
    return MAX_CHARS_PER_BYTE * nbytes + MAX_CHARS


def decode_list(data: bytes) -> list[str]:
    out = _decode_raw(data)
    # The range coder's read-ahead hides a few trailing bytes; re-encoding makes the check exact:
    # a stream is accepted only if it is byte for byte what the encoder produces.
    try:
        again = _encode_raw(out)
    except InputError:  # e.g. the shorter re-encoding cannot carry this much text
        again = None
    if again != bytes(data):
        raise BitstreamError("text stream: trailing or non-canonical data")
    return out


def _decode_raw(data: bytes) -> list[str]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("text stream: not bytes")
    data = bytes(data)
    if data.endswith(b"\x00"):
        raise BitstreamError("text stream: trailing zero byte")
    if len(data) > MAX_STRINGS * MAX_CHARS * 4:
        raise BitstreamError("text stream: too long")
    padded = data + b"\x00" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        c = _Coder(dec=dec, budget=_char_budget(len(data)))
        n = c.code(constriction.stream.model.Uniform(MAX_STRINGS + 1))
        out = []
        for i in range(n):
            out.append(c.string(_string_type(i)))
            if not _structurally_canonical(out[-1]):
                raise BitstreamError("text stream: decoded string is not canonical")
        exhausted = dec.maybe_exhausted()
    except BitstreamError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # constriction reports corrupt data with its own types (a Rust
        # panic arrives as pyo3's PanicException, which is not an Exception subclass)
        raise BitstreamError(f"text stream: corrupt data ({type(e).__name__})") from None
    if not exhausted:
        raise BitstreamError("text stream: trailing data")
    return out
