"""Small generated datasets for demos and tests, reproducible from a seed.

No ImageNet, COCO or ADE20K is needed to exercise the real data paths: these generators write
the same on-disk layouts with drawn shapes and textures.

    python -m nextvit.synthetic classification --output data/shapes --seed 0

`classification` writes an ImageFolder tree (`train/<class>/*.png`, `val/<class>/*.png`) with
one class per kind of shape or texture, drawn at a random size, position, rotation and colour
over a noisy background: easy for a small model to learn, impossible to solve from colour alone.
`coco` writes a COCO-format instance set of filled shapes (mmdetection's `data/coco` layout);
`ade` writes an ADE20K-format semantic set (mmsegmentation's `data/ade/ADEChallengeData2016`).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SHAPE_CLASSES",
    "COCO_CLASSES",
    "ADE_SHAPE_LABELS",
    "make_classification_dataset",
    "make_coco_dataset",
    "make_ade_dataset",
    "draw_shape",
]


def _polygon(cx: float, cy: float, radius: float, points: int, angle: float, inner: float | None = None):
    coords = []
    steps = points * (2 if inner else 1)
    for i in range(steps):
        r = radius if inner is None or i % 2 == 0 else radius * inner
        a = angle + 2 * math.pi * i / steps
        coords.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return coords


def _stripes(draw, box, color, rng, vertical: bool):
    x0, y0, x1, y1 = box
    width = max(2, int((x1 - x0) / rng.uniform(5, 8)))
    for k in range(int(x0 if vertical else y0), int(x1 if vertical else y1), 2 * width):
        if vertical:
            draw.rectangle([k, y0, k + width - 1, y1], fill=color)
        else:
            draw.rectangle([x0, k, x1, k + width - 1], fill=color)


def _checker(draw, box, color, rng):
    x0, y0, x1, y1 = box
    cell = max(2, int((x1 - x0) / rng.choice([4, 5, 6])))
    for i, y in enumerate(range(int(y0), int(y1), cell)):
        for j, x in enumerate(range(int(x0), int(x1), cell)):
            if (i + j) % 2 == 0:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color)


def _draw(kind: str) -> Callable:
    def draw_fn(draw, cx, cy, r, angle, color, rng, background):
        box = (cx - r, cy - r, cx + r, cy + r)
        if kind == "circle":
            draw.ellipse(box, fill=color)
        elif kind == "ring":
            draw.ellipse(box, fill=color)
            draw.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=background)
        elif kind == "square":
            draw.polygon(_polygon(cx, cy, r, 4, angle), fill=color)
        elif kind == "triangle":
            draw.polygon(_polygon(cx, cy, r, 3, angle), fill=color)
        elif kind == "star":
            draw.polygon(_polygon(cx, cy, r, 5, angle, inner=0.45), fill=color)
        elif kind == "cross":
            arm = r * 0.35
            for a in (angle, angle + math.pi / 2):
                dx, dy = math.cos(a), math.sin(a)
                px, py = -dy * arm, dx * arm
                draw.polygon(
                    [
                        (cx - dx * r + px, cy - dy * r + py),
                        (cx + dx * r + px, cy + dy * r + py),
                        (cx + dx * r - px, cy + dy * r - py),
                        (cx - dx * r - px, cy - dy * r - py),
                    ],
                    fill=color,
                )
        elif kind == "hstripes":
            _stripes(draw, box, color, rng, vertical=False)
        elif kind == "vstripes":
            _stripes(draw, box, color, rng, vertical=True)
        elif kind == "checker":
            _checker(draw, box, color, rng)
        elif kind == "dots":
            step = r / 2
            for i in range(-2, 3):
                for j in range(-2, 3):
                    if (i + j) % 2 == 0:
                        x, y = cx + i * step, cy + j * step
                        draw.ellipse((x - step / 3, y - step / 3, x + step / 3, y + step / 3), fill=color)
        else:
            raise ValueError(f"unknown shape {kind!r}")

    return draw_fn


SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "ring",
    "square",
    "triangle",
    "star",
    "cross",
    "hstripes",
    "vstripes",
    "checker",
    "dots",
)


def draw_shape(kind: str, size: int, rng: random.Random) -> Image.Image:
    """One RGB image of `kind` at a random scale, position, rotation and colour."""
    background = tuple(rng.randint(0, 255) for _ in range(3))
    color = tuple((c + rng.randint(80, 176)) % 256 for c in background)  # always contrasts
    noise = Image.frombytes("L", (size, size), rng.randbytes(size * size)).convert("RGB")
    image = Image.blend(Image.new("RGB", (size, size), background), noise, rng.uniform(0.1, 0.3))
    draw = ImageDraw.Draw(image)
    r = size * rng.uniform(0.22, 0.4)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    _draw(kind)(draw, cx, cy, r, rng.uniform(0, 2 * math.pi), color, rng, background)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))


def make_classification_dataset(
    root: str | Path,
    num_classes: int = 10,
    train_per_class: int = 100,
    val_per_class: int = 20,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write an ImageFolder dataset of drawn shapes under `root` (train/ and val/); returns `root`."""
    classes = list(classes or SHAPE_CLASSES[:num_classes])
    if not 2 <= len(classes) <= len(SHAPE_CLASSES) or any(c not in SHAPE_CLASSES for c in classes):
        raise ValueError(f"choose 2 to {len(SHAPE_CLASSES)} classes from {SHAPE_CLASSES}, got {classes}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    root = Path(root)
    for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        for label, kind in enumerate(classes):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            rng = random.Random(f"{seed}-{offset}-{label}")
            for i in range(count):
                draw_shape(kind, size, rng).save(folder / f"{kind}_{i:05d}.png")
    return root


COCO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")


def _instance_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    points = {"circle": 24, "square": 4, "triangle": 3}[kind]
    return _polygon(cx, cy, r, points, angle if kind != "circle" else 0.0)


def make_coco_dataset(
    root: str | Path,
    train_images: int = 16,
    val_images: int = 8,
    size: tuple[int, int] = (160, 128),
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write a COCO-format instance dataset of filled shapes (polygon masks) under `root`.

    Layout as mmdetection expects for COCO: `annotations/instances_{train,val}2017.json` and
    images in `train2017/` and `val2017/`; categories are `COCO_CLASSES`.
    """
    import json

    root = Path(root)
    width, height = size
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(COCO_CLASSES)]
    for split, count, offset in (("train2017", train_images, 0), ("val2017", val_images, 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"coco-{seed}-{offset}")
        images, annotations = [], []
        for image_id in range(1, count + 1):
            background = tuple(rng.randint(0, 255) for _ in range(3))
            noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
            image = Image.blend(Image.new("RGB", (width, height), background), noise, 0.2)
            draw = ImageDraw.Draw(image)
            for _ in range(rng.randint(1, max_objects)):
                label = rng.randrange(len(COCO_CLASSES))
                r = rng.uniform(0.12, 0.25) * min(width, height)
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
                polygon = _instance_polygon(COCO_CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
                color = tuple((c + rng.randint(80, 176)) % 256 for c in background)
                draw.polygon(polygon, fill=color)
                xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
                x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
                x1, y1 = min(float(width), max(xs)), min(float(height), max(ys))
                area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                    "segmentation": [[round(v, 2) for p in polygon for v in p]], "area": round(area, 2),
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)], "iscrowd": 0,
                })  # fmt: skip
            name = f"{image_id:012d}.jpg"
            image.save(root / split / name, quality=95)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


# ADE20K label values (1-based; 0 is "other", ignored with reduce_zero_label) used by make_ade_dataset:
# the background is "wall" and the shapes are "floor", "tree" and "ceiling": after mmseg drops the
# zero label (values shift down by one) they are classes 0, 3, 4 and 5 of ADE20K's 150.
ADE_SHAPE_LABELS: dict[str, int] = {"background": 1, "circle": 4, "square": 5, "triangle": 6}


def make_ade_dataset(
    root: str | Path,
    train_images: int = 16,
    val_images: int = 8,
    size: tuple[int, int] = (160, 128),
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write an ADE20K-format semantic segmentation set of filled shapes under `root`.

    Layout as mmsegmentation expects for ADE20K (`root` plays `data/ade/ADEChallengeData2016`):
    `images/{training,validation}/ADE_*.jpg` and `annotations/{training,validation}/ADE_*.png`,
    the label maps single-channel PNGs holding ADE20K values (`ADE_SHAPE_LABELS`), with a border
    strip of 0 ("other") so that the ignored label is exercised too.
    """
    root = Path(root)
    width, height = size
    for split, count, prefix in (("training", train_images, "ADE_train"), ("validation", val_images, "ADE_val")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"ade-{seed}-{split}")
        for index in range(1, count + 1):
            background = tuple(rng.randint(0, 255) for _ in range(3))
            noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
            image = Image.blend(Image.new("RGB", (width, height), background), noise, 0.2)
            label = Image.new("L", (width, height), ADE_SHAPE_LABELS["background"])
            draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
            for _ in range(rng.randint(1, max_objects)):
                kind = rng.choice(COCO_CLASSES)
                r = rng.uniform(0.12, 0.25) * min(width, height)
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
                polygon = _instance_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
                draw_image.polygon(polygon, fill=tuple((c + rng.randint(80, 176)) % 256 for c in background))
                draw_label.polygon(polygon, fill=ADE_SHAPE_LABELS[kind])
            draw_label.rectangle((0, 0, width - 1, max(1, height // 32)), fill=0)
            name = f"{prefix}_{index:08d}"
            image.save(root / "images" / split / f"{name}.jpg", quality=95)
            label.save(root / "annotations" / split / f"{name}.png")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nextvit.synthetic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    cls = sub.add_parser("classification", help="an ImageFolder dataset of shapes")
    cls.add_argument("--output", type=Path, required=True)
    cls.add_argument("--num-classes", type=int, default=10)
    cls.add_argument("--train-per-class", type=int, default=100)
    cls.add_argument("--val-per-class", type=int, default=20)
    cls.add_argument("--size", type=int, default=64)
    cls.add_argument("--seed", type=int, default=0)
    coco = sub.add_parser("coco", help="a COCO-format instance dataset of shapes (data/coco layout)")
    coco.add_argument("--output", type=Path, required=True)
    coco.add_argument("--train-images", type=int, default=16)
    coco.add_argument("--val-images", type=int, default=8)
    coco.add_argument("--seed", type=int, default=0)
    ade = sub.add_parser("ade", help="an ADE20K-format semantic dataset of shapes (data/ade/ADEChallengeData2016)")
    ade.add_argument("--output", type=Path, required=True)
    ade.add_argument("--train-images", type=int, default=16)
    ade.add_argument("--val-images", type=int, default=8)
    ade.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "ade":
        root = make_ade_dataset(args.output, args.train_images, args.val_images, seed=args.seed)
        print(f"wrote an ADE20K-format dataset ({args.train_images} train, {args.val_images} val images) to {root}")
        return 0
    if args.kind == "coco":
        root = make_coco_dataset(args.output, args.train_images, args.val_images, seed=args.seed)
        print(f"wrote a COCO-format dataset ({args.train_images} train, {args.val_images} val images) to {root}")
        return 0
    root = make_classification_dataset(
        args.output, args.num_classes, args.train_per_class, args.val_per_class, args.size, args.seed
    )
    print(f"wrote {args.num_classes} classes x ({args.train_per_class} train + {args.val_per_class} val) to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
