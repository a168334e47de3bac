"""Build the conformance vectors in this folder and their manifest (docs/bitstream.md, "Conformance").

    python tests/vectors/make_vectors.py          # rewrites *.sedic, masks/*.png, manifest.json

Files are assembled from the stream coders directly (not through the rate search), so that every
branch a decoder has appears at least once: K = 0, 1, 2, 8, 32; empty strings; escaped separators,
spelled words and non-ASCII text; every settings key; sizes down to 1x1; an explicit-size
reference; both tool-flag forms (D = 1 and the flags byte, including 0b111000 at factor 2); and a
CompressAI payload whose tiny random-weight checkpoint lies beside it. Invalid files follow, each
with the message `inspect` and `decompress` must both give. Expected results come from this sedic
(Pillow 13.0 / libavif 1.4.2 for the AVIF decode); the test re-derives them on every run.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sedic import bitstream as bs, codec  # noqa: E402 (after the sys.path line above)
from sedic.schedule import ScheduleOverrides  # noqa: E402
from sedic.streams import avif, masks, reference, text  # noqa: E402

CHECKPOINT = "bmshj2018_factorized_tiny.pth"


def image(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth synthetic picture with a few edges (deterministic; no data set needed)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 3, 3)
    r = 127 + 100 * np.sin(a * xx / max(w, 1) * 6 + b)
    g = 127 + 100 * np.cos(b * yy / max(h, 1) * 6 + c)
    bl = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2, 220, 40)
    return np.clip(np.stack([r, g, bl], -1), 0, 255).astype(np.uint8)


def blobs(k: int, w: int, h: int, seed: int) -> list[np.ndarray]:
    """k full-resolution masks: discs and boxes, later ones partly covering earlier ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(k):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.1, 0.4) * max(w, h)
        m = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if i % 2 == 0 else \
            ((abs(xx - cx) < r) & (abs(yy - cy) < r / 2))
        if not m.any():
            m[int(cy) % h, int(cx) % w] = True
        out.append(m)
    return out


def strings_for(overall: str, objects: list[tuple[str, str]]) -> list[str]:
    out = [text.canonicalize(overall)]
    for name, desc in objects:
        out += [text.canonicalize(name), text.canonicalize(desc)]
    assert all(s == text.canonicalize(s) for s in out)
    return out


def avif_payload(img: np.ndarray, factor_index: int, quality: int, tune="psnr") -> bytes:
    return reference.AvifCodec(tune=tune).encode(img, reference.ReferenceSetting(factor_index, quality))


def explicit_avif_payload(img: np.ndarray, rw: int, rh: int, quality: int) -> bytes:
    """Factor index 15 with the size written out (our encoder never writes it; decoders accept it)."""
    c = reference.AvifCodec()
    small = reference._resize(img, rw, rh)
    stripped = avif.strip_avif(c.encode_avif_file(small, quality))
    sh = stripped.header
    default = sh.tools == avif.DEFAULT_TOOLS
    out = bytearray([(reference.CODEC_AVIF << 5) | sh.level, (15 << 4) | (int(default) << 3)])
    if not default:
        out.append(sh.tools << 2)
    out += bs.write_varint(rw - 1) + bs.write_varint(rh - 1)
    return bytes(out) + stripped.frame_payload


def compressai_payload(img: np.ndarray) -> tuple[bytes, str]:
    import torch
    from compressai.models import FactorizedPrior

    torch.manual_seed(17)
    net = FactorizedPrior(N=8, M=8).eval()
    net.update(force=True)
    path = HERE / CHECKPOINT
    torch.save(net.state_dict(), path)
    c = reference.make_codec("compressai", model="bmshj2018-factorized", checkpoint=str(path))
    return c.encode(img, reference.ReferenceSetting(2, 1)), CHECKPOINT


def build(w, h, settings, strings, grids, ref) -> bytes:
    sections = {bs.SETTINGS: settings, bs.REFERENCE: ref}
    if strings is not None:
        sections[bs.TEXT] = text.encode_strings(strings)
    if grids:
        sections[bs.MASKS] = masks.encode_masks(grids)
    return bs.pack(bs.Container(w, h, sections))


def settings(profile_id=1, seed=0, **overrides) -> bytes:
    return bs.DecoderParams(profile_id, seed, ScheduleOverrides(**overrides)).to_bytes()


