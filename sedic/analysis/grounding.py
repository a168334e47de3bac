"""The paper's grounding step: Grounding DINO boxes per object name, SAM masks per box, one merged
full-resolution mask per name."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .settings import AnalysisSettings

log = logging.getLogger(__name__)

MAX_BOXES_PER_NAME = 8   # the best-scoring boxes of a name are kept; more add nothing but work
DETECT_BATCH = 4         # names per Grounding DINO forward pass (memory bound on large images)
SAM_BOX_BATCH = 32


class Grounder:
    def __init__(self, detector, det_processor, segmenter, seg_processor, settings: AnalysisSettings):
        self.detector, self.det_processor = detector, det_processor
        self.segmenter, self.seg_processor = segmenter, seg_processor
        self.settings = settings

    def boxes(self, image: Image.Image, names: list[str]) -> list[np.ndarray]:
        """For each name, an (n, 4) array of xyxy boxes in image pixels, best score first.

        Each name is its own text query (a batch item of its own), so a box belongs to exactly
        one name; one query with all names would need fuzzy token-span label matching."""
        import torch

        dev, dtype = self.detector.device, self.detector.dtype
        result = []
        for start in range(0, len(names), DETECT_BATCH):
            chunk = names[start:start + DETECT_BATCH]
            # Grounding DINO's query syntax: lower-case phrases each ending with '.'.
            inputs = self.det_processor(images=[image] * len(chunk), text=[f"{n}." for n in chunk],
                                        return_tensors="pt", padding=True).to(dev)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                outputs = self.detector(**inputs)
            # Post-processing in float32: sigmoid thresholds compared in bf16 can flip.
            outputs.logits = outputs.logits.float()
            outputs.pred_boxes = outputs.pred_boxes.float()
            found = self.det_processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.settings.box_threshold,
                text_threshold=self.settings.text_threshold,
                target_sizes=[(image.height, image.width)] * len(chunk))
            for item in found:
                scores = item["scores"].float().cpu().numpy()
                boxes = item["boxes"].float().cpu().numpy().reshape(-1, 4)
                order = np.argsort(-scores, kind="stable")[:MAX_BOXES_PER_NAME]
                boxes = boxes[order]
                boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.width)
                boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.height)
                keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
                result.append(boxes[keep])
        return result

    def segment(self, image: Image.Image, boxes: np.ndarray) -> np.ndarray:
        """(n, H, W) bool masks, one per box, at full image resolution."""
        import torch

        if len(boxes) == 0:
            return np.zeros((0, image.height, image.width), dtype=bool)
        model, proc = self.segmenter, self.seg_processor
        dev, dtype = model.device, model.dtype
        # One preprocessing for all boxes (the processor rescales them to its input size); the
        # image embedding is computed once and shared by all boxes.
        inputs = proc(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
        kwargs = {}
        if "reshaped_input_sizes" in inputs:  # SAM; SAM 2's post-processing does not take it
            kwargs["reshaped_input_sizes"] = inputs["reshaped_input_sizes"]
        with torch.inference_mode():
            embeddings = model.get_image_embeddings(inputs["pixel_values"].to(dev, dtype))
        out = []
        for start in range(0, len(boxes), SAM_BOX_BATCH):
            chunk = inputs["input_boxes"][:, start:start + SAM_BOX_BATCH].to(dev, dtype)
            with torch.inference_mode():
                pred = model(image_embeddings=embeddings, input_boxes=chunk, multimask_output=False)
            masks = proc.post_process_masks(pred.pred_masks.float().cpu(), inputs["original_sizes"], **kwargs)
            out.append(masks[0][:, 0].numpy().astype(bool))
        return np.concatenate(out, axis=0)

    def masks(self, image: np.ndarray, names: list[str]) -> list[np.ndarray | None]:
        """For each name, the union of the masks of its boxes, or None when nothing was found."""
        pil = Image.fromarray(np.ascontiguousarray(image), "RGB")
        per_name = self.boxes(pil, names)
        counts = [len(b) for b in per_name]
        all_boxes = np.concatenate(per_name, axis=0) if sum(counts) else np.zeros((0, 4), np.float32)
        all_masks = self.segment(pil, all_boxes)
        result: list[np.ndarray | None] = []
        at = 0
        for name, n in zip(names, counts, strict=True):
            if n == 0:
                result.append(None)
            else:
                merged = all_masks[at:at + n].any(axis=0)  # several boxes of one name: union
                result.append(merged)
                log.info("%r: %d box(es), mask covers %.1f%%", name, n, 100.0 * merged.mean())
            at += n
        return result
