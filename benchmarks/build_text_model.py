"""Build the static tables of the text stream model: sedic/streams/data/text_model_en.npz.

Reproducible: depends only on the `wordfreq` package (pinned version checked below) and on the
hand-written tuning text benchmarks/data/tuning_descriptions.json (NOT the evaluation set).
Run:  python benchmarks/build_text_model.py
The output holds only integers and ASCII strings, so the coder that loads it is exact everywhere.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import wordfreq

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "sedic" / "streams" / "data" / "text_model_en.npz"
TUNING = ROOT / "benchmarks" / "data" / "tuning_descriptions.json"

WORDFREQ_VERSION = "3.1.1"   # other versions ship other lists -> other tables
VOCAB_SIZE = 40000           # static word vocabulary (plus an escape symbol)
WORD_SCALE = 1 << 24         # integer resolution of the word prior
TUNING_WEIGHT = 0.4          # share of the prior from the in-domain tuning text (leave-one-out on it)
ALPHA = 27                   # 0 = word boundary, 1..26 = a..z

WORD_RE = re.compile(r"[a-z]+")
TOKEN_RE = re.compile(r"[a-z]+|[^a-z]+")


def tuning_strings() -> list[str]:
    data = json.loads(TUNING.read_text(encoding="utf-8"))
    out = []
    for im in data["images"]:
        out.append(im["overall"].lower())
        for name, desc in im["objects"]:
            out += [name.lower(), desc.lower()]
    return out


def main() -> None:
    if version("wordfreq") != WORDFREQ_VERSION:
        raise SystemExit(f"need wordfreq {WORDFREQ_VERSION}, have {version('wordfreq')}")
    full = [w for w in wordfreq.top_n_list("en", 10**6) if re.fullmatch(r"[a-z]+", w)]
    strings = tuning_strings()
    tune = Counter(w for s in strings for w in WORD_RE.findall(s))

    # Vocabulary: the most frequent wordfreq words, plus every tuning word (domain terms).
    vocab = full[:VOCAB_SIZE]
    seen = set(vocab)
    vocab += sorted(w for w in tune if w not in seen)
    f = np.array([wordfreq.word_frequency(w, "en") for w in vocab], dtype=np.float64)
    t = np.array([tune.get(w, 0) for w in vocab], dtype=np.float64)
    p = (1 - TUNING_WEIGHT) * f / f.sum() + TUNING_WEIGHT * t / t.sum()
    word_counts = np.maximum(1, np.round(p * WORD_SCALE)).astype(np.uint32)
    # Escape share = wordfreq mass of words outside the vocabulary (rare words), at least 1/256.
    rest = full[VOCAB_SIZE:]
    esc = max(WORD_SCALE // 256, int(round(sum(wordfreq.word_frequency(w, "en") for w in rest[:50000])
                                           / f.sum() * WORD_SCALE * (1 - TUNING_WEIGHT))))

    # Spelling model for escaped words: order-2 letter contexts over out-of-vocabulary word types.
    char_counts = np.ones((ALPHA, ALPHA, ALPHA), dtype=np.uint32)  # +1: every letter stays codable
    for w in rest:
        a = b = 0
        for ch in w:
            c = ord(ch) - 96
            char_counts[a, b, c] += 1
            a, b = b, c
        char_counts[a, b, 0] += 1

    # Separators (runs of non-letters) with a flag "string ends after it", counted in the tuning text.
    seps = Counter()
    for s in strings:
        toks = TOKEN_RE.findall(s)
        for i, tok in enumerate(toks):
            if not WORD_RE.fullmatch(tok):
                seps[(tok, i == len(toks) - 1)] += 1
            elif i == len(toks) - 1:
                seps[("", True)] += 1
    for base in [" ", ", ", ". ", "-", "; ", ": ", "'", " (", ") ", " - ", "."]:
        seps[(base, False)] += 0
    for base in [".", ""]:
        seps[(base, True)] += 0
    sep_items = sorted(seps.items(), key=lambda kv: (-kv[1], kv[0]))
    sep_strings = "\x00".join(s + ("\x01" if fin else "") for (s, fin), _ in sep_items)
    sep_counts = np.array([c for _, c in sep_items], dtype=np.uint32)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        words=np.frombuffer("\n".join(vocab).encode("ascii"), dtype=np.uint8),
        word_counts=word_counts,
        esc_count=np.array([esc], dtype=np.uint32),
        char_counts=char_counts,
        sep_strings=np.frombuffer(sep_strings.encode("ascii"), dtype=np.uint8),
        sep_counts=sep_counts,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(vocab)} words, esc {esc}/{int(word_counts.sum())}, "
          f"{len(sep_items)} separators")


if __name__ == "__main__":
    main()