def valid_vectors():
    """(name, what it exercises, file bytes, options for the reference decoder)."""
    v = []
    v.append(("v01_1x1_no_semantics", "1x1 image, no text or masks, AVIF at 1x1 with the tool-flags byte",
              build(1, 1, settings(), None, None, avif_payload(image(1, 1, 1), 0, 40)), {}))
    img = image(16, 16, 2)
    v.append(("v02_16x16_default_tools",
              "D = 1 (tool flags 0b011010, libavif's default tune), empty overall text, K = 0",
              build(16, 16, settings(seed=7), [""], None, avif_payload(img, 0, 30, tune=None)), {}))
    w, h = 37, 29
    s = strings_for("a small odd-sized picture", [("ball", "")])
    g = [masks.to_grid(m) for m in blobs(1, w, h, 3)]
    v.append(("v03_37x29_k1_all_settings",
              "K = 1 with an empty description; every settings key; seed 2^32-1; profile 0",
              build(w, h, settings(0, (1 << 32) - 1, object_steps=7, final_steps=1000, object_cfg=3.5,
                                   final_cfg=100.0, schedule="fused"), s, g, avif_payload(image(w, h, 3), 0, 50)), {}))
    w, h = 64, 48
    s = strings_for("Zürich café at dusk — “quiet” street; 3 bikes & 2½ lamps… 日本語 text ~ ok",
                    [("qzxv widget", "a xyzzyq thing (odd!) with snake_case and <tags> / 50% off"),
                     ("", "no name above, only this description")])
    g = [masks.to_grid(m) for m in blobs(2, w, h, 4)]
    v.append(("v04_64x48_k2_escapes", "K = 2: escaped separators, spelled words, non-ASCII, an empty name; factor 2",
              build(w, h, settings(seed=12345, final_steps=4), s, g, avif_payload(image(w, h, 4), 2, 60)), {}))
    w, h = 100, 75
    objs = [(f"object {i}", f"the {i}th thing, colour number {i * 7}") for i in range(8)]
    s = strings_for("eight objects in a row", objs)
    g = [masks.to_grid(m) for m in blobs(8, w, h, 5)]
    v.append(("v05_100x75_k8", "K = 8, repeated words (the cache), digits; factor 3/2",
              build(w, h, settings(2, 99), s, g, avif_payload(image(w, h, 5), 1, 45)), {}))
    w, h = 96, 80
    objs = [(["cat", "dog", "tree", "car"][i % 4] + f" {i}", "" if i % 3 else f"number {i} of thirty two")
            for i in range(32)]
    s = strings_for("thirty two objects", objs)
    g = [masks.to_grid(m) for m in blobs(32, w, h, 6)]
    v.append(("v06_96x80_k32", "K = 32 (65 strings, the most), many empty descriptions",
              build(w, h, settings(3), s, g, avif_payload(image(w, h, 6), 0, 20)), {}))
    w, h = 200, 150
    v.append(("v07_200x150_explicit_size", "reference with factor index 15 and an explicit 37x23 size",
              build(w, h, settings(4, 1), strings_for("explicit size", []), None,
                    explicit_avif_payload(image(w, h, 7), 37, 23, 35)), {}))
    w, h = 1600, 1200
    v.append(("v08_1600x1200_tools_111000", "a large reference (800x600 at factor 2): tool flags 0b111000",
              build(w, h, settings(), None, None, avif_payload(image(w, h, 8), 2, 0)), {}))
    w, h = 70, 45
    payload, ckpt = compressai_payload(image(w, h, 9))
    v.append(("v09_70x45_compressai", "CompressAI bmshj2018-factorized payload (tiny random weights beside it)",
              build(w, h, settings(), strings_for("a learned reference", [("box", "grey")]),
                    [masks.to_grid(m) for m in blobs(1, w, h, 9)], payload), {"checkpoint": ckpt}))
    return v


def _recrc(body: bytes) -> bytes:
    return body + bs.crc16(body).to_bytes(2, "big")


