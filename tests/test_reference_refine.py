"""The encoder-only refinement after the reference search (sedic.streams.reference_refine)."""

import numpy as np
import pytest

from sedic.streams import reference as R, reference_refine as F

from reference_helpers import SearchOnly, kodim23 as _kodim23, record_encodes


def test_fit_quality_is_the_highest_that_fits():
    rng = np.random.default_rng(0)
    qualities = list(range(101))
    for _ in range(300):
        limit = int(rng.integers(-1, 101))  # highest fitting index, -1: none
        start = int(rng.integers(0, 101))
        calls = []

        def fits(k, limit=limit, calls=calls):
            calls.append(k)
            return k <= limit

        assert F.fit_quality(qualities, fits, start) == (None if limit < 0 else limit)
        assert len(calls) <= 16


def test_fill_width_finds_the_widest_that_fits_on_a_power_law():
    for budget in (300, 777, 1000, 2500):
        def size_of(sw):
            return int(0.9 * sw ** 1.55) + 40

        best = max((sw for sw in range(16, 769) if size_of(sw) <= budget), default=None)
        got = F.fill_width(size_of, 768, 512, 128, 85, budget)
        assert got == best


def test_fill_width_none_when_nothing_fits():
    assert F.fill_width(lambda sw: 10 ** 6, 768, 512, 128, 85, 1000) is None


@pytest.mark.parametrize("bpp", [0.1, 0.2, 0.4])
def test_refined_payload_fits_decodes_and_never_scores_lower(bpp):
    image = _kodim23()
    h, w = image.shape[:2]
    budget = int(bpp * w * h / 8)
    before, setting = R.encode_reference(image, budget, SearchOnly())
    after, refined = R.encode_reference(image, budget, R.AvifCodec())
    assert len(after) <= budget
    decoded = R.decode_reference(after, w, h)  # a decoder reads it, explicit size or not
    assert decoded.shape == image.shape
    assert R.psnr(image, decoded) >= R.psnr(image, R.decode_reference(before, w, h))
    # the payload's own header says the reduced size the refinement coded
    _, _, rw, rh, _ = R.AvifCodec().parse(after, w, h)
    if refined.factor_index == R.EXPLICIT_SIZE:
        assert (after[1] >> 4) == R.EXPLICIT_SIZE and (rw, rh) not in [R.reduced_size(w, h, i)
                                                                         for i in range(len(R.FACTORS))]
    else:
        assert (rw, rh) == R.reduced_size(w, h, refined.factor_index)


def test_refinement_improves_and_uses_explicit_sizes_on_some_budget():
    image = _kodim23()
    h, w = image.shape[:2]
    gains, explicit = [], 0
    for budget in (300, 420, 600, 800):
        before, _ = R.encode_reference(image, budget, SearchOnly())
        after, setting = R.encode_reference(image, budget, R.AvifCodec())
        gains.append(R.psnr(image, R.decode_reference(after, w, h)) - R.psnr(image, R.decode_reference(before, w, h)))
        explicit += setting.factor_index == R.EXPLICIT_SIZE
    assert max(gains) > 0.05
    assert explicit >= 1


def test_refinement_leaves_other_codecs_and_large_images_alone(monkeypatch):
    image = _kodim23()
    h, w = image.shape[:2]
    payload, setting = R.encode_reference(image, 500, SearchOnly())
    assert F.refine_reference(image, 500, SearchOnly(), payload, setting, R.psnr) == (payload, setting)
    monkeypatch.setattr(F, "MAX_PIXELS", w * h - 1)
    assert F.refine_reference(image, 500, R.AvifCodec(), payload, setting, R.psnr) == (payload, setting)


def test_refinement_is_deterministic():
    image = _kodim23(200, 136)
    runs = {R.encode_reference(image, 400, R.AvifCodec())[0] for _ in range(3)}
    assert len(runs) == 1


def test_explicit_setting_has_no_factor():
    assert np.isnan(R.ReferenceSetting(R.EXPLICIT_SIZE, 3).factor)
    assert R.ReferenceSetting(4, 3).factor == 3.0


def test_neighbour_sizes_are_the_adjacent_factors_within_the_limits(monkeypatch):
    w, h = 768, 512
    assert F._neighbour_sizes(w, h, 4, (-1, 1)) == [R.reduced_size(w, h, 3), R.reduced_size(w, h, 5)]
    assert F._neighbour_sizes(w, h, 0, (-1, 1)) == [R.reduced_size(w, h, 1)]  # no factor below 1
    assert F._neighbour_sizes(w, h, len(R.FACTORS) - 1, (1,)) == []
    # factor 3/2 (512x341) is above a limit of 2^17 reduced pixels, factor 5/2 is not
    monkeypatch.setattr(F, "MAX_REDUCED_PIXELS", 1 << 17)
    assert F._neighbour_sizes(w, h, 2, (-1, 1)) == [R.reduced_size(w, h, 3)]
    # tiny images: adjacent factors that give the search's own size (16 px sides) are not repeated
    assert R.reduced_size(40, 40, 3) == R.reduced_size(40, 40, 4) == (16, 16)
    assert F._neighbour_sizes(40, 40, 3, (-1, 1)) == [(20, 20)]


