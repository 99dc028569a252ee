"""The prediction loop over image files: decode, preprocess, batch, run a `Predictor`
(`predictors.py` loads one), top-k, write.

Images are read and preprocessed in a thread pool while the model runs, in batches
(`nextvit.images.ImageReader`); an unreadable or too large image stops the run with its name, or
with `skip_corrupt` is left out and counted. Results are written as they come (CSV or JSON lines)
to a hidden partial file that takes its name only when the run completes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..images import MAX_IMAGE_PIXELS, ImageFileError, ImageReader
from .predictors import Predictor

__all__ = ["Prediction", "PredictionSummary", "softmax_topk", "predict_images", "ResultWriter", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("csv", "jsonl")


@dataclass
class Prediction:
    path: Path
    indices: list[int]
    probabilities: list[float]
    names: list[str]

    def as_dict(self) -> dict:
        return dict(
            path=str(self.path),
            topk=[
                dict(rank=r + 1, index=i, name=n, probability=round(p, 6))
                for r, (i, n, p) in enumerate(zip(self.indices, self.names, self.probabilities))
            ],
        )


@dataclass
class PredictionSummary:
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole loop: decoding, preprocessing and the model
    model_seconds: float = 0.0  # time inside the model calls

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def softmax_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k class indices and softmax probabilities per row, best first (in float64, so that
    probabilities of different runtimes compare to well below 1e-4)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    k = min(k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(p, order, axis=1)


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_images(
    predictor: Predictor,
    images: Sequence[Path],
    *,
    batch_size: int = 16,
    topk: int = 5,
    skip_corrupt: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    workers: int = 4,
    on_prediction: Callable[[Prediction], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Prediction], PredictionSummary]:
    """Predict the top-k classes of every image; return them and a summary (counts, time).

    An artifact with a static batch dimension gets exactly that batch: a short last batch is
    padded with copies of its first image, whose outputs are dropped. One with a batch limit (a
    dynamic-batch .pt2) gets batches of at most that size. Images above `max_pixels`
    pixels are refused (None: no limit) or, with `skip_corrupt`, skipped like unreadable ones.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    size = predictor.batch_size(batch_size)
    prep = predictor.preprocessing
    read = ImageReader(prep.resize_and_crop if predictor.takes_image else prep.array, skip_corrupt, max_pixels)
    summary = PredictionSummary()
    results: list[Prediction] = []
    start = time.perf_counter()
    chunks = list(_batches(list(images), size))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # decoding runs up to two batches ahead of the model, so memory stays bounded
        ahead = [[pool.submit(read, p) for p in c] for c in chunks[:2]]
        for n, chunk in enumerate(chunks):
            futures = ahead.pop(0)
            if n + 2 < len(chunks):
                ahead.append([pool.submit(read, p) for p in chunks[n + 2]])
            try:
                loaded = [f.result() for f in futures]
            except ImageFileError:
                for f in (f for c in ahead for f in c):
                    f.cancel()
                raise
            kept = [(p, x) for p, x in zip(chunk, loaded) if x is not None]
            summary.skipped += [str(p) for p, x in zip(chunk, loaded) if x is None]  # in order, unlike read.skipped
            if on_progress is not None:
                on_progress(len(chunk))
            if not kept:
                continue
            inputs = [x for _, x in kept]
            t0 = time.perf_counter()
            if predictor.takes_image:
                logits = predictor.run(inputs)
            else:
                batch = np.stack(inputs)
                if predictor.fixed_batch and len(batch) < predictor.fixed_batch:
                    pad = np.repeat(batch[:1], predictor.fixed_batch - len(batch), axis=0)
                    batch = np.concatenate([batch, pad])
                logits = np.asarray(predictor.run(np.ascontiguousarray(batch, dtype=np.float32)))[: len(kept)]
            summary.model_seconds += time.perf_counter() - t0
            if logits.ndim != 2 or logits.shape[1] != predictor.num_classes:
                raise ValueError(
                    f"{predictor.artifact} returned outputs of shape {list(logits.shape)}, "
                    f"expected (batch, {predictor.num_classes})"
                )
            order, probs = softmax_topk(logits, topk)
            for (path, _), idx, prob in zip(kept, order, probs):
                pred = Prediction(path, [int(i) for i in idx], [float(p) for p in prob],
                                  [predictor.class_name(int(i)) for i in idx])  # fmt: skip
                results.append(pred)
                if on_prediction is not None:
                    on_prediction(pred)
            summary.images += len(kept)
    summary.seconds = time.perf_counter() - start
    return results, summary


class ResultWriter:
    """Writes predictions as CSV (path, then name/index/probability per rank) or JSON lines,
    one row per image as it comes, to a hidden partial file; the file appears under its name only
    when `close` is told the run completed."""

    def __init__(self, path: str | os.PathLike, fmt: str, topk: int) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.fmt = fmt
        self.rows = 0
        self.file: io.TextIOBase = open(self.partial, "w", newline="")  # noqa: SIM115 - closed in close()
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(self.file)
            header = ["path"]
            for r in range(1, topk + 1):
                header += [f"top{r}_name", f"top{r}_index", f"top{r}_probability"]
            self.csv.writerow(header)

    def write(self, pred: Prediction) -> None:
        if self.csv is not None:
            row: list = [str(pred.path)]
            for i, n, p in zip(pred.indices, pred.names, pred.probabilities):
                row += [n, i, f"{p:.6f}"]
            self.csv.writerow(row)
        else:
            self.file.write(json.dumps(pred.as_dict()) + "\n")
        self.file.flush()
        self.rows += 1

    def close(self, complete: bool = True) -> Path | None:
        """Close. With `complete` move the file onto its name; else keep the partial file when it holds
        predictions (returned, for the message) and remove it when it holds none (None)."""
        self.file.close()
        if complete:
            os.replace(self.partial, self.path)
            return self.path
        if self.rows == 0:
            self.partial.unlink(missing_ok=True)
            return None
        return self.partial
