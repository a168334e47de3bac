"""Metrics of `sedic evaluate`: exact values where known, random backbones for the learned ones."""

import math

import numpy as np
import pytest
import torch

from sedic.errors import InputError
from sedic.evaluation import metrics as M, weights as W


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w, seed=0):
    # A natural-ish image (MS-SSIM/LPIPS behave better than on white noise).
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 9.0 + seed) + 50 * np.cos(y / 13.0)
    rgb = np.stack([base, base * 0.8 + 20, 255 - base], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ weight-free

def test_psnr_identical_is_cap_and_known_mse():
    a = _img(32, 48)
    assert M.psnr(a, a) == M.PSNR_CAP
    b = a.astype(np.int16)
    b[..., 0] = np.where(b[..., 0] < 255, b[..., 0] + 1, b[..., 0] - 1)  # |error| 1 on one channel of three
    mse = 1.0 / 3.0
    assert M.psnr(a, b.astype(np.uint8)) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-9)
    z = np.zeros((8, 8, 3), np.uint8)
    assert M.psnr(z, z + 10) == pytest.approx(10 * math.log10(255 ** 2 / 100), abs=1e-9)


def test_psnr_rejects_size_mismatch():
    with pytest.raises(InputError):
        M.psnr(_img(8, 8), _img(8, 9))


def test_msssim_identical_is_one_and_window_fallback():
    a = _smooth(200, 240)
    assert M.msssim_window(200, 240) == 11
    assert M.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    small = _smooth(128, 192)
    assert M.msssim_window(128, 192) == 7
    assert M.ms_ssim(small, small) == pytest.approx(1.0, abs=1e-5)
    noisy = np.clip(small.astype(int) + np.random.default_rng(1).integers(-40, 40, small.shape), 0, 255)
    assert 0 < M.ms_ssim(small, noisy.astype(np.uint8)) < 1
    assert M.msssim_window(40, 500) == 3
    with pytest.raises(M.MetricSkipped):
        M.msssim_window(32, 500)


def test_parse_metric_list_aliases_and_order():
    assert M.parse_metric_list("ms-ssim,psnr") == ["psnr", "ms-ssim"]
    assert M.parse_metric_list("lpips,fid") == ["lpips-alex", "lpips-vgg", "fid"]
    assert M.parse_metric_list("all") == list(M.ALL_METRICS)
    with pytest.raises(InputError):
        M.parse_metric_list("psnr,bogus")


# ------------------------------------------------------------------ LPIPS / DISTS with random backbones

def test_lpips_random_backbone_identity_and_positivity():
    metric = M.LPIPSMetric(M.build_lpips("alex", seed=3))
    a, b = _smooth(64, 96), _smooth(64, 96, seed=2)
    assert metric(a, a) == 0.0
    assert metric(a, b) > 0
    assert metric(a, b) == pytest.approx(metric(b, a), rel=1e-5)


def test_lpips_matches_reference_implementation():
    """Same backbone and linear weights as the `lpips` package: same value."""
    lpips = pytest.importorskip("lpips")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    mine = M.build_lpips("alex", seed=5)
    for name, mod in ref.net.named_modules():
        parts = name.split(".")
        if len(parts) == 2 and parts[0].startswith("slice"):
            mod.load_state_dict(mine.features[int(parts[1])].state_dict())
    for k, lin in enumerate(mine.lins):
        lin.weight.data.copy_(getattr(ref, f"lin{k}").model[1].weight.data)
    a, b = _smooth(64, 80), _smooth(64, 80, seed=4)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        expected = float(ref(ta, tb))
    assert M.LPIPSMetric(mine)(a, b) == pytest.approx(expected, rel=1e-4)


def test_dists_random_backbone_identity():
    metric = M.DISTSMetric(M.build_dists(seed=1))
    a, b = _smooth(64, 64), _smooth(64, 64, seed=3)
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metric(a, b) > 1e-4


# ------------------------------------------------------------------ FID / KID

def test_extract_patches_hific_grid():
    img = np.arange(512 * 768 * 3, dtype=np.uint32).reshape(512, 768, 3).astype(np.uint8)
    patches = M.extract_patches(img, 256)
    assert len(patches) == 3 * 2 + 2 * 1  # Kodak: 6 aligned + 2 shifted by 128
    assert all(p.shape == (256, 256, 3) for p in patches)
    np.testing.assert_array_equal(patches[6], img[128:384, 128:384])
    assert M.extract_patches(np.zeros((200, 900, 3), np.uint8), 256) == []


def test_fid_of_a_set_against_itself_is_zero_and_known_shift():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by 2 in every one of 8 dims: FID = |mu|^2 = 32.
    assert M.frechet_distance(f, f + 2.0) == pytest.approx(32.0, rel=1e-6)
    with pytest.raises(M.MetricSkipped):
        M.frechet_distance(f[:1], f[:1])


