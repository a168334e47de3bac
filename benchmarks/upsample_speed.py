"""Speed of the normative upsampler against Pillow's LANCZOS at 12 MP and 45 MP output.

    python benchmarks/upsample_speed.py

Target (issue 17): at most about 2x Pillow's time at 4000 x 3000, bounded memory at 8192 x 5464.
Prints, for each case, Pillow's and our best time of 3 and whether the pixels are identical.
"""
import resource
import time

import numpy as np
from PIL import Image

from sedic.streams.lanczos import resize

CASES = [((500, 375), (4000, 3000)), ((1600, 1200), (4000, 3000)), ((2667, 2000), (4000, 3000)),
         ((1024, 683), (8192, 5464)), ((5461, 3643), (8192, 5464))]


def best(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    rng = np.random.default_rng(0)
    for (w, h), (W, H) in CASES:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        # the loop's values bound as defaults (B023); best() calls them before the next iteration
        tp, ref = best(lambda img=img, W=W, H=H: np.asarray(Image.fromarray(img).resize((W, H),
                                                                                       Image.Resampling.LANCZOS)))
        to, out = best(lambda img=img, W=W, H=H: resize(img, W, H))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{w}x{h} -> {W}x{H}: pillow {tp:.3f} s, ours {to:.3f} s ({to / tp:.2f}x), "
              f"identical {np.array_equal(ref, out)}, peak RSS so far {rss:.0f} MiB")


if __name__ == "__main__":
    main()
