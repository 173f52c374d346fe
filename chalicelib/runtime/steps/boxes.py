"""The ``boxes`` post step at runtime: decode, threshold, suppress (NMS), map back to the image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.steps.boxes import BoxesArgs, BoxesParams, BoxesPlan
from chalicelib.runtime.steps.base import StepCall


def _iou(box: npt.NDArray[np.float64], others: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    iou: npt.NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def nms(
    boxes: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    classes: npt.NDArray[np.int64],
    iou: float,
) -> list[int]:
    """Greedy non-maximum suppression per class: indices kept, best score first (ties: first index)."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for rank, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(int(i))
        rest = order[rank + 1 :]
        rest = rest[(~suppressed[rest]) & (classes[rest] == classes[i])]
        if len(rest):
            suppressed[rest[_iou(boxes[i], boxes[rest]) > iou]] = True
    return kept


class BoxesRun:
    """Detector outputs -> per image ``[{box: [x1, y1, x2, y2], label, score}]`` best first: decoded to
    corners, scaled when normalized, thresholded, suppressed per class, capped, and mapped back to the
    request image's pixels through the image step's resize (when the request is an image)."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> BoxesRun:
        """Built from the arguments the config file records (``BoxesArgs``)."""
        a = BoxesArgs.model_validate(args)
        return cls(a.plan(), a.params, a.labels)

    def __init__(self, plan: BoxesPlan, params: BoxesParams, labels: tuple[str, ...] | None) -> None:
        self.plan = plan
        self.p = params
        self.labels = labels

    def _batch(self, outputs: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
        """Per image: boxes [N, 4] (as given), scores [N], class indices [N]. Outputs without a batch
        axis ([N, 4], [N], [N, classes]) are one image."""
        plan = self.plan
        raw = np.asarray(outputs[plan.boxes], dtype=np.float64)
        batched = raw.ndim == 3
        if not batched:
            raw = raw[None]
        if raw.ndim != 3:
            raise ValueError(f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [batch, N, 4+]")
        if plan.scores is None:  # combined: [B, N, 4 + classes]
            if raw.shape[2] < 5:
                raise ValueError(
                    f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [.., N, 4 + classes]"
                )
            boxes, tail = raw[:, :, :4], raw[:, :, 4:]
            if tail.shape[2] == 1:
                return [(b, t[:, 0], np.zeros(len(t), np.int64)) for b, t in zip(boxes, tail, strict=True)]
            return [(b, t.max(axis=1), t.argmax(axis=1)) for b, t in zip(boxes, tail, strict=True)]
        if raw.shape[2] != 4:
            raise ValueError(f"output {plan.boxes!r} has shape {list(raw.shape)}, expected [.., N, 4]")
        scores = np.asarray(outputs[plan.scores], dtype=np.float64)
        scores = scores if batched else scores[None]
        classes = None
        if plan.classes is not None:
            classes = np.asarray(outputs[plan.classes]).astype(np.int64)
            classes = classes if batched else classes[None]
        if scores.shape[0] != raw.shape[0] or (classes is not None and classes.shape[0] != raw.shape[0]):
            raise ValueError(f"{raw.shape[0]} images of boxes but scores or classes for another number")
        out = []
        for i, b in enumerate(raw):
            s = scores[i]
            if s.ndim == 2:  # per-class scores
                best, cls = s.max(axis=1), s.argmax(axis=1)
            else:
                best = s.reshape(-1)
                cls = classes[i].reshape(-1) if classes is not None else np.zeros(len(best), np.int64)
            if not len(best) == len(cls) == len(b):
                raise ValueError(f"{len(b)} boxes but {len(best)} scores and {len(cls)} classes")
            out.append((b, best, cls))
        return out

    def _corners(self, boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.p.format == "xyxy":
            return boxes.copy()
        out = np.empty_like(boxes)
        if self.p.format == "xywh":
            out[:, :2] = boxes[:, :2]
            out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
        else:  # cxcywh
            out[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
            out[:, 2:] = boxes[:, :2] + boxes[:, 2:] / 2
        return out

    def _label(self, index: int) -> str:
        if self.labels is None:
            return str(index)
        if not 0 <= index < len(self.labels):
            raise ValueError(f"class index {index} is out of range for {len(self.labels)} labels")
        return self.labels[index]

    def __call__(self, outputs: Mapping[str, Any], inv: StepCall | None = None) -> list[list[dict[str, Any]]]:
        geometry = inv.geometry if inv is not None else None
        rows = []
        for raw, scores, classes in self._batch(outputs):
            keep = np.flatnonzero(np.isfinite(scores) & (scores >= self.p.score_threshold))
            boxes = self._corners(raw[keep])
            scores, classes = scores[keep], classes[keep]
            finite = np.all(np.isfinite(boxes), axis=1)
            boxes, scores, classes = boxes[finite], scores[finite], classes[finite]
            if self.p.iou_threshold is not None:
                chosen = nms(boxes, scores, classes, self.p.iou_threshold)
            else:
                chosen = [int(i) for i in np.argsort(-scores, kind="stable")]
            chosen = chosen[: self.p.max_detections]
            boxes, scores, classes = boxes[chosen], scores[chosen], classes[chosen]
            if self.p.normalized and geometry is not None:
                boxes = boxes * np.asarray([geometry.model_width, geometry.model_height] * 2, np.float64)
            if geometry is not None:
                boxes = geometry.to_source(boxes)
            rows.append(
                [
                    {
                        "box": [round(float(c), 2) for c in box],
                        "label": self._label(int(cls)),
                        "score": float(score),
                    }
                    for box, score, cls in zip(boxes, scores, classes, strict=True)
                ]
            )
        return rows