@pytest.mark.parametrize("budget", [300, 600])
def test_neighbours_are_coded_and_never_score_lower_than_the_window_alone(budget, monkeypatch):
    image = _kodim23()
    h, w = image.shape[:2]
    payload, setting = R.encode_reference(image, budget, SearchOnly())
    plain, _ = F.refine_reference(image, budget, R.AvifCodec(), payload, setting, R.psnr, neighbours=())
    coded = []
    record_encodes(monkeypatch, lambda codec, reduced, st, data: coded.append(reduced.shape[1::-1]))
    more, st = F.refine_reference(image, budget, R.AvifCodec(), payload, setting, R.psnr, neighbours=(-1, 1))
    for size in F._neighbour_sizes(w, h, setting.factor_index, (-1, 1)):
        assert size in coded  # each neighbour's own size is fitted at the final speed
    assert len(more) <= budget
    # a superset of the window's candidates, scored the same way
    assert R.psnr(image, R.decode_reference(more, w, h)) >= R.psnr(image, R.decode_reference(plain, w, h))
    _, _, rw, rh, _ = R.AvifCodec().parse(more, w, h)
    sizes = {R.reduced_size(w, h, i): i for i in reversed(range(len(R.FACTORS)))}
    assert st.factor_index == sizes.get((rw, rh), R.EXPLICIT_SIZE)  # a factor's size is sent by its index


def test_each_size_and_quantiser_is_encoded_once(monkeypatch):
    """Qualities that share an AV1 quantiser give the same payload (libavif maps 101 qualities onto
    64 quantisers), so the refinement encodes each (reduced size, quantiser) once: counted on the
    encoder's real calls at the final speed, with the result unchanged."""
    image = _kodim23()
    h, w = image.shape[:2]
    budget = int(0.03 * w * h / 8)
    calls = []

    def record(codec, reduced, setting, data):
        if codec.speed == F.FINAL_SPEED:
            # the reduced image itself (its bytes): step 4 codes other images at the same sizes
            calls.append((reduced.shape, reduced.tobytes(), R.AvifCodec.quantizer(setting.quality), data))

    real = record_encodes(monkeypatch, record)
    payload, _ = R.encode_reference(image, budget, R.AvifCodec())
    keys = [c[:3] for c in calls]
    assert len(calls) >= 4 and len(keys) == len(set(keys)), sorted((k[0], k[2]) for k in keys)
    # the premise: two qualities of one quantiser give identical bytes
    reduced = F.lanczos_down(image, 80, 53)
    q = next(q for q in range(1, 101) if R.AvifCodec.quantizer(q) == R.AvifCodec.quantizer(q - 1))
    slow = R.AvifCodec(speed=F.FINAL_SPEED)
    assert real(slow, reduced, R.ReferenceSetting(R.EXPLICIT_SIZE, q)) == \
        real(slow, reduced, R.ReferenceSetting(R.EXPLICIT_SIZE, q - 1))


def test_prefiltered_blurs_by_reduced_pixels():
    """sigma is in reduced pixels: the same sigma blurs the original more for a smaller reduced
    width; sigma 0 leaves the image as it is."""
    image = _kodim23()
    assert np.array_equal(F.prefiltered(image, 0.0, 80), image)

    def detail(a):
        return float(np.abs(np.diff(a.astype(np.int64), axis=1)).mean())

    assert detail(F.prefiltered(image, 0.3, 80)) < detail(F.prefiltered(image, 0.3, 160)) < detail(image)


@pytest.mark.parametrize("budget", [300, 800])
def test_prefilter_step_codes_blurred_originals_and_never_scores_lower(budget, monkeypatch):
    """Step 4 codes, at the winner's quality and aspect, the downscales of the blurred originals
    (seen on the encoder's real calls); the result fits, decodes and scores at least the steps
    before it alone (sigmas=()), and on these budgets higher."""
    image = _kodim23()
    h, w = image.shape[:2]
    payload, setting = R.encode_reference(image, budget, SearchOnly())
    plain, plain_setting = F.refine_reference(image, budget, R.AvifCodec(), payload, setting, R.psnr, sigmas=())
    coded = []

    def record(codec, reduced, st, data):
        if codec.speed == F.FINAL_SPEED:
            coded.append((reduced.copy(), st.quality))

    record_encodes(monkeypatch, record)
    more, _ = F.refine_reference(image, budget, R.AvifCodec(), payload, setting, R.psnr, sigmas=(0.1, 0.3))
    _, _, bw, bh, _ = R.AvifCodec().parse(plain, w, h)
    for sigma in (0.1, 0.3):  # each blur's first probe: the winner's own size and quality
        want = F.lanczos_down(F.prefiltered(image, sigma, bw), bw, bh)
        assert any(q == plain_setting.quality and np.array_equal(r, want) for r, q in coded), sigma
    assert len(more) <= budget
    before = R.psnr(image, R.decode_reference(plain, w, h))
    assert R.psnr(image, R.decode_reference(more, w, h)) > before
