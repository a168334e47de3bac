"""Text stream: canonical prompts that fit the CLIP window, and their arithmetic coding.

See docs/text-stream.md for the canonicalisation rule, the truncation rule and the bitstream.
The decoder's prompt for object k is ``join_object_prompt(name_k, description_k)``.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import unicodedata

import regex

from sedic.errors import InputError, ModelUnavailableError
from sedic.streams import text_model

WINDOW = 77  # decoder's token window including start and end tokens

__all__ = ["WINDOW", "canonicalize", "fit_prompt", "object_prompt", "join_object_prompt",
           "encode_strings", "decode_strings", "clip_tokens", "token_count"]

_WS = regex.compile(r"\s+")
# CLIP's pre-tokeniser (same pattern in OpenAI CLIP, open_clip and transformers' CLIPTokenizer).
_PRETOK = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)
_MAX_ROUNDS = 8
_DROP = ("Cc", "Cf", "Cs", "Co", "Cn")


def _clean_once(text: str) -> str:
    try:
        import ftfy  # the tokenizers call ftfy.fix_text first; we apply it so they see a fixed point
    except ImportError:
        raise ModelUnavailableError("canonicalizing text needs the package ftfy") from None

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))  # open_clip unescapes twice
    text = unicodedata.normalize("NFKC", text)
    # Drop control, format, surrogate, private-use and unassigned characters (whitespace aside):
    # noise in a prompt, and regex libraries disagree on the classes of unassigned code points,
    # which would make the Python and Rust CLIP tokenizers split differently.
    text = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in _DROP)
    text = _WS.sub(" ", text).strip()
    return text.lower()


def canonicalize(text: str) -> str:
    """The text the decoder's text encoder sees, made explicit (idempotent).

    ftfy.fix_text, html unescape (twice), NFKC, control/format characters removed, whitespace
    runs folded to one space and stripped, lower case; repeated until nothing changes (each
    step can expose work for another, e.g. lower() after NFKC). Non-ASCII that survives is kept.
    """
    if not isinstance(text, str):
        raise InputError("text must be a string")
    for _ in range(_MAX_ROUNDS):
        new = _clean_once(text)
        if new == text:
            return text
        text = new
    raise InputError("text: canonical form does not converge")


# ---------------------------------------------------------------------------------------------
# CLIP byte-level BPE (vocabulary bpe_simple_vocab_16e6, shared by SD 1.5 and SD 2.1).

def clip_vocab_path() -> str:
    """The CLIP BPE merges file shipped in this package (data/NOTICE.md): the window rule must not
    depend on which tokenizer packages happen to be installed."""
    return str(importlib.resources.files("sedic.streams") / "data" / "clip_bpe_16e6.txt.gz")


def byte_alphabet() -> dict[int, str]:
    # GPT-2/CLIP byte alphabet: printable latin-1 bytes stand for themselves, the rest are
    # shifted to 256+ so every byte has a visible, non-space character.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


class ClipBPE:
    """Minimal CLIP tokenizer: pre-tokenise, byte-encode, merge by rank. Input must be canonical."""

    def __init__(self, path: str | None = None) -> None:
        with gzip.open(path or clip_vocab_path(), "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_enc = byte_alphabet()
        chars = list(self.byte_enc.values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.merges = merges
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, chunk: str) -> tuple[str, ...]:
        if chunk in ("<|startoftext|>", "<|endoftext|>"):
            return (chunk,)
        word = [self.byte_enc[b] for b in chunk.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            best, best_rank = None, None
            for i in range(len(word) - 1):
                r = self.ranks.get((word[i], word[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            a, b = word[best], word[best + 1]
            merged, i = [], 0
            while i < len(word):  # merge every occurrence of the best pair, left to right
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    def chunks(self, text: str):
        """(start, end, tokens) for each pre-token of `text`."""
        for m in _PRETOK.finditer(text):
            yield m.start(), m.end(), self._bpe(m.group())

    def encode(self, text: str) -> list[int]:
        return [self.encoder[t] for _, _, toks in self.chunks(text) for t in toks]


@functools.lru_cache(maxsize=1)
def _bpe() -> ClipBPE:
    return ClipBPE()


def clip_tokens(text: str) -> list[int]:
    """CLIP BPE ids of canonical `text`, without start/end tokens."""
    return _bpe().encode(text)


def token_count(text: str) -> int:
    return sum(len(t) for _, _, t in _bpe().chunks(text))


def _cut(text: str, budget: int) -> str:
    """Longest prefix ending at a pre-token boundary whose tokens fit in `budget`."""
    end, used = 0, 0
    for _, e, toks in _bpe().chunks(text):
        if used + len(toks) > budget:
            break
        used += len(toks)
        end = e
    return text[:end].rstrip()


def fit_prompt(text: str, window: int = WINDOW) -> str:
    """canonicalize(text), cut at a CLIP pre-token boundary so tokens + 2 <= window."""
    if window < 2:
        raise InputError("window must be at least 2")
    text = canonicalize(text)
    budget = window - 2
    while token_count(text) > window - 2:
        # A prefix of a canonical text is canonical in practice; re-canonicalise anyway so the
        # result is a fixed point (this is what makes fit_prompt idempotent), and cut one token
        # deeper in the unlikely case that this made it longer.
        text = canonicalize(_cut(text, budget))
        budget -= 1
    return text


def join_object_prompt(name: str, description: str) -> str:
    """The decoder's prompt for an object: "name, description", or just "name" if no description."""
    return f"{name}, {description}" if description else name


def object_prompt(name: str, description: str, window: int = WINDOW) -> tuple[str, str]:
    """Canonical (name, description) whose joined prompt fits the window; the name is kept whole."""
    name = canonicalize(name)
    desc = canonicalize(description)
    if not name:
        raise InputError("object name is empty")
    if token_count(name) + 2 > window:
        raise InputError(f"object name {name!r} alone does not fit the {window}-token window")
    if token_count(join_object_prompt(name, desc)) + 2 <= window:
        return name, desc
    # Cut the description at its own pre-token boundaries until the joined prompt fits
    # (", " keeps the name's and the description's pre-tokens apart except in rare cases,
    # so we check the real joined count rather than add counts up).
    budget = window - 2 - token_count(name + ",")
    while desc:
        cut = canonicalize(_cut(desc, max(budget, 0)))
        if cut == desc:  # nothing could be dropped with this budget: drop a pre-token more
            budget -= 1
            if budget < 0:
                desc = ""
                break
            continue
        desc = cut
        if token_count(join_object_prompt(name, desc)) + 2 <= window:
            break
        budget -= 1
    return name, desc


def encode_strings(strings: list[str]) -> bytes:
    """Range-code canonical strings ([overall, name1, desc1, ...]); the count is in the bytes."""
    if not isinstance(strings, (list, tuple)):
        raise InputError("encode_strings needs a list of strings")
    for s in strings:
        if not isinstance(s, str) or canonicalize(s) != s:
            raise InputError(f"text is not canonical (use canonicalize / fit_prompt): {s!r:.60}")
    return text_model.encode_list(list(strings))


def decode_strings(data: bytes) -> list[str]:
    """Exact inverse of encode_strings; BitstreamError on malformed data."""
    return text_model.decode_list(data)
