"""Rasterise the hand-drawn object outlines of examples/semantics/*.json into their mask PNGs.

The outlines (polygons and ellipses in pixel coordinates of the 768x512 Kodak images) were drawn by
hand for these examples; real masks come from `sedic analyze` (Grounding DINO + SAM).
Run: python examples/semantics/make_masks.py
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent

OUTLINES = {
    "kodim21": [
        [("polygon", [(330, 70), (362, 70), (372, 120), (380, 310), (316, 310), (322, 120)])],
        [("polygon", [(30, 230), (60, 195), (120, 185), (170, 200), (200, 230), (240, 240), (240, 300), (30, 300)])],
        [("polygon", [(0, 300), (200, 300), (420, 300), (500, 340), (560, 370), (480, 420), (300, 440),
                      (150, 470), (0, 490)]),
         ("polygon", [(560, 330), (640, 320), (740, 350), (768, 400), (700, 430), (600, 420)])],
    ],
    "kodim23": [
        [("polygon", [(70, 230), (110, 180), (170, 175), (200, 210), (210, 280), (260, 380), (320, 440),
                      (390, 512), (130, 512), (150, 400), (120, 300), (80, 290)])],
        [("polygon", [(410, 150), (460, 115), (530, 110), (570, 150), (600, 230), (680, 300), (740, 380),
                      (768, 512), (470, 512), (460, 400), (440, 300), (400, 240)])],
    ],
    "kodim03": [
        [("ellipse", (80, 78, 300, 300))],
        [("ellipse", (300, 170, 440, 350))],
        [("ellipse", (455, 225, 565, 380))],
    ],
}


def main() -> None:
    for stem, objects in OUTLINES.items():
        spec = json.loads((HERE / f"{stem}.json").read_text())
        assert len(spec["objects"]) == len(objects), stem
        for obj, shapes in zip(spec["objects"], objects, strict=True):
            mask = Image.new("1", (768, 512), 0)
            draw = ImageDraw.Draw(mask)
            for kind, coords in shapes:
                getattr(draw, kind)(coords, fill=1)
            mask.save(HERE / obj["mask"], optimize=True)


if __name__ == "__main__":
    main()
