"""The reference search: the same choice as trying every setting, with far fewer encodes, never
a size larger than one whose lowest quality does not fit; compress/decompress say what they do."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sedic.errors import RateError
from sedic.streams import reference as R

from reference_helpers import kodim23 as _kodim23


def _photo(h=96, w=144, seed=0) -> np.ndarray:
    """Smooth structure plus texture, so that the best factor is neither the first nor the last."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1)
    noise = np.asarray(Image.fromarray((rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8))
                       .resize((w, h), Image.BICUBIC), np.float64) / 255
    return np.clip((0.35 * base + 0.5 + 0.3 * (noise - 0.5)) * 255, 0, 255).astype(np.uint8)


class Counting(R.AvifCodec):
    def __init__(self):
        super().__init__()
        self.encoded: list[tuple[int, int]] = []  # (reduced pixels, quality)

    def encode_reduced(self, reduced, setting):
        self.encoded.append((reduced.shape[0] * reduced.shape[1], setting.quality))
        return super().encode_reduced(reduced, setting)


def _every_setting(image, max_bytes):
    """A plain reference: for every factor the highest quality that fits, tried one by one from
    the top down, scored at full size; best PSNR, ties to the smaller payload."""
    codec = R.AvifCodec()
    h, w = image.shape[:2]
    best = None
    seen = set()
    for fi in range(len(R.FACTORS)):
        size = R.reduced_size(w, h, fi)
        if size in seen:
            continue
        seen.add(size)
        small = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS)) if size != (w, h) else image
        sizes = {}
        lo, hi = 0, 100  # bisection is exact here: AVIF payloads grow with quality
        if len(codec.encode_reduced(small, R.ReferenceSetting(fi, 0))) > max_bytes:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            sizes[mid] = codec.encode_reduced(small, R.ReferenceSetting(fi, mid))
            lo, hi = (mid, hi) if len(sizes[mid]) <= max_bytes else (lo, mid - 1)
        payload = sizes.get(lo) or codec.encode_reduced(small, R.ReferenceSetting(fi, lo))
        out = np.asarray(Image.fromarray(codec.decode_reduced(payload, w, h)).resize((w, h), Image.LANCZOS)) \
            if size != (w, h) else codec.decode_reduced(payload, w, h)
        key = (10 * np.log10(255.0 ** 2 / np.mean((image.astype(np.float64) - out) ** 2)), -len(payload))
        if best is None or key > best[0]:
            best = (key, fi, lo)
    return best


@pytest.mark.parametrize("bpp", [0.05, 0.1, 0.2])
def test_search_finds_the_best_setting_with_few_encodes(bpp):
    image = _kodim23()
    budget = int(bpp * image.shape[0] * image.shape[1] / 8)
    codec = Counting()
    payload, setting = R.encode_reference(image, budget, codec)
    (value, _), fi, q = _every_setting(image, budget)
    assert len(payload) <= budget
    assert R.psnr(image, codec.decode(payload, image.shape[1], image.shape[0])) == pytest.approx(value, abs=1e-9)
    assert (setting.factor_index, setting.quality) == (fi, q)
    # the exhaustive search made ~8 encodes for every one of the 12 factors
    assert len(codec.encoded) <= 30


def test_no_size_above_one_whose_lowest_quality_does_not_fit():
    image = _photo(192, 288, seed=1)
    h, w = image.shape[:2]
    lowest = {}
    for fi in range(len(R.FACTORS)):
        size = R.reduced_size(w, h, fi)
        small = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS)) if size != (w, h) else image
        lowest[size[0] * size[1]] = len(R.AvifCodec().encode_reduced(small, R.ReferenceSetting(fi, 0)))
    budget = int(np.median(list(lowest.values())))  # only the smaller half of the sizes fit at all
    too_big = min(px for px, n in lowest.items() if n > budget)
    assert any(n <= budget for n in lowest.values())
    codec = Counting()
    R.encode_reference(image, budget, codec)
    assert max(px for px, _ in codec.encoded) <= too_big



def test_candidates_are_scored_on_what_the_decoder_outputs():
    """The search upsamples with Pillow (fast); the decoder with the normative integer rule. On
    every factor's candidate they must give the same pixels, or the search ranks what no decoder
    shows."""
    image = _photo(150, 221, seed=3)
    h, w = image.shape[:2]
    search = R._Search(image, 700, R.AvifCodec(), R.psnr, None)
    for fi in search.factors[:-1]:  # every reduced size below the full one
        small = np.asarray(Image.fromarray(image).resize(R.reduced_size(w, h, fi), Image.LANCZOS))
        payload = R.AvifCodec().encode_reduced(small, R.ReferenceSetting(fi, 20))
        assert np.array_equal(search.decoded(payload), R.decode_reference(payload, w, h)), R.FACTORS[fi]


