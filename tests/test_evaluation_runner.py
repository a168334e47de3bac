"""Runner, baselines and reports of `sedic evaluate`: resumption does no work twice."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from sedic.errors import RateError
from sedic.evaluation import baselines as B
from sedic.evaluation.baselines import Encoded
from sedic.evaluation.methods import Method
from sedic.evaluation.metrics import MetricSuite, psnr
from sedic.evaluation.runner import Evaluation, list_images


def _smooth(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 9.0 + seed) + 50 * np.cos(y / 13.0 + seed)
    return np.clip(np.stack([base, base * 0.8 + 20, 255 - base], -1), 0, 255).astype(np.uint8)


class Counting(Method):
    """A fake codec (coarse quantisation) that counts its calls."""

    def __init__(self, name, file_key=None, fail_at=None):
        self.name, self.ext, self.file_key = name, ".raw", file_key or name
        self.calls = {"encode": 0, "decode": 0}
        self.fail_at = fail_at

    def encode(self, image, target_bpp, stem):
        self.calls["encode"] += 1
        if target_bpp == self.fail_at:
            raise RateError("too small")
        step = 64 if target_bpp < 0.1 else 16
        return Encoded((image // step * step).tobytes() + bytes([step]), {"step": step})

    def decode(self, data, size, info):
        self.calls["decode"] += 1
        w, h = size
        return np.frombuffer(data[:-1], np.uint8).reshape(h, w, 3)


class CountingMetric:
    def __init__(self):
        self.calls = 0

    def __call__(self, ref, dec, text=None):
        self.calls += 1
        return psnr(ref, dec)


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        Image.fromarray(_smooth(40, 56, seed=i)).save(d / name)
    (d / "notes.txt").write_text("not an image")
    return d


def _run(out, methods, metric, images, bpps=(0.05, 0.2)):
    ev = Evaluation(out, methods, MetricSuite(image={"psnr": metric}), list(bpps), progress=False)
    return ev.run(images)


def test_list_images_sorted_and_limited(dataset):
    assert [p.name for p in list_images(dataset)] == ["a.png", "b.png", "c.png"]
    assert [p.name for p in list_images(dataset, 2)] == ["a.png", "b.png"]


def test_resumed_run_does_no_work_twice(dataset, tmp_path):
    out = tmp_path / "out"
    images = list_images(dataset)
    first, shared, metric = Counting("m1"), Counting("m1-view", file_key="m1"), CountingMetric()
    res = _run(out, [first, shared], metric, images)
    assert first.calls == {"encode": 6, "decode": 6}
    assert shared.calls == {"encode": 0, "decode": 6}  # decodes m1's files, never encodes
    assert metric.calls == 12
    assert res.work == {"encode": 6, "decode": 12, "metrics": 12, "features": 0}
    rows = {(r["method"], r["image"], r["target_bpp"]): r for r in res.rows}
    assert rows[("m1", "a", 0.05)]["bpp"] == pytest.approx(8 * (40 * 56 * 3 + 1) / (40 * 56))
    assert [(r["image"], r["method"], r["target_bpp"]) for r in res.rows][:4] == [
        ("a", "m1", 0.05), ("a", "m1", 0.2), ("a", "m1-view", 0.05), ("a", "m1-view", 0.2)]

    # A second run with fresh objects: nothing is encoded, decoded or measured again.
    m1, view, metric2 = Counting("m1"), Counting("m1-view", file_key="m1"), CountingMetric()
    res2 = _run(out, [m1, view], metric2, images)
    assert m1.calls == view.calls == {"encode": 0, "decode": 0} and metric2.calls == 0
    assert res2.work == {"encode": 0, "decode": 0, "metrics": 0, "features": 0}
    assert [r["metrics"] for r in res2.rows] == [r["metrics"] for r in res.rows]

    # Killed between decoding and measuring: only the metric is redone.
    (out / "rows" / "m1" / "bpp0.2" / "b.json").unlink()
    m1, metric3 = Counting("m1"), CountingMetric()
    _run(out, [m1], metric3, images)
    assert m1.calls == {"encode": 0, "decode": 0} and metric3.calls == 1

    # Killed before the decoded image was complete (no meta file): decode again, no encode.
    (out / "rows" / "m1" / "bpp0.2" / "c.json").unlink()
    (out / "decoded" / "m1" / "bpp0.2" / "c.png.json").unlink()
    m1 = Counting("m1")
    _run(out, [m1], CountingMetric(), images)
    assert m1.calls == {"encode": 0, "decode": 1}

    # A torn encode record is redone.
    (out / "rows" / "m1" / "bpp0.05" / "a.json").unlink()
    (out / "decoded" / "m1" / "bpp0.05" / "a.png.json").unlink()
    (out / "files" / "m1" / "bpp0.05" / "a.raw.json").write_text("{trunc")
    m1 = Counting("m1")
    _run(out, [m1], CountingMetric(), images)
    assert m1.calls == {"encode": 1, "decode": 1}


def test_new_metric_on_resume_reuses_decoded_images(dataset, tmp_path):
    out = tmp_path / "out"
    images = list_images(dataset, 1)
    _run(out, [Counting("m")], CountingMetric(), images)
    m, extra = Counting("m"), CountingMetric()
    ev = Evaluation(out, [m], MetricSuite(image={"psnr": CountingMetric(), "other": extra}), [0.05, 0.2],
                    progress=False)
    ev.run(images)
    assert m.calls == {"encode": 0, "decode": 0} and extra.calls == 2


def test_unmet_rate_is_recorded_and_not_retried(dataset, tmp_path):
    out = tmp_path / "out"
    images = list_images(dataset, 1)
    m = Counting("m", fail_at=0.05)
    res = _run(out, [m], CountingMetric(), images)
    failed = [r for r in res.rows if r["status"] == "failed"]
    assert len(failed) == 1 and "too small" in failed[0]["error"]
    m2 = Counting("m", fail_at=0.05)
    _run(out, [m2], CountingMetric(), images)
    assert m2.calls == {"encode": 0, "decode": 0}


# ------------------------------------------------------------------ baselines

def test_jpeg_search_fits_target_with_largest_quality():
    img = _smooth(128, 192)
    base = B.build_baseline("jpeg")
    target = 0.5
    enc = base.encode(img, target)
    assert len(enc.data) * 8 / (128 * 192) <= target
    out = base.decode(enc.data, (192, 128), enc.info)
    assert out.shape == img.shape and out.dtype == np.uint8
    f, q = enc.info["factor"], enc.info["quality"]
    # At the chosen factor the next quality would not fit (it is the largest that fits).
    if q < base.codec.qmax:
        small = Image.fromarray(img).resize((enc.info["coded_width"], enc.info["coded_height"]), Image.LANCZOS)
        side = B.SIZE_SIDE_BYTES if f != 1.0 else 0
        assert len(base.codec.encode_at(small, q + 1)) + side > int(target * 128 * 192 / 8)
    # Downscaled files carry the original size in front (counted in the rate).
    if f != 1.0:
        assert enc.data[:4] == bytes([0, 192, 0, 128])


def test_baseline_rate_unmet():
    with pytest.raises(RateError):
        B.build_baseline("jpeg").encode(_smooth(64, 64), 0.01)


@pytest.mark.parametrize("name", ["webp", "avif", "jxl", "heic"])
def test_other_classical_baselines_or_clean_skip(name):
    try:
        base = B.build_baseline(name)
    except B.BaselineUnavailable as exc:
        pytest.skip(str(exc))
    img = _smooth(96, 128)
    enc = base.encode(img, 0.6)
    assert len(enc.data) * 8 / (96 * 128) <= 0.6
    assert base.decode(enc.data, (128, 96), enc.info).shape == img.shape


def test_compressai_skipped_without_checkpoints(tmp_path, monkeypatch):
    import torch

    pytest.importorskip("compressai")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(B.BaselineUnavailable, match="--compressai-checkpoint"):
        B.build_baseline("compressai-cheng2020-attn")


def test_compressai_with_a_checkpoint_file(tmp_path):
    import torch

    pytest.importorskip("compressai")
    from compressai.zoo import image_models

    torch.manual_seed(0)
    model = image_models["bmshj2018-factorized"](quality=1, pretrained=False)
    path = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), path)
    base = B.build_baseline("compressai-bmshj2018-factorized",
                            compressai_ckpts={"bmshj2018-factorized": {1: str(path)}}, factors=(1.0,))
    img = Image.fromarray(_smooth(48, 80))
    data = base.codec.encode_at(img, 0)
    out = base.codec.decode_raw(data)
    assert out.size == (80, 48)


def _tiny_compressai_checkpoint(tmp_path, perturb=False):
    """A random bmshj2018-factorized with its entropy tables computed; `perturb` then moves its
    float parameters, so tables recomputed from them differ from the stored ones."""
    import torch
    from compressai.zoo import image_models

    torch.manual_seed(0)
    model = image_models["bmshj2018-factorized"](quality=1, pretrained=False).eval()
    model.update(force=True)
    if perturb:
        with torch.no_grad():
            for p in model.entropy_bottleneck.parameters():
                p.mul_(1.5)
    path = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_compressai_baseline_codes_with_the_tables_its_checkpoint_stores(tmp_path):
    """As the reference codec does (every machine codes with the same CDFs); the baseline used
    to recompute them in float (update(force=True))."""
    import torch

    pytest.importorskip("compressai")
    path, state = _tiny_compressai_checkpoint(tmp_path, perturb=True)
    base = B.build_baseline("compressai-bmshj2018-factorized",
                            compressai_ckpts={"bmshj2018-factorized": {1: str(path)}})
    img = _smooth(48, 80)
    data = base.codec.encode_at(Image.fromarray(img), 0)
    assert np.asarray(base.codec.decode_raw(data)).shape == img.shape
    net = base.codec.coder.net(1)
    for name in ("_quantized_cdf", "_offset", "_cdf_length"):
        assert torch.equal(getattr(net.entropy_bottleneck, name), state[f"entropy_bottleneck.{name}"])


def test_compressai_baseline_and_reference_share_the_coder(tmp_path):
    """The baseline's file carries exactly the strings the reference codec's payload carries."""
    pytest.importorskip("compressai")
    from sedic.streams.reference import CompressAICodec, ReferenceSetting

    path, _ = _tiny_compressai_checkpoint(tmp_path)
    base = B.build_baseline("compressai-bmshj2018-factorized",
                            compressai_ckpts={"bmshj2018-factorized": {1: str(path)}})
    img = _smooth(64, 64)
    data = base.codec.encode_at(Image.fromarray(img), 0)
    ref = CompressAICodec("bmshj2018-factorized", checkpoint=str(path)).encode(img, ReferenceSetting(0, 1))
    # file: 9 header bytes, 1 group count, 1 string count, 4 length bytes; payload: 2 header bytes
    assert data[15:] == ref[2:] and len(ref) > 2
    assert np.array_equal(np.asarray(base.codec.decode_raw(data)),
                          CompressAICodec("bmshj2018-factorized", checkpoint=str(path)).decode_reduced(ref, 64, 64))


def test_baselines_search_with_the_reference_search(monkeypatch):
    """One rate search: a baseline's encode goes through sedic.streams.reference.encode_reference,
    over the reference's downscale factors."""
    from sedic.streams import reference as R

    calls = []
    real = R.encode_reference

    def spy(image, max_bytes, codec, **kw):
        calls.append((max_bytes, sorted({s.factor_index for s in codec.settings(192, 128)})))
        return real(image, max_bytes, codec, **kw)

    monkeypatch.setattr(R, "encode_reference", spy)
    enc = B.build_baseline("jpeg").encode(_smooth(128, 192), 0.3)
    reference_factors = sorted({s.factor_index for s in R.AvifCodec().settings(192, 128)})
    assert calls == [(int(0.3 * 128 * 192 / 8), reference_factors)] and len(reference_factors) > 8
    assert enc.info["factor"] in [float(f) for f in R.FACTORS]