def _repack(data: bytes, **replace) -> bytes:
    """A valid container around altered section payloads (name -> bytes or None to drop)."""
    c = bs.unpack(data)
    ids = {"settings": bs.SETTINGS, "text": bs.TEXT, "masks": bs.MASKS, "reference": bs.REFERENCE}
    sections = dict(c.sections)
    for name, value in replace.items():
        if value is None:
            sections.pop(ids[name], None)
        else:
            sections[ids[name]] = value
    out = bytearray(bs.MAGIC) + bytes([bs.VERSION]) + bs.write_varint(c.width) + bs.write_varint(c.height)
    for kind in (bs.SETTINGS, bs.TEXT, bs.MASKS, bs.REFERENCE):
        if kind in sections:
            out += bs.write_varint(len(sections[kind]) << 3 | kind) + sections[kind]
    return _recrc(bytes(out))


def invalid_vectors(valid: dict[str, bytes]):
    """(name, file bytes, reason, message prefix both inspect and decompress must give, what it exercises)."""
    base = valid["v03_37x29_k1_all_settings"]
    k2 = valid["v04_64x48_k2_escapes"]
    small = valid["v02_16x16_default_tools"]
    c = bs.unpack(base)
    ref = c.sections[bs.REFERENCE]  # tool-flags form (D = 0)
    ref_d1 = bs.unpack(small).sections[bs.REFERENCE]
    body = base[:-2]
    head = bs.MAGIC + bytes([2]) + bs.write_varint(37) + bs.write_varint(29)
    tail = (((1 << 64) - 1) >> 24) * ((1 << 24) // 66)  # a point that equals `lower` after n = 1
    # (name, file bytes, reason in docs/bitstream.md's "Messages" table, message prefix, what it exercises)
    out = [
        ("x01_bad_magic", b"PK" + base[2:], "magic", "not a .sedic file (bad magic)",
         "magic PK (another format's file)"),
        ("x02_version_1", base[:2] + b"\x01" + base[3:], "version", "unsupported .sedic version 1",
         "an older version byte: named as such whatever the check value says (version 1 had none)"),
        ("x03_crc", base[:-1] + bytes([base[-1] ^ 1]), "crc", "corrupt file: CRC-16",
         "one bit of the check value flipped"),
        ("x04_truncated", _recrc(body[:-5]), "section-length", "truncated file: reference section declares 149 bytes",
         "5 bytes cut before the check value, which is then recomputed "
         "(a plain cut is a CRC error: the check comes first)"),
        ("x05_reserved_section_type", _recrc(body + b"\x0d\x00"), "section-type", "unknown section type 5",
         "a section of type 5 after the reference"),
        ("x06_repeated_section", _recrc(head + bs.write_varint(2 << 3 | 1) + b"\x01\x00"
                                        + bs.write_varint(2 << 3 | 1) + b"\x01\x00"
                                        + bs.write_varint(len(ref) << 3 | 4) + ref),
         "section-order", "section settings out of order or repeated", "two settings sections"),
        ("x07_no_reference", _repack(base, reference=None, masks=None, text=None), "section-missing",
         "truncated file: no reference section", "settings only"),
        ("x08_unknown_setting_key", _repack(base, settings=b"\x01\x00\x06\x01"), "setting-key",
         "unknown or repeated decoder setting key 6", "setting key 6"),
        ("x09_repeated_setting_key", _repack(base, settings=b"\x01\x00\x01\x05\x01\x06"), "setting-key",
         "unknown or repeated decoder setting key 1", "key 1 twice"),
        ("x10_steps_0", _repack(base, settings=b"\x01\x00\x01\x00"), "setting-below-minimum",
         "object_steps is 0, below the minimum 1", "object_steps 0"),
        ("x11_steps_1001", _repack(base, settings=b"\x01\x00\x02" + bs.write_varint(1001)), "varint-above-limit",
         "final_steps is 1001, above the limit 1000", "final_steps 1001 (2 bytes)"),
        ("x12_cfg_100_1", _repack(base, settings=b"\x01\x00\x03" + bs.write_varint(1001)), "varint-above-limit",
         "object_cfg is 1001, above the limit 1000", "object_cfg 100.1"),
        ("x13_schedule_2", _repack(base, settings=b"\x01\x00\x05\x02"), "varint-above-limit",
         "schedule is 2, above the limit 1", "schedule 2"),
        ("x14_overlong_varint", _repack(base, settings=b"\x01\x00\x01\x85\x00"), "varint-not-minimal",
         "object_steps is not minimally encoded", "object_steps 5 as 85 00"),
        ("x15_reference_reserved_bits", _repack(base, reference=ref[:1] + bytes([ref[1] | 1]) + ref[2:]),
         "avif-reserved", "reserved bits set in AVIF reference header", "bit 0 of byte 1 set"),
        ("x16_tool_flags_reserved_bits", _repack(base, reference=ref[:2] + bytes([ref[2] | 1]) + ref[3:]),
         "avif-tool-flags-reserved", "reserved bits set in AVIF tool flags", "bit 0 of the tool-flags byte set"),
        ("x17_factor_index_13", _repack(small, reference=ref_d1[:1] + bytes([13 << 4 | 8]) + ref_d1[2:]),
         "factor-index", "unknown downscale factor index 13", "factor index 13"),
        ("x18_explicit_size_too_big",
         _repack(small, reference=ref_d1[:1] + bytes([15 << 4 | 8]) + b"\x10\x00" + ref_d1[2:]),
         "explicit-size", "reference width 17 is above the image width 16",
         "explicit size 17x1 (varints 16, 0) on a 16x16 image"),
        ("x19_codec_id_3", _repack(small, reference=bytes([3 << 5]) + ref_d1[1:]), "reference-codec",
         "unknown reference codec id 3", "codec id 3"),
        ("x20_empty_avif_frame", _repack(small, reference=ref_d1[:1] + bytes([ref_d1[1] & ~8, 0b011000 << 2])),
         "avif-no-frame", "AVIF reference payload has no coded frame", "an AVIF header and no frame"),
        ("x21_even_string_count", _repack(small, text=text.encode_strings(["a", "b"])), "string-count",
         "text stream holds 2 strings; expected 1 + 2 per object", "2 strings"),
        ("x22_masks_without_objects", _repack(small, masks=b"\x01"), "masks-present",
         "masks section present but the text names no object", "K = 0 with a masks section"),
        ("x23_objects_without_masks", _repack(k2, masks=None), "masks-missing",
         "file names objects but has no masks section", "K = 2, no masks section"),
        ("x24_text_trailing_zero", _repack(k2, text=bs.unpack(k2).sections[bs.TEXT] + b"\x00"), "text-stream",
         "text stream: trailing zero byte", "a zero byte appended to the text stream"),
        ("x25_masks_trailing_zero", _repack(k2, masks=bs.unpack(k2).sections[bs.MASKS] + b"\x00"), "mask-stream",
         "mask stream: non-canonical data (trailing zero byte)", "a zero byte appended to the mask stream"),
        ("x26_text_extra_byte", _repack(k2, text=bs.unpack(k2).sections[bs.TEXT] + b"\x01"), "text-stream",
         "text stream: trailing or non-canonical data", "a byte 01 appended to the text stream"),
        ("x27_masks_extra_byte", _repack(k2, masks=bs.unpack(k2).sections[bs.MASKS] + b"\x01"), "mask-stream",
         "mask stream: trailing or non-canonical data", "a byte 01 appended to the mask stream"),
        ("x28_setting_value_3_bytes", _repack(base, settings=b"\x01\x00\x02\x85\x80\x00"), "varint-too-long",
         "final_steps is longer than 2 bytes, above the limit 1000",
         "final_steps as the 3 bytes 85 80 00 (also not minimal: the length is checked first)"),
        ("x29_text_zero_strings", _repack(small, text=b""), "string-count",
         "text stream holds 0 strings; expected 1 + 2 per object",
         "an empty text section (the encoding of zero strings)"),
        ("x30_text_tail_limit", _repack(small, text=tail.to_bytes(8, "big").rstrip(b"\x00")), "text-stream",
         "text stream: truncated",
         "8 bytes: n = 1, then every symbol decodes as 0 on zero words; "
         "more than 1,024 characters after maybe_exhausted()"),
        ("x31_section_header_5_bytes", _recrc(head + b"\x81\x80\x80\x80\x00"), "varint-too-long",
         "section header is longer than 4 bytes, above the limit 134217735", "a 5-byte section header"),
        ("x32_magic_bit_flipped", b"SE" + base[2:], "damaged-magic",
         "corrupt file: its first bytes (the .sedic magic) are damaged",
         "magic SE (one bit from SD) and a check value that does not match"),
        ("x33_version_bit_flipped", base[:2] + b"\x03" + base[3:], "damaged-version",
         "corrupt file: it says version 3 but its CRC-16 does not match",
         "version byte 3 (one bit from 2) and a check value that does not match: damaged, not newer"),
    ]
    return out


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def png_bytes(grid: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(grid.astype(np.uint8) * 255, "L").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def expected(name: str, data: bytes, options: dict) -> dict:
    parsed = codec.parse(data)
    payload = parsed.container.sections[bs.REFERENCE]
    opts = {k: str(HERE / v) if k == "checkpoint" else v for k, v in options.items()}
    if payload[0] >> 5 == reference.CODEC_AVIF:
        level, tools, rw, rh, frame = reference.AvifCodec().parse(payload, parsed.width, parsed.height)
        reduced = reference.AvifCodec().decode_reduced(payload, parsed.width, parsed.height)
        ref_info = {"codec": "avif", "seq_level_idx": level, "tool_flags": f"0b{tools:06b}",
                    "tool_flags_byte": not (payload[1] >> 3) & 1,
                    # the rebuilt AVIF file, byte-exact (docs/reference-stream.md)
                    "avif_sha256": sha256(avif.build_avif(avif.SequenceHeader(rw, rh, level, tools), frame))}
    else:
        cai = reference.CompressAICodec.for_payload(payload, checkpoint=opts["checkpoint"])
        _, rw, rh, _ = cai.parse(payload, parsed.width, parsed.height)
        reduced = cai.decode_reduced(payload, parsed.width, parsed.height)
        ref_info = {"codec": "compressai", "model": cai.model, "checkpoint": options["checkpoint"],
                    # float convolutions: bit-exact only for the same torch build, so the pixels
                    # are given too (the test allows +-1 against them on other builds)
                    "reduced_png": f"masks/{name}.reduced.png"}
        Image.fromarray(reduced).save(HERE / ref_info["reduced_png"], "PNG")
    preview = reference.upsample(reduced, parsed.width, parsed.height)
    ref_info.update({"factor_index": payload[1] >> 4, "reduced_size": [rw, rh],
                     "reduced_rgb_sha256": sha256(np.ascontiguousarray(reduced).tobytes()),
                     "preview_rgb_sha256": sha256(np.ascontiguousarray(preview).tobytes())})
    sem = parsed.semantics
    strings = ([sem.overall] + [s for o in sem.objects for s in (o.name, o.description)]
               if bs.TEXT in parsed.container.sections else [])
    mask_files = []
    for k, o in enumerate(sem.objects):
        rel = f"masks/{name}.{k}.png"
        (HERE / rel).write_bytes(png_bytes(o.mask))
        mask_files.append(rel)
    return {"file": f"{name}.sedic", "sha256": sha256(data), "bytes": len(data),
            "width": parsed.width, "height": parsed.height,
            "profile_id": parsed.params.profile_id, "seed": parsed.params.seed,
            "settings": parsed.params.overrides.as_dict(),
            "strings": strings, "objects": len(sem.objects),
            "mask_grid_shape": list(masks.grid_shape(parsed.width, parsed.height)),
            "masks": mask_files, "reference": ref_info}


def main():
    (HERE / "masks").mkdir(exist_ok=True)
    for old in list(HERE.glob("*.sedic")) + list((HERE / "masks").glob("*.png")):
        old.unlink()
    manifest = {"about": "Conformance vectors of the .sedic format version 2 (docs/bitstream.md). "
                         "RGB hashes are SHA-256 of the uint8 pixels in row-major (height, width, 3) order. "
                         "Mask PNGs are the decoded latent grids, 255 = set.",
                "generated_with": _versions(), "valid": [], "invalid": []}
    valid = {}
    for name, what, data, options in valid_vectors():
        (HERE / f"{name}.sedic").write_bytes(data)
        valid[name] = data
        entry = expected(name, data, options)
        entry["exercises"] = what
        manifest["valid"].append(entry)
    for name, data, reason, message, what in invalid_vectors(valid):
        (HERE / f"{name}.sedic").write_bytes(data)
        manifest["invalid"].append({"file": f"{name}.sedic", "reason": reason, "error": message, "exercises": what})
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(manifest['valid'])} valid and {len(manifest['invalid'])} invalid vectors in {HERE}")


def _versions() -> dict:
    import constriction
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "libavif": features.version("avif"), "numpy": np.__version__,
            "constriction": getattr(constriction, "__version__", "0.5")}


if __name__ == "__main__":
    main()