def test_downscale_share_is_the_error_of_the_uncoded_downscale():
    """On an image of at most a megapixel the bands cover every row: the share is the squared error
    of the original downscaled and upsampled over that of the candidate (to 1 %: each band is
    upsampled from a box of the reduced image, whose edges round a little differently)."""
    image = _kodim23(240, 160)
    h, w = image.shape[:2]
    search = R._Search(image, 900, R.AvifCodec(), R.psnr, None)
    fi = R.FACTORS.index(3)
    small = np.asarray(Image.fromarray(image).resize(R.reduced_size(w, h, fi), Image.LANCZOS))
    decoded = R.decode_reference(R.AvifCodec().encode_reduced(small, R.ReferenceSetting(fi, 30)), w, h)
    up = np.asarray(Image.fromarray(small).resize((w, h), Image.LANCZOS)).astype(np.float64)
    expected = np.sum((image - up) ** 2) / np.sum((image - decoded.astype(np.float64)) ** 2)
    assert 0.05 < expected < 0.95  # neither side dominates: a wrong band or box shows
    assert search._downscale_share(small, decoded) == pytest.approx(expected, rel=0.01)


def test_a_smooth_large_image_is_not_coded_above_the_start_size():
    """An upscaled image has pixels to spare: the downscale causes almost none of the start's
    error, so the climb goes to smaller sizes and never asks the codec for a larger one than the
    start; the choice is still the best setting."""
    image = np.asarray(Image.fromarray(_kodim23(96, 64)).resize((768, 512), Image.LANCZOS))
    h, w = image.shape[:2]
    budget = int(0.03 * w * h / 8)
    codec = Counting()
    payload, setting = R.encode_reference(image, budget, codec)
    (value, _), fi, q = _every_setting(image, budget)
    assert (setting.factor_index, setting.quality) == (fi, q)
    start = max(R.FACTORS, key=lambda f: -abs(np.log(8 * budget / np.prod(
        R.reduced_size(w, h, R.FACTORS.index(f))) / R.START_BITS_PER_PIXEL)))
    start_px = int(np.prod(R.reduced_size(w, h, R.FACTORS.index(start))))
    assert R.FACTORS[fi] > start  # the best lies at a smaller size than the start
    assert max(px for px, _ in codec.encoded) == start_px

def test_qualities_sharing_a_quantizer_give_the_same_payload():
    """The search encodes each AV1 quantiser once (AvifCodec.quantizer: libavif's mapping of the
    101 qualities onto 64 quantisers). Checked against what Pillow/libavif write: two qualities
    give the same bytes exactly when the mapping gives them one quantiser."""
    small = np.asarray(Image.fromarray(_kodim23()).resize((96, 64), Image.LANCZOS))
    codec = R.AvifCodec()
    payloads = {q: codec.encode_reduced(small, R.ReferenceSetting(0, q)) for q in range(101)}
    for q in range(100):
        assert (payloads[q] == payloads[q + 1]) == (codec.quantizer(q) == codec.quantizer(q + 1)), q
    assert len(set(payloads.values())) == len({codec.quantizer(q) for q in range(101)}) == 64


@pytest.mark.parametrize("bpp", [0.05, 0.1, 0.2])
def test_the_search_encodes_each_quantizer_once_per_size(bpp):
    image = _kodim23()
    budget = int(bpp * image.shape[0] * image.shape[1] / 8)
    codec = Counting()
    R.encode_reference(image, budget, codec)
    probes = [(px, codec.quantizer(q)) for px, q in codec.encoded]
    assert len(probes) == len(set(probes))


def test_a_new_factors_first_probe_follows_the_chosen_qualities_trend():
    """With two factors finished, the chosen quality index is extrapolated linearly in
    log(pixels) from the two nearest (here 3 -> 4 chose 29 -> 35 at 1.33 and 0.75 of the pixels)."""
    image = _kodim23(240, 160)
    search = R._Search(image, 900, R.AvifCodec(), R.psnr, None)
    a, b, c = (R.FACTORS.index(f) for f in (4, 3, 5))
    search.pixels.update({b: 1_333_000, a: 750_000, c: 480_000})
    for fi, q in ((b, 29), (a, 35)):
        search.known[fi] = {q: 800}
        search.results[fi] = ((30.0, -800), b"", R.ReferenceSetting(fi, q))
    expected = 35 + (35 - 29) * np.log(480 / 750) / np.log(750 / 1333)
    assert search._trend(c) == round(expected) == 40
    search.results[b] = None  # a factor without a candidate gives no trend
    assert search._trend(c) is None


def test_a_smooth_start_assumes_a_lower_size_exponent():
    """With only the start finished, the size exponent is assumed: 0.8, or 0.6 when the downscale
    caused under 0.15 of the start's error (a smooth image: its bytes grow slowly with pixels)."""
    search = R._Search(_kodim23(240, 160), 900, R.AvifCodec(), R.psnr, None)
    start, other = R.FACTORS.index(3), R.FACTORS.index(4)
    search.known[start] = {20: 800, 30: 1200}
    search.share = 0.5
    assert search._exponent(other) == R._SIZE_EXPONENT == 0.8
    search.share = 0.1
    assert search._exponent(other) == R._SIZE_EXPONENT_SMOOTH == 0.6


