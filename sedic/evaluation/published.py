"""Peers' published Kodak points, from the table in shared/docs/sedic-reference.md.

Each is a dataset mean as published by its authors' result files (named in `source`); they are
drawn as markers on our plots, never mixed into our own tables. The table does not say which
LPIPS backbone each source used; we draw their LPIPS on the LPIPS-AlexNet plot (the common
choice in these repositories) and say so in the legend.
"""

from __future__ import annotations

PUBLISHED_KODAK = [
    {"system": "VVC intra (QP 52)", "bpp": 0.0205, "lpips": 0.569, "dists": 0.321, "psnr": 24.02,
     "source": "DiffEIC repository, indicators/results.xlsx"},
    {"system": "PerCo", "bpp": 0.0324, "lpips": 0.297, "dists": 0.161, "psnr": 19.53,
     "source": "DiffEIC repository, indicators/results.xlsx"},
    {"system": "DiffEIC (50 steps)", "bpp": 0.0201, "lpips": 0.319, "dists": 0.164, "psnr": 19.57,
     "source": "DiffEIC repository, indicators/results.xlsx"},
    {"system": "RDEIC (5 steps)", "bpp": 0.0238, "lpips": 0.203, "dists": 0.141, "psnr": 22.21,
     "source": "DiffEIC repository, indicators/results.xlsx"},
    {"system": "StableCodec (one step)", "bpp": 0.0250, "lpips": 0.182, "dists": 0.098, "psnr": 22.63,
     "source": "StableCodec repository, results/results.txt"},
    {"system": "MS-ILLM q1", "bpp": 0.0443, "lpips": 0.158, "dists": 0.135, "psnr": 24.73,
     "source": "NeuralCompression projects/illm results.csv"},
]

# Our metric name -> the column of the published table it is compared with.
PUBLISHED_COLUMN = {"psnr": "psnr", "lpips-alex": "lpips", "dists": "dists"}


def published_points(metric: str) -> list[dict]:
    col = PUBLISHED_COLUMN.get(metric)
    if col is None:
        return []
    return [{"system": p["system"], "bpp": p["bpp"], "value": p[col], "source": p["source"]}
            for p in PUBLISHED_KODAK if p.get(col) is not None]
