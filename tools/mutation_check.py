"""Plant deliberate decoder bugs one at a time and check that the decoder tests catch each one.

Each mutation replaces one exact piece of source text in a copy of the `sedic` package (the
repository is never modified), then runs the decoder tests against the copy with `pytest -x`
(the file most likely to catch it first, so a caught mutation stops early). A mutation whose
text is not found is an error (the check must not pass by missing its target).

    python tools/mutation_check.py            # all mutations, prints the table, exit 1 if any survive
    python tools/mutation_check.py --list     # the table of mutations without running anything
    python tools/mutation_check.py -k cfg     # only mutations whose name contains "cfg"

The table is in docs/orag.md ("Mutation check").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECODER_TESTS = ("tests/test_orag_attention.py", "tests/test_conventions.py", "tests/test_pipeline_wiring.py",
                 "tests/test_orag.py", "tests/test_restoration.py", "tests/test_fused.py",
                 "tests/test_reference_decoder.py")


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str
    file: str        # under sedic/restoration/
    old: str
    new: str
    first: str       # the test file run first (the others follow)


MUTATIONS = [
    Mutation("sdpa-opposite-bias", "attention bias", "orag.py",
             "F.scaled_dot_product_attention(query, key, value, attn_mask=bias,",
             "F.scaled_dot_product_attention(query, key, value, attn_mask=-bias,", "test_orag_attention.py"),
    Mutation("uncond-row-biased", "attention bias", "orag.py",
             "rows = st.rows.to(device, dtype).view(-1, 1, 1, 1)",
             "rows = torch.ones_like(st.rows).to(device, dtype).view(-1, 1, 1, 1)", "test_orag_attention.py"),
    Mutation("range-max-only", "attention bias", "orag.py",
             "rng = (logits.amax(-1, keepdim=True) - logits.amin(-1, keepdim=True)).to(dtype)",
             "rng = logits.amax(-1, keepdim=True).to(dtype)", "test_orag_attention.py"),
    Mutation("sign-rule-2a-1", "mask geometry", "orag.py",
             "return torch.where(a > 0, a, torch.full_like(a, -1.0))",
             "return 2.0 * a - 1.0", "test_orag.py"),
    Mutation("sign-map-mirrored", "mask geometry", "orag.py",
             "sign = coverage_sign(a).flatten(2)",
             "sign = coverage_sign(a.flip(-1)).flatten(2)", "test_orag_attention.py"),
    Mutation("coverage-adaptive-pool", "mask geometry", "orag.py",
             "return F.avg_pool2d(m, f) / F.avg_pool2d(ones, f)",
             "return F.adaptive_avg_pool2d(mask.to(dtype), (-(-h // f), -(-w // f)))", "test_orag_attention.py"),
    Mutation("mask-flipped", "mask orientation", "pipeline.py",
             "t[0, 0, :grid[0], :grid[1]] = torch.from_numpy(m.copy())",
             "t[0, 0, :grid[0], :grid[1]] = torch.from_numpy(m[::-1].copy())", "test_pipeline_wiring.py"),
    Mutation("fused-uncond-sees-objects", "attention bias", "orag.py",
             "visible = (gain > 0) & (rows > 0) | ~st.object_keys",
             "visible = (gain > 0) | ~st.object_keys", "test_orag_attention.py"),
    Mutation("final-conditioned-on-reference", "stage wiring", "plan.py",
             'condition="reference" if st.final_condition == "reference" else "previous"',
             'condition="reference"', "test_pipeline_wiring.py"),
    Mutation("blend-inverted", "stage wiring (locality)", "sampler.py",
             "z = torch.where(blend_mask, z, keep)",
             "z = torch.where(blend_mask, keep, z)", "test_pipeline_wiring.py"),
    Mutation("start-strength-ignored", "start strength and noise", "sampler.py",
             "top = int(round(start_strength * (num_train_timesteps - 1)))",
             "top = num_train_timesteps - 1", "test_conventions.py"),
    Mutation("one-step-at-zero", "start strength and noise", "sampler.py",
             "        return [top]\n", "        return [0]\n", "test_conventions.py"),
    Mutation("start-not-noised", "start strength and noise", "sampler.py",
             "z = scheduler.add_noise(z0, noise, torch.tensor([timesteps[0]]))",
             "z = z0.clone()", "test_conventions.py"),
    Mutation("cfg-formula", "CFG", "sampler.py",
             "return eps_u + spec.cfg * (eps_c - eps_u)",
             "return eps_c + spec.cfg * (eps_c - eps_u)", "test_conventions.py"),
    Mutation("cfg-rows-swapped", "CFG", "sampler.py",
             "eps_u, eps_c = eps.chunk(2)", "eps_c, eps_u = eps.chunk(2)", "test_conventions.py"),
    Mutation("control-residuals-times-0", "ControlNet wiring", "sampler.py",
             "conditioning_scale=self.backbone.control_scale", "conditioning_scale=0.0 * self.backbone.control_scale",
             "test_conventions.py"),
    Mutation("mid-residual-dropped", "ControlNet wiring", "sampler.py",
             "mid_block_additional_residual=mid, return_dict=False)",
             "mid_block_additional_residual=mid * 0, return_dict=False)", "test_conventions.py"),
    Mutation("vae-decode-without-factor", "VAE scaling", "backbone.py",
             "/ self.latent_scale).sample", ").sample", "test_conventions.py"),
    Mutation("vae-encode-without-factor", "VAE scaling", "backbone.py",
             "return posterior.mode() * self.latent_scale", "return posterior.mode()", "test_conventions.py"),
    Mutation("text-before-final-layer-norm", "text layer", "backbone.py",
             "return te(ids.to(te.device))[0]",
             "return te(ids.to(te.device), output_hidden_states=True).hidden_states[-1]", "test_conventions.py"),
    Mutation("colour-fix-keeps-output-colours", "colour fix", "pipeline.py",
             "band = _low_high(ref[..., a:b, :])[0] + _low_high(out[..., a:b, :])[1]",
             "band = _low_high(out[..., a:b, :])[0] + _low_high(out[..., a:b, :])[1]",
             "test_restoration.py"),
    Mutation("tile-control-crop-misaligned", "tiling", "sampler.py",
             "ctrl = spec.control[..., y0 * f:(y0 + th) * f, x0 * f:(x0 + tw) * f]",
             "ctrl = spec.control[..., :th * f, :tw * f]", "test_restoration.py"),
    Mutation("tile-blend-unweighted", "tiling", "sampler.py",
             "acc[sl] += eps * wt", "acc[sl] += eps", "test_restoration.py"),
    Mutation("same-noise-every-stage", "seeds", "pipeline.py",
             "np.random.SeedSequence([int(seed) % 2 ** 64, stage])",
             "np.random.SeedSequence([int(seed) % 2 ** 64, 0])", "test_pipeline_wiring.py"),
    Mutation("step-noise-unseeded", "seeds", "sampler.py",
             "z = scheduler.step(eps, t, z, generator=generator).prev_sample",
             "z = scheduler.step(eps, t, z).prev_sample", "test_conventions.py"),
]


def _mutated_copy(m: Mutation, root: Path) -> Path:
    shutil.copytree(REPO / "sedic", root / "sedic", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "sedic" / "restoration" / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutation {m.name}: its text occurs {text.count(m.old)} times in {m.file} (need 1)")
    path.write_text(text.replace(m.old, m.new))
    return root


def run(m: Mutation, timeout: float) -> tuple[bool, str, float]:
    """(caught, the first failing test or why not, seconds)."""
    tests = [f"tests/{m.first}"] + [t for t in DECODER_TESTS if not t.endswith(m.first)]
    with tempfile.TemporaryDirectory(prefix="sedic-mutant-") as tmp:
        root = _mutated_copy(m, Path(tmp))
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(root), *inherited]))
        # run from the copy: `python -m` puts the working directory first on sys.path, so the
        # mutated package is the one imported
        where = subprocess.run([sys.executable, "-c", "import sedic; print(sedic.__file__)"], cwd=root, env=env,
                               capture_output=True, text=True, check=False).stdout.strip()
        if not where.startswith(str(root)):
            raise SystemExit(f"mutation {m.name}: the copy is not what Python imports ({where or 'nothing'})")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:logging",
               "--rootdir", str(REPO), *[str(REPO / t) for t in tests if (REPO / t).exists()]]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s", time.monotonic() - start
        seconds = time.monotonic() - start
        failed = [line.split(" ", 2)[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        if proc.returncode == 0:
            return False, "all decoder tests passed", seconds
        return True, (failed[0].split("/tests/")[-1] if failed else f"pytest exit {proc.returncode}"), seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this")
    ap.add_argument("--list", action="store_true", help="print the mutations, run nothing")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="mutations run at once (one torch thread each)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:52s} {m.kind:26s} {m.file}")
        return 0
    survived = 0
    print(f"{'mutation':52s} {'class':26s} result", flush=True)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = pool.map(lambda m: (m, *run(m, args.timeout)), chosen)
    for m, caught, detail, seconds in results:
        survived += not caught
        print(f"{m.name:52s} {m.kind:26s} {'caught' if caught else 'SURVIVED'} by {detail} ({seconds:.0f} s)"
              if caught else f"{m.name:52s} {m.kind:26s} SURVIVED: {detail} ({seconds:.0f} s)", flush=True)
    print(f"{len(chosen) - survived}/{len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
