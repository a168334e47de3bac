"""Distortion, perception and semantic metrics for the evaluation harness.

Per-image metrics take two uint8 RGB arrays of the same size (original, decoded) and return a
float. Set metrics (FID, KID) compare the distributions of 256-px patches of all originals and all
decoded images of one (method, rate). Learned metrics are built from weights found offline
(`weights.py`); when a weight is missing, `build_metrics` reports the metric as skipped with the
reason instead of computing anything.

Conventions (also in docs/evaluation.md):
- PSNR over all pixels and the 3 channels, peak 255, capped at PSNR_CAP dB (identical images).
- MS-SSIM: pytorch_msssim, data range 255, 5 scales, Gaussian window sigma 1.5. It needs the
  shorter side > 16 * (win - 1); for smaller images the window is truncated to the largest odd
  size that fits (7, 5 or 3); images with a shorter side < 33 px get no MS-SSIM (skipped).
- LPIPS v0.1 (AlexNet / VGG16) and DISTS at the native resolution, inputs as their authors define.
- CLIP score = 100 * max(cos(image, text), 0) (as torchmetrics' CLIPScore); CLIP-I2I = cosine of
  the image embeddings of original and decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..streams.reference import PSNR_CAP, psnr  # noqa: F401 - the one PSNR (the reference search's score too)
from .weights import (
    ALEXNET_FILE,
    INCEPTION_FILE,
    VGG16_FILE,
    WeightsNotFound,
    dists_file,
    find_file,
    load_state_dict,
    lpips_lin_file,
)

if TYPE_CHECKING:  # torch is imported where a learned metric is built
    import torch

ALL_METRICS = ("psnr", "ms-ssim", "lpips-alex", "lpips-vgg", "dists", "fid", "kid", "clip-score", "clip-i2i")
ALIASES = {"lpips": ("lpips-alex", "lpips-vgg"), "clip": ("clip-score", "clip-i2i"), "fid/kid": ("fid", "kid"),
           "msssim": ("ms-ssim",), "all": ALL_METRICS}
HIGHER_IS_BETTER = {"psnr": True, "ms-ssim": True, "lpips-alex": False, "lpips-vgg": False, "dists": False,
                    "fid": False, "kid": False, "clip-score": True, "clip-i2i": True}
SET_METRICS = ("fid", "kid")


class MetricSkipped(Exception):
    """This metric cannot be computed (here, or for this image); the message says why."""


def parse_metric_list(text: str | list[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [x for t in text for x in t.split(",")]
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        names = ALIASES.get(name, (name,))
        for n in names:
            if n not in ALL_METRICS:
                raise InputError(f"unknown metric {raw!r} (known: {', '.join(ALL_METRICS)}, lpips, clip, all)")
            if n not in out:
                out.append(n)
    # Report order is the canonical order, whatever order the user typed.
    return [n for n in ALL_METRICS if n in out]


def _check_pair(ref: np.ndarray, dec: np.ndarray) -> None:
    if ref.shape != dec.shape or ref.ndim != 3 or ref.shape[2] != 3:
        raise InputError(f"images must both be (H, W, 3), got {ref.shape} and {dec.shape}")


def _to_tensor(img: np.ndarray, device="cpu"):
    import torch

    # a copy: arrays from decoded PNGs are read-only
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().to(device)


# ---------------------------------------------------------------- weight-free

# psnr: sedic.streams.reference.psnr, imported above (capped at PSNR_CAP; exact integer sums)


def msssim_window(height: int, width: int) -> int:
    """The Gaussian window size used for an image of this size (11 unless the image is small)."""
    side = min(height, width)
    for win in (11, 9, 7, 5, 3):
        if side > 16 * (win - 1):  # pytorch_msssim's condition for 5 scales
            return win
    raise MetricSkipped(f"MS-SSIM needs a shorter side of at least 33 px, image is {width}x{height}")


def ms_ssim(ref: np.ndarray, dec: np.ndarray) -> float:
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(ref, dec)
    win = msssim_window(ref.shape[0], ref.shape[1])
    with torch.no_grad():
        val = _ms_ssim(_to_tensor(ref), _to_tensor(dec), data_range=255.0, win_size=win)
    return float(val)


# ---------------------------------------------------------------- LPIPS

# Where each of LPIPS's five feature taps ends in torchvision's `features` module (after a ReLU).
LPIPS_TAPS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
LPIPS_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _make_lpips_module(features, lins, taps):
    import torch
    from torch import nn

    class _LPIPS(nn.Module):
        """LPIPS v0.1 (Zhang et al. 2018): unit-normalised deep features, squared difference,
        learned per-channel weights, spatial mean, summed over the five taps."""

        def __init__(self):
            super().__init__()
            self.features = features
            self.lins = lins
            self.taps = taps
            # The scaling layer of v0.1: inputs in [-1, 1] are shifted/scaled to ImageNet statistics.
            self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

        def _taps(self, x):
            out, start = [], 0
            for end in self.taps:
                for layer in self.features[start:end]:
                    x = layer(x)
                out.append(x)
                start = end
            return out

        def forward(self, a, b):  # a, b in [-1, 1]
            fa = self._taps((a - self.shift) / self.scale)
            fb = self._taps((b - self.shift) / self.scale)
            total = 0.0
            for xa, xb, lin in zip(fa, fb, self.lins, strict=True):
                xa = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                xb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + lin((xa - xb) ** 2).mean(dim=(2, 3))
            return total.view(-1)

    return _LPIPS()


def _conv_stack(spec) -> torch.nn.Sequential:
    """torchvision's AlexNet/VGG16 `features` layout, built without the classifier (whose 100M+
    parameters would only be initialised to be thrown away)."""
    from torch import nn

    layers: list[nn.Module] = []
    for item in spec:
        if item[0] == "M":
            layers.append(nn.MaxPool2d(kernel_size=item[1], stride=2))
        else:
            cin, cout, k, stride, pad = item
            layers += [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU(inplace=False)]
    return nn.Sequential(*layers)


ALEXNET_SPEC = [(3, 64, 11, 4, 2), ("M", 3), (64, 192, 5, 1, 2), ("M", 3), (192, 384, 3, 1, 1),
                (384, 256, 3, 1, 1), (256, 256, 3, 1, 1), ("M", 3)]
VGG16_SPEC = [(3, 64, 3, 1, 1), (64, 64, 3, 1, 1), ("M", 2), (64, 128, 3, 1, 1), (128, 128, 3, 1, 1), ("M", 2),
              (128, 256, 3, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 1, 1), ("M", 2),
              (256, 512, 3, 1, 1), (512, 512, 3, 1, 1), (512, 512, 3, 1, 1), ("M", 2),
              (512, 512, 3, 1, 1), (512, 512, 3, 1, 1), (512, 512, 3, 1, 1), ("M", 2)]


def backbone_features(net: str, state: dict | None = None):
    """AlexNet or VGG16 `features`; `state` is a torchvision state dict (the classifier is ignored)."""
    feats = _conv_stack(ALEXNET_SPEC if net == "alex" else VGG16_SPEC)
    if state is not None:
        sub = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        feats.load_state_dict(sub)
    return feats


def build_lpips(net: str, backbone_state: dict | None = None, lin_state: dict | None = None, seed: int = 0):
    """LPIPS module; random backbone/linear weights where a state dict is not given (tests)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    features = backbone_features(net, backbone_state)[: LPIPS_TAPS[net][-1]]
    lins = [nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS[net]]
    if lin_state is not None:
        for k, lin in enumerate(lins):
            lin.weight.data.copy_(lin_state[f"lin{k}.model.1.weight"])
    else:
        for lin in lins:  # LPIPS weights are non-negative; keep random ones so too
            lin.weight.data.abs_()
    return _make_lpips_module(features, nn.ModuleList(lins), LPIPS_TAPS[net]).eval().requires_grad_(False)


