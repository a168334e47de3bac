"""Bits per character of the text stream against simple baselines, per image and on average.

Usage:  python benchmarks/text_rate.py [descriptions.json] [--fit]

Text per image: [overall, name1, desc1, name2, desc2, ...], canonicalised (sedic.streams.text);
with --fit, cut to the CLIP window as the codec sends it (fit_prompt for the overall description,
object_prompt for each object). Characters = sum of the strings' lengths (code points).
- ours: 8 * len(encode_strings(strings)), the bytes the codec stores;
- huffman: a per-image character Huffman code over the strings joined with "\\n" (the string
  boundaries must be sent too), plus its code table: 8 bits for the number of symbols, then per
  symbol its code point (8 bits if all are ASCII, else 21) and its code length (5 bits);
- zlib -9 and brotli -q 11 of the UTF-8 of the "\\n"-joined strings (raw deflate/brotli streams,
  no container overhead beyond what the library writes).
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import platform
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import brotli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sedic.streams import text as T  # noqa: E402

DEFAULT = Path(__file__).resolve().parent / "data" / "descriptions.json"


def huffman_bits(text: str) -> int:
    freq = Counter(text)
    if len(freq) == 1:
        lengths = {next(iter(freq)): 1}
    else:
        heap = [(n, i, {ch: 0}) for i, (ch, n) in enumerate(sorted(freq.items()))]
        heapq.heapify(heap)
        k = len(heap)
        while len(heap) > 1:
            n1, _, a = heapq.heappop(heap)
            n2, _, b = heapq.heappop(heap)
            merged = {ch: d + 1 for ch, d in {**a, **b}.items()}
            heapq.heappush(heap, (n1 + n2, k, merged))
            k += 1
        lengths = heap[0][2]
    payload = sum(freq[ch] * lengths[ch] for ch in freq)
    sym_bits = 8 if all(ord(ch) < 128 for ch in freq) else 21
    table = 8 + len(freq) * (sym_bits + 5)
    return 8 * math.ceil((payload + table) / 8)


def image_strings(im: dict, fit: bool) -> list[str]:
    if not fit:
        out = [T.canonicalize(im["overall"])]
        for name, desc in im["objects"]:
            out += [T.canonicalize(name), T.canonicalize(desc)]
        return out
    out = [T.fit_prompt(im["overall"])]
    for name, desc in im["objects"]:
        out += list(T.object_prompt(name, desc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--fit", action="store_true", help="cut texts to the 77-token CLIP window first")
    args = ap.parse_args()
    data = json.loads(Path(args.path).read_text(encoding="utf-8"))

    rows, tot = [], Counter()
    t0 = time.perf_counter()
    for im in data["images"]:
        strings = image_strings(im, args.fit)
        joined = "\n".join(strings)
        chars = sum(len(s) for s in strings)
        enc = T.encode_strings(strings)
        assert T.decode_strings(enc) == strings
        bits = {
            "ours": 8 * len(enc),
            "huffman+table": huffman_bits(joined),
            "zlib -9": 8 * len(zlib.compress(joined.encode("utf-8"), 9)),
            "brotli -q 11": 8 * len(brotli.compress(joined.encode("utf-8"), quality=11)),
        }
        rows.append((im["id"], chars, bits))
        tot["chars"] += chars
        for k, v in bits.items():
            tot[k] += v
    elapsed = time.perf_counter() - t0

    cols = ["ours", "huffman+table", "zlib -9", "brotli -q 11"]
    print(f"Text: {Path(args.path).name}, {'fitted to the CLIP window' if args.fit else 'canonical, uncut'}; "
          f"bits per character (lower is better)\n")
    print("| image | chars | ours bytes | " + " | ".join(cols) + " |")
    print("|---|---:|---:|" + "---:|" * len(cols))
    for iid, chars, bits in rows:
        print(f"| {iid} | {chars} | {bits['ours'] // 8} | " + " | ".join(f"{bits[c] / chars:.3f}" for c in cols) + " |")
    print(f"| **all (total bits / total chars)** | {tot['chars']} | {tot['ours'] // 8} | "
          + " | ".join(f"**{tot[c] / tot['chars']:.3f}**" for c in cols) + " |")
    mean = {c: sum(b[c] / n for _, n, b in rows) / len(rows) for c in cols}
    print("| mean of per-image rates | | | " + " | ".join(f"{mean[c]:.3f}" for c in cols) + " |")
    print(f"\n{len(rows)} images; encode+decode+checks {elapsed:.2f} s on {platform.machine()}, "
          f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
