"""Load test of `sedic serve` on 127.0.0.1: N concurrent clients for a bounded time.

Each client loops: POST /v1/compress (a Kodak crop with one described, masked object), then
POST /v1/decompress with stages=0 (the preview). Every answer is checked against the Python API
run in this process: the file must be byte-identical to sedic.compress with the same options (the
CLI's bytes, see tests/test_server.py) and the PNG must equal sedic.decompress(file, stages=0).
A 503 is retried after its Retry-After, as a client should; latency counts the retries. Reports
requests/s, p50/p99 latency, errors, wrong answers, the server's resident memory at request 100
and request 1,000, /v1/health latency (probed five times a second during the load) and whether a
slot really freed within each 503's Retry-After. A second phase starts a server with a small queue, sends more
full decodes than it admits at once and checks that the extra ones get 503 + Retry-After quickly
and that every request gets an answer (none hangs).

    python benchmarks/serve_load.py --clients 16 --duration 180 --json serve_load.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import sedic
from sedic.semantics import SemanticObject, Semantics

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(queue: int, extra=()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SEDIC_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "sedic", "serve", "--profile", "test", "--port", str(port),
                             "--queue", str(queue), "--log-level", "warning", *extra],
                            env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sedic serve exited with {proc.returncode}")
        try:
            models = httpx.get(base + "/v1/health", timeout=2).json()["models"]
        except httpx.TransportError:
            models = "starting"
        if models in ("ready", "not loaded"):
            return proc, base
        if models not in ("starting", "loading"):
            proc.kill()
            raise SystemExit(f"sedic serve could not load its models: {models}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("sedic serve did not become ready in 180 s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def workload(crop: tuple[int, int], bpp: float):
    """The upload (image PNG, semantics JSON, one mask PNG) and the answers the API gives for it."""
    image = np.asarray(Image.open(REPO / "examples" / "kodim23.png").convert("RGB"))
    mask_full = np.asarray(Image.open(REPO / "examples" / "semantics" / "kodim23.mask1.png").convert("L")) >= 128
    h, w = crop
    top, left = 150, 420  # the scarlet macaw's head: the mask covers part of the crop
    image, mask = image[top:top + h, left:left + w].copy(), mask_full[top:top + h, left:left + w].copy()
    semantics = Semantics("two macaw parrots against green leaves",
                          [SemanticObject("scarlet macaw", "red head, ivory and black beak", mask)])
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    mbuf = io.BytesIO()
    Image.fromarray(mask).save(mbuf, "PNG")
    doc = {"overall": semantics.overall,
           "objects": [{"name": "scarlet macaw", "description": semantics.objects[0].description, "mask": "m.png"}]}
    files = [("image", ("crop.png", buf.getvalue(), "image/png")),
             ("semantics", ("s.json", json.dumps(doc).encode(), "application/json")),
             ("masks", ("m.png", mbuf.getvalue(), "image/png"))]
    options = {"bpp": str(bpp), "profile": "test", "seed": "3"}
    expected_file = sedic.compress(image, bpp=bpp, semantics=semantics, analyze=False, profile="test", seed=3)
    expected_preview = sedic.decompress(expected_file, stages=0)
    return files, options, expected_file, expected_preview


class Stats:
    def __init__(self, pid: int | None):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.wrong = 0
        self.pid = pid
        self.rss: dict[int, float] = {}
        self.done_at: list[float] = []           # when each answered request ended (a slot freed)
        self.refused: list[tuple[float, int]] = []  # (when, Retry-After) of each 503
        self.health_ms: list[float] = []
        self.unfinished = 0  # still being told to retry when the run ended

    def record(self, seconds: float, error: str | None = None, wrong: bool = False) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1
            self.wrong += wrong
            n = len(self.latencies)
            if self.pid and n in (100, 250, 500, 750, 1000, 1500, 2000):
                self.rss[n] = rss_mib(self.pid)


def timed_post(http, stats: Stats, what: str, path: str, stop: float = float("inf"), **request):
    """POST and time it; a 503 is retried after its Retry-After (as a client should), a transport
    error or another non-200 answer is recorded as an error (None back)."""
    t = time.monotonic()
    while True:
        try:
            r = http.post(path, **request)
        except httpx.HTTPError as exc:
            stats.record(time.monotonic() - t, type(exc).__name__)
            return None, t
        if r.status_code != 503 or "retry-after" not in r.headers:
            break
        if time.monotonic() > stop:  # refused at the end of the run: not an error, just not done
            with stats.lock:
                stats.unfinished += 1
            return None, t
        with stats.lock:
            stats.refused.append((time.monotonic(), int(r.headers["retry-after"])))
        time.sleep(int(r.headers["retry-after"]))
    with stats.lock:
        stats.done_at.append(time.monotonic())
    if r.status_code != 200:
        stats.record(time.monotonic() - t, f"{what} {r.status_code}")
        return None, t
    return r, t


def client_loop(base: str, work, stats: Stats, stop: float) -> None:
    files, options, expected_file, expected_preview = work
    with httpx.Client(base_url=base, timeout=120) as http:
        while time.monotonic() < stop:
            r, t = timed_post(http, stats, "compress", "/v1/compress", stop, files=files, data=options)
            if r is None:
                continue
            stats.record(time.monotonic() - t, wrong=r.content != expected_file)
            d, t = timed_post(http, stats, "decompress", "/v1/decompress", stop,
                              files={"file": ("c.sedic", r.content)}, data={"stages": "0"})
            if d is None:
                continue
            preview = np.asarray(Image.open(io.BytesIO(d.content)).convert("RGB"))
            stats.record(time.monotonic() - t, wrong=not np.array_equal(preview, expected_preview))


def load_phase(args, work) -> dict:
    proc, base = start_server(args.queue, ["--no-warm"]) if not args.url else (None, args.url)
    stats = Stats(proc.pid if proc else None)
    try:
        start = time.monotonic()
        stop = start + args.duration
        threads = [threading.Thread(target=client_loop, args=(base, work, stats, stop)) for _ in range(args.clients)]
        threads.append(threading.Thread(target=health_probe, args=(base, stats, stop)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        health = httpx.get(base + "/v1/health", timeout=10).json()
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    lat = sorted(stats.latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    # the goal's window is request 100 to 1,000; a shorter run reports up to its last sample
    first = 100 if 100 in stats.rss else None
    last = 1000 if 1000 in stats.rss else max(stats.rss, default=None)
    return {
        "clients": args.clients, "duration_s": round(elapsed, 1), "requests": len(lat),
        "requests_per_s": round(len(lat) / elapsed, 2), "p50_ms": round(1000 * q[49], 1),
        "p99_ms": round(1000 * q[98], 1), "errors": sum(stats.errors.values()), "error_kinds": stats.errors,
        "wrong": stats.wrong, "rss_mib": {str(k): round(v, 1) for k, v in sorted(stats.rss.items())},
        "rss_growth_pct": round(100 * (stats.rss[last] / stats.rss[first] - 1), 2) if first and last else None,
        "rss_window": f"request {first} to {last}" if first and last else None,
        "server_queue": health["queue"],
        "health_ms": {"probes": len(stats.health_ms),
                      "p50": round(statistics.median(stats.health_ms), 1) if stats.health_ms else None,
                      "p95": round(statistics.quantiles(stats.health_ms, n=20)[18], 1)
                      if len(stats.health_ms) >= 2 else None},
        "retry_after": retry_after_honesty(stats), "unfinished_at_stop": stats.unfinished,
    }


def health_probe(base: str, stats: Stats, stop: float) -> None:
    """GET /v1/health five times a second during the load: it must not wait behind work."""
    with httpx.Client(base_url=base, timeout=60) as http:
        while time.monotonic() < stop:
            t = time.monotonic()
            http.get("/v1/health")
            stats.health_ms.append(1000 * (time.monotonic() - t))
            time.sleep(0.2)


def retry_after_honesty(stats: Stats) -> dict:
    """For each 503: did a slot free (any request end) within the Retry-After it named?"""
    ends = sorted(stats.done_at)
    waits = []
    for when, promised in stats.refused:
        later = [e for e in ends if e > when]
        if later:
            waits.append((promised, later[0] - when))
    return {"refused": len(stats.refused),
            "retry_after_s_median": statistics.median([p for p, _ in waits]) if waits else None,
            "retry_after_s_max": max((p for p, _ in waits), default=None),
            "slot_freed_s_median": round(statistics.median([w for _, w in waits]), 2) if waits else None,
            "slot_freed_within_retry_after_pct": round(100 * sum(w <= p for p, w in waits) / len(waits), 1)
            if waits else None}


def full_queue_phase(args, work) -> dict:
    """More full decodes than a queue of 2 admits: the rest must get 503 + Retry-After, none may hang."""
    files, options, _, _ = work
    proc, base = start_server(2)
    try:
        data = httpx.post(base + "/v1/compress", files=files, data={**options, "object_steps": "2",
                                                                    "final_steps": "2"}, timeout=60).content
        results = []

        def one():
            t = time.monotonic()
            try:
                r = httpx.post(base + "/v1/decompress", files={"file": ("c.sedic", data)}, timeout=args.hang_s)
                results.append((r.status_code, r.headers.get("retry-after"), time.monotonic() - t))
            except httpx.TimeoutException:
                results.append(("hang", None, time.monotonic() - t))

        threads = [threading.Thread(target=one) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    busy = [r for r in results if r[0] == 503]
    return {
        "queue": 2, "requests": len(results),
        "ok": sum(r[0] == 200 for r in results), "busy_503": len(busy),
        "busy_with_retry_after": sum(r[1] is not None for r in busy),
        "busy_max_ms": round(1000 * max((r[2] for r in busy), default=0), 1),
        "hung": sum(r[0] == "hang" for r in results),
        "other": sorted({str(r[0]) for r in results} - {"200", "503"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=120, help="seconds of load")
    parser.add_argument("--queue", type=int, default=32, help="the server's --queue in the load phase")
    parser.add_argument("--crop", default="64x96", help="HxW of the Kodak crop each client compresses")
    parser.add_argument("--bpp", type=float, default=0.3, help="rate (a small crop needs more than a photo: "
                        "the texts and mask are a fixed cost)")
    parser.add_argument("--url", help="an already running server (no RSS then); default: start one")
    parser.add_argument("--hang-s", type=float, default=120, help="a request without an answer this long hangs")
    parser.add_argument("--skip-full-queue", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    h, w = (int(v) for v in args.crop.split("x"))
    work = workload((h, w), args.bpp)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
               "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
               "crop": args.crop, "bpp": args.bpp, "load": load_phase(args, work)}
    print(json.dumps(results["load"], indent=2), flush=True)
    if not args.skip_full_queue:
        results["full_queue"] = full_queue_phase(args, work)
        print(json.dumps(results["full_queue"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
