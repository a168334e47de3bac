"""The parts of a 12 MP decode with profile test, timed one by one (docs/performance.md):
tiled VAE encode and decode of a 1024x768 piece (scaled by area to 12 MP) and the wavelet colour
fix at 12 MP. CPU, float32, two threads.

    python benchmarks/decode_parts.py
"""
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sedic.config import get_profile  # noqa: E402
from sedic.restoration.pipeline import color_fix, get_backbone  # noqa: E402

torch.set_num_threads(2)
st = get_profile('test').decoder
bb = get_backbone(st, torch.device('cpu'), torch.float32)
vae = bb.vae
print('vae tile_sample_min_size', getattr(vae, 'tile_sample_min_size', None),
      'tile_latent_min_size', getattr(vae, 'tile_latent_min_size', None),
      'overlap', getattr(vae, 'tile_overlap_factor', None), flush=True)
W, H = 4240, 2832  # 12 MP
def t(label, fn, scale=1.0):
    c = time.process_time()
    w = time.perf_counter()
    out = fn()
    print(f"{label}: wall {time.perf_counter()-w:.2f} s, cpu {time.process_time()-c:.2f} s, x{scale:.1f} -> "
          f"est. wall {(time.perf_counter()-w)*scale:.0f} s at 12 MP; "
          f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB", flush=True)
    return out
cw, ch = 1024, 768
scale = (W * H) / (cw * ch)
x = torch.rand(1, 3, ch, cw) * 2 - 1
vae.enable_tiling()
with torch.no_grad():
    z = t(f'VAE encode tiled {cw}x{ch}', lambda: bb.encode_image(x), scale)
    out = t(f'VAE decode tiled {cw}x{ch}', lambda: bb.decode_latent(z), scale)
    vae.disable_tiling()
    t(f'VAE encode untiled {cw}x{ch}', lambda: bb.encode_image(x), scale)
    t(f'VAE decode untiled {cw}x{ch}', lambda: bb.decode_latent(z), scale)
    big = torch.rand(1, 3, H, W) * 2 - 1
    t('colour fix wavelet at 12 MP', lambda: color_fix(big, big.clone(), 'wavelet'))