def test_kid_identical_near_zero_shift_positive():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 16))
    same, _ = M.kernel_distance(f, f, subsets=20, subset_size=100)
    moved, _ = M.kernel_distance(f, f + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 * moved
    assert moved > 0


class _RandomInceptionLike(torch.nn.Module):
    """uint8 (N, 3, h, w) -> (N, 32) like torch-fidelity's extractor, random weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, 2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2),
                                       torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return (self.net((x.float() - 128) / 128),)


def test_patch_features_and_fid_code_path():
    pf = M.PatchFeatures(_RandomInceptionLike(), "rand", patch=64)
    imgs = [_smooth(128, 192, seed=s) for s in range(3)]
    feats = np.concatenate([pf(i) for i in imgs])
    assert feats.shape == (3 * (2 * 3 + 1 * 2), 32)
    assert M.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    noisy = np.concatenate([pf(np.clip(i.astype(int) + 60, 0, 255).astype(np.uint8)) for i in imgs])
    assert M.frechet_distance(feats, noisy) > 0


# ------------------------------------------------------------------ CLIP with a tiny model

def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    return CLIPModel(cfg)


def _char_tokenize(texts):
    ids = [[1] + [3 + (ord(c) % 60) for c in t[:13]] + [2] for t in texts]
    n = max(map(len, ids))
    return {"input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])}


def test_clip_metrics_with_tiny_model():
    pytest.importorskip("transformers")
    emb = M.ClipEmbedder(_tiny_clip(), _char_tokenize, "tiny")
    a, b = _smooth(48, 64), _smooth(48, 64, seed=5)
    i2i = M.ClipI2IMetric(emb)
    assert i2i(a, a) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= i2i(a, b) <= 1.0
    score = M.ClipScoreMetric(emb)
    s = score(a, b, text="a red barn")
    assert 0.0 <= s <= 100.0
    with pytest.raises(M.MetricSkipped):
        score(a, b, text="")


def test_clip_loads_from_a_local_folder(tmp_path):
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    model = _tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3, "a": 4, "red": 5, "barn": 6}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        tmp_path / "clip")
    suite = M.build_metrics(["clip-score", "clip-i2i"], clip_model=str(tmp_path / "clip"))
    assert not suite.skipped and set(suite.image) == {"clip-score", "clip-i2i"}
    a = _smooth(40, 40)
    assert suite.image["clip-i2i"](a, a) == pytest.approx(1.0, abs=1e-5)
    assert 0 <= suite.image["clip-score"](a, a, text="a red barn") <= 100


# ------------------------------------------------------------------ availability

@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_learned_metrics_skipped_with_reason_when_weights_missing(empty_hub, tmp_path):
    suite = M.build_metrics(list(M.ALL_METRICS), weights_dir=tmp_path / "none",
                            clip_model=str(tmp_path / "no-such-clip"))
    assert set(suite.image) == {"psnr", "ms-ssim"}
    assert set(suite.skipped) == {"lpips-alex", "lpips-vgg", "dists", "fid", "kid", "clip-score", "clip-i2i"}
    assert "alexnet-owt-7be5be79.pth" in suite.skipped["lpips-alex"]
    assert "not available offline" in suite.skipped["clip-score"]


def test_backbone_layout_matches_torchvision():
    import torchvision

    ref = torchvision.models.alexnet().features
    mine = M.backbone_features("alex", {f"features.{k}": v for k, v in ref.state_dict().items()})
    assert [type(m) for m in mine] == [type(m) for m in ref]
    x = torch.rand(1, 3, 96, 96)
    torch.testing.assert_close(mine(x), ref(x))
    vgg_ref = torchvision.models.vgg16().features
    vgg = M.backbone_features("vgg", {f"features.{k}": v for k, v in vgg_ref.state_dict().items()})
    assert [type(m) for m in vgg] == [type(m) for m in vgg_ref]
    torch.testing.assert_close(vgg(x[..., :64, :64]), vgg_ref(x[..., :64, :64]))


def test_learned_metrics_load_weights_given_as_files(empty_hub, tmp_path):
    pytest.importorskip("lpips")  # the linear layers ship in the lpips package
    wd = tmp_path / "weights"
    wd.mkdir()
    torch.manual_seed(0)
    # torchvision-format state dicts (features.* keys; the classifier is not needed by the metrics).
    torch.save({f"features.{k}": v for k, v in M.backbone_features("alex").state_dict().items()},
               wd / W.ALEXNET_FILE)
    torch.save({f"features.{k}": v for k, v in M.backbone_features("vgg").state_dict().items()},
               wd / W.VGG16_FILE)
    torch.save({"alpha": torch.full((1, 1475, 1, 1), 0.1), "beta": torch.full((1, 1475, 1, 1), 0.1)},
               wd / W.DISTS_FILE)
    suite = M.build_metrics(["lpips-alex", "lpips-vgg", "dists"], weights_dir=wd)
    assert not suite.skipped
    a, b = _smooth(64, 64), _smooth(64, 64, seed=7)
    for name in ("lpips-alex", "lpips-vgg", "dists"):
        assert suite.image[name](a, a) == pytest.approx(0.0, abs=1e-6)
        assert suite.image[name](a, b) > 0


def test_fid_inception_loads_from_a_weights_file(empty_hub, tmp_path, monkeypatch):
    """The torch-fidelity Inception is built from a file in --weights-dir (random weights here)."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    cls = fe.FeatureExtractorInceptionV3
    # Build one with random weights by skipping its loader, and save that as the "downloaded" file.
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
    real_load = cls.load_state_dict
    monkeypatch.setattr(cls, "load_state_dict", lambda self, sd, *a, **k: None)
    torch.manual_seed(0)
    net = cls("inception-v3-compat", ["2048"])
    monkeypatch.setattr(cls, "load_state_dict", real_load)
    wd = tmp_path / "w"
    wd.mkdir()
    torch.save(net.state_dict(), wd / W.INCEPTION_FILE)
    suite = M.build_metrics(["fid", "kid"], weights_dir=wd, fid_patch=64)
    assert not suite.skipped and suite.set_names == ["fid", "kid"]
    feats = suite.patch_features(_smooth(64, 128))
    assert feats.shape == (2, 2048)