class PairMetric:
    """A learned full-reference metric: `module(a, b)` on uint8 images mapped to [low, high]."""

    def __init__(self, module, device="cpu", low: float = 0.0, high: float = 1.0):
        self.module = module.to(device)
        self.device = device
        self.low, self.high = low, high

    def __call__(self, ref, dec, text=None) -> float:
        import torch

        _check_pair(ref, dec)
        scale = (self.high - self.low) / 255.0
        with torch.no_grad():
            a = _to_tensor(ref, self.device) * scale + self.low
            b = _to_tensor(dec, self.device) * scale + self.low
            return float(self.module(a, b)[0])


def LPIPSMetric(module, device="cpu") -> PairMetric:
    return PairMetric(module, device, -1.0, 1.0)  # LPIPS takes [-1, 1]


def DISTSMetric(module, device="cpu") -> PairMetric:
    return PairMetric(module, device, 0.0, 1.0)  # DISTS takes [0, 1]


# ---------------------------------------------------------------- DISTS

def build_dists(vgg_state: dict | None = None, alpha_beta: dict | None = None, seed: int = 0):
    """DISTS (Ding et al. 2020): VGG16 with L2 pooling instead of max pooling; per-channel structure
    and texture similarities of the input and the five stages, weighted by learned alpha/beta."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    feats = backbone_features("vgg", vgg_state)

    class L2Pool(nn.Module):
        def __init__(self, channels):
            super().__init__()
            win = torch.from_numpy(np.hanning(5)[1:-1]).float()
            k = win[:, None] * win[None, :]
            self.register_buffer("kernel", (k / k.sum()).expand(channels, 1, 3, 3).contiguous())

        def forward(self, x):
            y = F.conv2d(x * x, self.kernel, stride=2, padding=1, groups=x.shape[1])
            return (y + 1e-12).sqrt()

    # Stage boundaries in vgg16.features; the max-pool at 4, 9, 16, 23 is replaced by L2 pooling.
    stages = nn.ModuleList([
        nn.Sequential(*feats[0:4]),
        nn.Sequential(L2Pool(64), *feats[5:9]),
        nn.Sequential(L2Pool(128), *feats[10:16]),
        nn.Sequential(L2Pool(256), *feats[17:23]),
        nn.Sequential(L2Pool(512), *feats[24:30]),
    ])
    chns = (3, 64, 128, 256, 512, 512)
    if alpha_beta is not None:
        alpha, beta = alpha_beta["alpha"].float(), alpha_beta["beta"].float()
    else:
        alpha = torch.rand(1, sum(chns), 1, 1) * 0.02 + 0.09
        beta = torch.rand(1, sum(chns), 1, 1) * 0.02 + 0.09

    class _DISTS(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = stages
            self.register_buffer("alpha", alpha)
            self.register_buffer("beta", beta)
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def _feats(self, x):
            out = [x]  # the raw image is the first "stage" (3 channels)
            h = (x - self.mean) / self.std
            for stage in self.stages:
                h = stage(h)
                out.append(h)
            return out

        def forward(self, x, y):  # x, y in [0, 1]
            fx, fy = self._feats(x), self._feats(y)
            w = self.alpha.sum() + self.beta.sum()
            a = torch.split(self.alpha / w, chns, dim=1)
            b = torch.split(self.beta / w, chns, dim=1)
            s_struct, s_tex = 0.0, 0.0
            c = 1e-6
            for k in range(len(chns)):
                mx, my = fx[k].mean((2, 3), keepdim=True), fy[k].mean((2, 3), keepdim=True)
                s1 = (2 * mx * my + c) / (mx ** 2 + my ** 2 + c)
                vx = ((fx[k] - mx) ** 2).mean((2, 3), keepdim=True)
                vy = ((fy[k] - my) ** 2).mean((2, 3), keepdim=True)
                cov = (fx[k] * fy[k]).mean((2, 3), keepdim=True) - mx * my
                s2 = (2 * cov + c) / (vx + vy + c)
                s_struct = s_struct + (a[k] * s1).sum(1, keepdim=True)
                s_tex = s_tex + (b[k] * s2).sum(1, keepdim=True)
            return (1 - (s_struct + s_tex)).view(-1)

    return _DISTS().eval().requires_grad_(False)


# ---------------------------------------------------------------- FID / KID on patches

def extract_patches(img: np.ndarray, patch: int = 256) -> list[np.ndarray]:
    """HiFiC's FID/256 patching as implemented for MS-ILLM: a grid of non-overlapping patch x patch
    crops from the top-left corner (remainders dropped), then a second grid on the image with
    patch/2 pixels removed from the top and left."""
    out = []
    for off in (0, patch // 2):
        sub = img[off:, off:]
        rows, cols = sub.shape[0] // patch, sub.shape[1] // patch
        for r in range(rows):
            for c in range(cols):
                out.append(sub[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch])
    return out


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    from scipy import linalg

    if len(feats_a) < 2 or len(feats_b) < 2:
        raise MetricSkipped("FID needs at least 2 patches per set")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    sig_a = np.cov(feats_a.astype(np.float64), rowvar=False)
    sig_b = np.cov(feats_b.astype(np.float64), rowvar=False)
    import warnings

    with warnings.catch_warnings():
        # Few patches in many dimensions give a singular product; the result is still usable, and
        # the regularised retry below handles a non-finite one.
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sig_a @ sig_b)
    if not np.isfinite(covmean).all():
        # Near-singular product (few patches, 2048 dims): regularise as the reference FID code does.
        eps = np.eye(sig_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sig_a + eps) @ (sig_b + eps))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(sig_a) + np.trace(sig_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def kernel_distance(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and std over
    random subsets of min(subset_size, n) samples."""
    n = min(len(feats_a), len(feats_b))
    if n < 2:
        raise MetricSkipped("KID needs at least 2 patches per set")
    m = min(subset_size, n)
    d = feats_a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = feats_a[rng.choice(len(feats_a), m, replace=False)].astype(np.float64)
        y = feats_b[rng.choice(len(feats_b), m, replace=False)].astype(np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


class PatchFeatures:
    """Turns an image into the Inception features of its patches (one row per patch)."""

    def __init__(self, extractor: Callable, name: str, patch: int = 256, device="cpu", batch: int = 16):
        self.extractor = extractor  # uint8 tensor (N, 3, h, w) -> float tensor (N, D)
        self.name = name            # identifies cached features on disk
        self.patch = patch
        self.device = device
        self.batch = batch

    def __call__(self, img: np.ndarray) -> np.ndarray:
        import torch

        patches = extract_patches(img, self.patch)
        if not patches:
            return np.zeros((0, 0), np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(patches), self.batch):
                x = torch.from_numpy(np.stack(patches[i:i + self.batch])).permute(0, 3, 1, 2).contiguous()
                f = self.extractor(x.to(self.device))
                if isinstance(f, (tuple, list)):
                    f = f[0]
                out.append(f.float().cpu().numpy())
        return np.concatenate(out, 0)


def inception_extractor(weights_dir, device="cpu"):
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise MetricSkipped("torch-fidelity is not installed (pip install torch-fidelity)") from None
    try:
        path = find_file(INCEPTION_FILE, weights_dir)
    except WeightsNotFound as exc:
        raise MetricSkipped(str(exc)) from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return net.to(device).eval()


# ---------------------------------------------------------------- CLIP

class ClipEmbedder:
    """Image/text embeddings of a CLIP model (transformers CLIPModel), L2-normalised."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model, tokenize: Callable[[list[str]], dict], name: str, device="cpu"):
        self.model = model.to(device).eval()
        self.tokenize = tokenize
        self.name = name
        self.device = device
        self.size = int(model.config.vision_config.image_size)

    def _prep(self, img: np.ndarray):
        import torch
        from PIL import Image

        # CLIP's own preprocessing: bicubic resize of the shorter side, centre crop, normalise.
        h, w = img.shape[:2]
        s = self.size / min(h, w)
        pil = Image.fromarray(img).resize((max(self.size, round(w * s)), max(self.size, round(h * s))),
                                          Image.Resampling.BICUBIC)
        left, top = (pil.width - self.size) // 2, (pil.height - self.size) // 2
        arr = np.asarray(pil.crop((left, top, left + self.size, top + self.size)), np.float32) / 255.0
        t = torch.from_numpy((arr - self.MEAN) / self.STD).permute(2, 0, 1)[None].float()
        return t.to(self.device)

    @staticmethod
    def _unwrap(out):
        import torch

        return out if torch.is_tensor(out) else out.pooler_output

    def image(self, img: np.ndarray):
        import torch

        with torch.no_grad():
            e = self._unwrap(self.model.get_image_features(pixel_values=self._prep(img)))
        return torch.nn.functional.normalize(e.float(), dim=-1)[0]

    def text(self, text: str):
        import torch

        tok = {k: v.to(self.device) for k, v in self.tokenize([text]).items()}
        with torch.no_grad():
            e = self._unwrap(self.model.get_text_features(**tok))
        return torch.nn.functional.normalize(e.float(), dim=-1)[0]


def load_clip(name_or_path: str, device="cpu") -> ClipEmbedder:
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError:
        raise MetricSkipped("transformers is not installed") from None
    try:
        model = CLIPModel.from_pretrained(name_or_path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/... for a missing local model
        raise MetricSkipped(f"CLIP model {name_or_path!r} not available offline "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    # a loaded CLIPConfig holds a CLIPTextConfig (transformers types it as also dict or None)
    max_len = int(model.config.text_config.max_position_embeddings)  # type: ignore[union-attr]

    def tokenize(texts):
        # Descriptions longer than CLIP's window are truncated, as every CLIPScore implementation does.
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"))

    return ClipEmbedder(model, tokenize, name_or_path, device)


class ClipScoreMetric:
    needs_text = True

    def __init__(self, embedder: ClipEmbedder):
        self.embedder = embedder

    def __call__(self, ref, dec, text=None) -> float:
        if not text:
            raise MetricSkipped("no overall description for this image")
        cos = float(self.embedder.image(dec) @ self.embedder.text(text))
        return 100.0 * max(cos, 0.0)


class ClipI2IMetric:
    def __init__(self, embedder: ClipEmbedder):
        self.embedder = embedder

    def __call__(self, ref, dec, text=None) -> float:
        _check_pair(ref, dec)
        return float(self.embedder.image(ref) @ self.embedder.image(dec))


# ---------------------------------------------------------------- building the set

@dataclass
class MetricSuite:
    image: dict[str, Callable] = field(default_factory=dict)   # per-image metrics
    patch_features: PatchFeatures | None = None               # for FID / KID
    set_names: list[str] = field(default_factory=list)        # "fid", "kid" when available
    skipped: dict[str, str] = field(default_factory=dict)      # metric -> reason
    kid_subsets: int = 100

    @property
    def names(self) -> list[str]:
        return [n for n in ALL_METRICS if n in self.image or n in self.set_names]


def build_metrics(names: list[str], *, weights_dir=None, device: str = "cpu",
                  clip_model: str = "openai/clip-vit-large-patch14", fid_patch: int = 256) -> MetricSuite:
    """Build the requested metrics; any that cannot be built offline go to `skipped` with the reason."""
    suite = MetricSuite()
    builders: dict[str, Callable] = {
        "psnr": lambda: (lambda ref, dec, text=None: psnr(ref, dec)),
        "ms-ssim": lambda: (lambda ref, dec, text=None: ms_ssim(ref, dec)),
    }

    def lpips(net):
        backbone = ALEXNET_FILE if net == "alex" else VGG16_FILE
        try:
            bb = load_state_dict(find_file(backbone, weights_dir))
            lin = load_state_dict(lpips_lin_file(net, weights_dir))
        except WeightsNotFound as exc:
            raise MetricSkipped(str(exc)) from None
        return LPIPSMetric(build_lpips(net, bb, lin), device)

    def dists():
        try:
            vgg = load_state_dict(find_file(VGG16_FILE, weights_dir))
            ab = load_state_dict(dists_file(weights_dir))
        except WeightsNotFound as exc:
            raise MetricSkipped(str(exc)) from None
        return DISTSMetric(build_dists(vgg, ab), device)

    builders["lpips-alex"] = lambda: lpips("alex")
    builders["lpips-vgg"] = lambda: lpips("vgg")
    builders["dists"] = dists
    clip_cache: dict = {}

    def clip():
        if "e" not in clip_cache:
            try:
                clip_cache["e"] = load_clip(clip_model, device)
            except MetricSkipped as exc:
                clip_cache["e"] = exc
        if isinstance(clip_cache["e"], Exception):
            raise clip_cache["e"]
        return clip_cache["e"]

    builders["clip-score"] = lambda: ClipScoreMetric(clip())
    builders["clip-i2i"] = lambda: ClipI2IMetric(clip())

    for name in names:
        if name in SET_METRICS:
            if suite.patch_features is None and not any(n in suite.skipped for n in SET_METRICS):
                try:
                    ext = inception_extractor(weights_dir, device)
                    suite.patch_features = PatchFeatures(ext, f"inception-fid-p{fid_patch}", fid_patch, device)
                except MetricSkipped as exc:
                    for n in SET_METRICS:
                        if n in names:
                            suite.skipped[n] = str(exc)
            if suite.patch_features is not None:
                suite.set_names.append(name)
            continue
        try:
            suite.image[name] = builders[name]()
        except MetricSkipped as exc:
            suite.skipped[name] = str(exc)
    return suite