def test_a_baseline_gets_its_best_over_every_factor(kodak_dir):
    """The baselines' search scores every factor (sweep), so its choice is the brute-force best:
    for each factor the highest quality whose whole file fits, decoded, upscaled, PSNR. The climb
    the reference uses stops at a local peak on this crop (factor 4, quality 2, against factor 12,
    quality 11), as it did for JPEG XL on Kodak (-0.13 dB)."""
    from sedic.streams import reference as R

    img = np.asarray(Image.open(kodak_dir / "kodim07.png").convert("RGB"))[100:228, 200:392].copy()
    base = B.build_baseline("jpeg")
    budget = int(0.1 * 128 * 192 / 8)
    best = None
    for fi in sorted({s.factor_index for s in R.AvifCodec().settings(192, 128)}):
        size = R.reduced_size(192, 128, fi)
        small = Image.fromarray(img).resize(size, Image.LANCZOS)
        side = B.SIZE_SIDE_BYTES if size != (192, 128) else 0
        fits = [q for q in range(base.codec.qmin, base.codec.qmax + 1)
                if len(base.codec.encode_at(small, q)) + side <= budget]
        if not fits:
            continue
        q = max(fits)
        decoded = base.codec.decode_raw(base.codec.encode_at(small, q)).resize((192, 128), Image.LANCZOS)
        best = max(best or (0.0, fi, q), (R.psnr(img, np.asarray(decoded)), fi, q))
    enc = base.encode(img, 0.1)
    got = R.psnr(img, base.decode(enc.data, (192, 128), enc.info))
    assert got == pytest.approx(best[0], abs=1e-9), (enc.info, best)