def test_search_raises_when_nothing_fits():
    with pytest.raises(RateError):
        R.encode_reference(_photo(), 8, R.AvifCodec())


def test_search_is_deterministic():
    image = _photo(seed=2)
    runs = {R.encode_reference(image, 900, R.AvifCodec())[0] for _ in range(3)}
    assert len(runs) == 1


def test_psnr_matches_the_float_formula():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (300, 200, 3), dtype=np.uint8) for _ in range(2))
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    assert R.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-12)
    assert R.psnr(a, a) == R.PSNR_CAP


def test_the_search_and_the_evaluation_score_with_one_psnr():
    """Identical and near-identical images (one sample off by 1 in 256x256x3: 101.07 dB by the
    formula) get the same capped value from the search and from `sedic evaluate`'s metric."""
    from sedic.evaluation import metrics as M

    a = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] ^= 1
    for pair in ((a, a), (a, b)):
        assert R.psnr(*pair) == M.psnr(*pair) == 100.0


# ---------------------------------------------------------------- progress lines


@pytest.fixture
def no_grace(monkeypatch):
    """Status lines at once (they wait 1 s otherwise, so that quick commands print none)."""
    from sedic.cli import codec_commands

    monkeypatch.setattr(codec_commands.StatusLines, "GRACE_S", 0.0)


def test_compress_says_what_it_does_before_the_search(tmp_path, capsys, no_grace):
    from sedic.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray(_photo()).save(src)
    assert main(["compress", str(src), "-o", str(tmp_path / "x.sedic"), "--no-semantics", "--bpp", "0.3",
                 "--profile", "test"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"compress: read {src}: 144x96 (") and lines[0].endswith(" s)")
    assert lines[1].startswith("compress: reference search: 144x96 in ")
    factors = [line for line in lines if line.startswith("compress: reference factor ")]
    assert len(factors) >= 2 and all("bytes, score" in line or "does not fit" in line for line in factors)
    assert lines[-1].startswith(f"{tmp_path / 'x.sedic'}: ")


def test_decompress_says_what_it_does_before_the_models(tmp_path, capsys, no_grace):
    import sedic
    from sedic.cli import main

    data = sedic.compress(_photo(48, 64), bpp=1.0, analyze=False, profile="test",
                          schedule={"final_steps": 1})
    (tmp_path / "x.sedic").write_bytes(data)
    assert main(["decompress", str(tmp_path / "x.sedic"), "-o", str(tmp_path / "x.png")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"decompress: {tmp_path / 'x.sedic'}: 64x48, {len(data)} bytes, profile test: "
                               f"decoding the reference (")
    assert lines[1].startswith("decompress: preview ready; loading the decoder models")
    assert lines[-1].startswith("stage 1/1: overall  1 step in ")  # (a heartbeat may come first on a slow machine)


def test_status_lines_wait_out_the_grace_and_a_quick_command_prints_none():
    import io
    import time

    from sedic.cli.codec_commands import StatusLines

    quick = io.StringIO()
    say = StatusLines("compress", quick)
    say("read x.png")
    say.close()
    slow = io.StringIO()
    say = StatusLines("compress", slow)
    say("read x.png")
    time.sleep(StatusLines.GRACE_S + 0.5)  # the timer prints it once the grace is over
    printed = slow.getvalue()
    say("reference search")
    say.close()
    assert quick.getvalue() == ""
    assert printed.startswith("compress: read x.png (0.0 s)") and printed.count("\n") == 1
    assert slow.getvalue().splitlines()[1].startswith("compress: reference search (1.")


def test_a_slow_stage_prints_a_heartbeat_in_a_log():
    import io

    from sedic.restoration.progress import HEARTBEAT_S, DecodeProgress

    t = [0.0]
    log = io.StringIO()
    printer = DecodeProgress(log, tty=False, clock=lambda: t[0])
    printer.stage(1, 1, "overall")
    for step in (1, 2):
        t[0] += HEARTBEAT_S + 1  # one slow step each
        printer.step(1, 1, step, 3)
    t[0] += 1
    printer.step(1, 1, 3, 3)  # fast: nothing new
    printer.finish()
    lines = log.getvalue().splitlines()
    assert lines == ["stage 1/1: overall  1/3 steps, 31 s so far", "stage 1/1: overall  2/3 steps, 1 min 02 s so far",
                     "stage 1/1: overall  3 steps in 1 min 03 s (21.00 s/step)"]


def test_an_explicit_size_payload_decodes_to_that_size():
    import io

    image = _photo(70, 100)
    small = np.asarray(Image.fromarray(image).resize((37, 23), Image.LANCZOS))
    codec = R.AvifCodec()
    payload = codec.encode_reduced(small, R.ReferenceSetting(R.EXPLICIT_SIZE, 40))
    with Image.open(io.BytesIO(codec.encode_avif_file(small, 40))) as im:  # Pillow's own file
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(codec.decode_reduced(payload, 100, 70), expected)
    assert R.decode_reference(payload, 100, 70).shape == (70, 100, 3)