# ------------------------------------------------------------------ the command, end to end

def test_evaluate_command_writes_csv_json_table_plots_and_resumes(tmp_path, capsys):
    """Profile test, weight-free metrics, classical baselines, on 192x128 crops of Kodak."""
    from pathlib import Path

    kodak = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "kodak"
    srcs = sorted(kodak.glob("kodim0*.png"))[:3]
    if not srcs:
        srcs = None
    data = tmp_path / "kodak-crops"
    data.mkdir()
    for i in range(3):
        img = (Image.open(srcs[i]).convert("RGB").crop((256, 192, 448, 320)) if srcs
               else Image.fromarray(_smooth(128, 192, seed=i)))
        img.save(data / f"img{i}.png")
    out = tmp_path / "results"
    from sedic.cli import main

    argv = ["evaluate", str(data), "--out", str(out), "--bpp", "0.1", "0.3", "--profile", "test",
            "--metrics", "psnr,ms-ssim", "--methods", "sedic-preview", "--baselines", "jpeg,webp", "--limit", "2",
            "--no-analyze", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method | target bpp |" in printed and "work this run" in printed

    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 2  # images x methods x rates
    assert {r["method"] for r in rows} == {"sedic-preview", "jpeg", "webp"}
    assert {r["image"] for r in rows} == {"img0", "img1"}
    for col in ("target_bpp", "bpp", "bpp_reference", "bpp_text", "bpp_masks", "bpp_header", "encode_s",
                "decode_s", "device", "psnr", "ms-ssim"):
        assert col in rows[0]
    for r in rows:
        if r["status"] == "ok":
            assert float(r["bpp"]) <= float(r["target_bpp"]) + 1e-9
            assert 5 < float(r["psnr"]) < 60 and 0 < float(r["ms-ssim"]) <= 1
            assert r["device"] == "cpu"
    prev = [r for r in rows if r["method"] == "sedic-preview" and r["status"] == "ok"]
    assert prev, "sedic-preview produced no row"
    for r in prev:  # the streams add up to the file
        total = sum(float(r[f"bpp_{s}"]) for s in ("reference", "text", "masks", "header"))
        assert total == pytest.approx(float(r["bpp"]), rel=1e-6)
        size = Path(out / "files" / "sedic" / f"bpp{float(r['target_bpp']):g}" / f"{r['image']}.sedic").stat().st_size
        assert float(r["bpp"]) == pytest.approx(8 * size / (192 * 128))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == ["psnr", "ms-ssim"] and summary["images"] == ["img0.png", "img1.png"]
    assert {(m["method"], m["target_bpp"]) for m in summary["means"]} == {
        (m, b) for m in ("sedic-preview", "jpeg", "webp") for b in (0.1, 0.3)}
    assert summary["work_done_this_run"]["encode"] > 0

    table = (out / "table.md").read_text()
    assert "| sedic-preview | 0.1 |" in table and "psnr ↑" in table and "ms-ssim ↑" in table
    for name in ("psnr", "ms-ssim"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size[0] > 300

    # Resume: the same command again does no codec or metric work and writes the same results.
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["work_done_this_run"] == {"encode": 0, "decode": 0, "metrics": 0, "features": 0}
    assert again["means"] == summary["means"]


def test_evaluate_rejects_bad_options(tmp_path, capsys):
    from sedic.cli import main

    (tmp_path / "d").mkdir()
    Image.fromarray(_smooth(32, 32)).save(tmp_path / "d" / "x.png")
    assert main(["evaluate", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--metrics", "psnr,nope"]) == 2
    assert "unknown metric" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--baselines", "gif"]) == 2


def test_sedic_methods_share_one_file_and_pass_options(dataset, tmp_path, monkeypatch):
    """sedic and sedic-preview: one encode, decoded with all stages / with stages=0; semantics cache
    used. The real codec with profile `test` (offline); the API calls are only recorded."""
    import sedic
    from sedic.evaluation.methods import SedicMethod

    calls = []

    def record(name):
        real = getattr(sedic, name)

        def call(*args, **kwargs):
            calls.append((name, kwargs))
            return real(*args, **kwargs)
        monkeypatch.setattr(sedic, name, call)

    for name in ("compress", "decompress", "inspect"):
        record(name)
    sem = tmp_path / "sem"
    sem.mkdir()
    mask = np.zeros((40, 56), bool)
    mask[5:25, 10:40] = True
    Image.fromarray(mask).save(sem / "a.mask0.png")
    (sem / "a.json").write_text(json.dumps({"overall": "a smooth gradient", "objects": [
        {"name": "patch", "description": "a bright patch", "mask": "a.mask0.png"}]}))
    methods = [SedicMethod(profile="test", semantics_dir=sem, device="cpu", stages=1),
               SedicMethod(profile="test", semantics_dir=sem, device="cpu", preview=True)]
    out = tmp_path / "out"
    ev = Evaluation(out, methods, MetricSuite(image={"psnr": CountingMetric()}), [3.0],
                    semantics_dir=sem, progress=False)
    res = ev.run(list_images(dataset, 2))
    enc = [kw for name, kw in calls if name == "compress"]
    assert len(enc) == 2  # one per image, shared by both methods
    assert enc[0]["semantics"] == sem / "a.json" and enc[1]["semantics"] is None and enc[1]["analyze"]
    assert all(kw["profile"] == "test" for kw in enc)
    dec = [kw for name, kw in calls if name == "decompress"]
    assert sorted(kw["stages"] for kw in dec) == [0, 0, 1, 1] and all(kw["device"] == "cpu" for kw in dec)
    assert all(r["status"] == "ok" for r in res.rows), [r.get("error") for r in res.rows]
    for row in res.rows:  # the rate is the file the codec wrote
        size = (out / "files" / "sedic" / "bpp3" / f"{row['image']}.sedic").stat().st_size
        assert row["bytes"] == size and row["bpp"] == pytest.approx(8 * size / (40 * 56))
        assert sum(row[f"bpp_{s}"] for s in ("reference", "text", "masks", "header")) == pytest.approx(row["bpp"])
        assert row["bpp_text"] > 0 and row["bpp_reference"] > 0


def test_changed_options_are_not_served_from_the_cache(dataset, tmp_path):
    """A cached file or decode made with other options (profile, stages, search...) is redone."""
    out = tmp_path / "out"
    images = list_images(dataset, 1)

    class Configured(Counting):
        def __init__(self, enc, dec):
            super().__init__("m")
            self.enc, self.dec = enc, dec

        def encode_config(self):
            return {"q": self.enc}

        def decode_config(self):
            return {"stages": self.dec}

    _run(out, [Configured(1, 1)], CountingMetric(), images)
    same = Configured(1, 1)
    _run(out, [same], CountingMetric(), images)
    assert same.calls == {"encode": 0, "decode": 0}
    other_decode = Configured(1, 2)
    _run(out, [other_decode], CountingMetric(), images)
    assert other_decode.calls == {"encode": 0, "decode": 2}
    other_encode = Configured(2, 2)
    _run(out, [other_encode], CountingMetric(), images)
    # Re-encoded; this fake codec wrote the same bytes again, so the decodes (keyed by the
    # file's hash) are still valid and reused.
    assert other_encode.calls == {"encode": 2, "decode": 0}


def test_fid_kid_through_the_runner_with_cached_features(dataset, tmp_path):
    import torch

    from sedic.evaluation.metrics import PatchFeatures

    class Extractor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv((x.float() - 128) / 128).mean((2, 3))

    def suite():
        return MetricSuite(image={"psnr": CountingMetric()}, patch_features=PatchFeatures(Extractor(), "rand", 16),
                           set_names=["fid", "kid"], kid_subsets=5)

    out = tmp_path / "out"
    images = list_images(dataset)
    res = Evaluation(out, [Counting("m")], suite(), [0.05, 0.2], progress=False).run(images)
    assert res.work["features"] == 3 + 6  # originals once, then each decoded image
    fid_lo, fid_hi = res.set_metrics[("m", 0.2)]["fid"], res.set_metrics[("m", 0.05)]["fid"]
    assert res.set_metrics[("m", 0.2)]["patches"] == 3 * (6 + 6)  # 40x56 at 16 px: 2x3, then 2x3 on 32x48
    assert 0 <= fid_lo < fid_hi  # coarser quantisation is further from the originals
    assert "kid" in res.set_metrics[("m", 0.05)]
    res2 = Evaluation(out, [Counting("m")], suite(), [0.05, 0.2], progress=False).run(images)
    assert res2.work["features"] == 0
    assert res2.set_metrics[("m", 0.2)]["fid"] == pytest.approx(fid_lo)


def test_evaluate_full_sedic_method_with_the_tiny_decoder(tmp_path, capsys):
    """Method `sedic` for real: compress with cached semantics, full multistage decode (tiny models)."""
    from sedic.cli import main

    data, sem = tmp_path / "images", tmp_path / "semantics"
    data.mkdir()
    sem.mkdir()
    Image.fromarray(_smooth(48, 64, seed=5)).save(data / "tiny.png")
    mask = np.zeros((48, 64), bool)
    mask[8:30, 10:40] = True
    Image.fromarray(mask).save(sem / "tiny.mask0.png")
    (sem / "tiny.json").write_text(json.dumps({
        "overall": "a smooth colour gradient",
        "objects": [{"name": "patch", "description": "a soft bright patch", "mask": "tiny.mask0.png"}]}))
    out = tmp_path / "results"
    argv = ["evaluate", str(data), "--out", str(out), "--bpp", "1.0", "--profile", "test", "--metrics", "psnr",
            "--methods", "sedic", "--baselines", "none", "--semantics-dir", str(sem), "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    with open(out / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["method"] == "sedic" and row["status"] == "ok"
    assert float(row["bpp"]) <= 1.0 and float(row["bpp_text"]) > 0 and float(row["bpp_masks"]) > 0
    assert 0 < float(row["psnr"]) < 100
