"""detection/image_demo.py and segmentation/image_demo.py on models trained a few steps on generated data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_launcher

from nextvit.synthetic import make_ade_dataset, make_coco_dataset

REPO = Path(__file__).resolve().parents[1]


def demo(task: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / task / "image_demo.py"), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_detection_image_demo_writes_drawings_and_json(tmp_path):
    from test_detection import TINY

    data = make_coco_dataset(tmp_path / "coco", train_images=4, val_images=2, seed=0)
    config = tmp_path / "tiny_det.py"
    config.write_text(TINY.format(base=REPO / "detection" / "configs" / "mask_rcnn_nextvit_small_1x.py", data=data))
    run_launcher(REPO / "detection", "dist_train.sh", config, 1, "--work-dir", tmp_path / "work")
    images = sorted((data / "val2017").glob("*.jpg"))
    out = tmp_path / "out"
    demo("detection", data / "val2017", config, tmp_path / "work" / "epoch_1.pth", "--out-dir", out,
         "--score-thr", "0", cwd=tmp_path)  # fmt: skip
    assert sorted(p.name for p in (out / "vis").iterdir()) == sorted(p.name for p in images)
    for image in images:
        record = json.loads((out / "preds" / f"{image.stem}.json").read_text())
        assert record["image"] == str(image)
        assert len(record["boxes_xyxy"]) == len(record["scores"]) == len(record["labels"]) == len(record["names"])
        assert all(n in ("circle", "square", "triangle") for n in record["names"])


@pytest.mark.slow
def test_segmentation_image_demo_writes_drawings_masks_and_json(tmp_path):
    from PIL import Image
    from test_segmentation import TINY, TINY_FPN

    ade = make_ade_dataset(tmp_path / "ade", train_images=4, val_images=2, seed=0)
    config = tmp_path / "tiny_fpn.py"
    base = REPO / "segmentation" / "configs" / "fpn_512_nextvit_small_80k.py"
    config.write_text(TINY.format(base=base, data=ade, **TINY_FPN))
    run_launcher(REPO / "segmentation", "dist_train.sh", config, 1, "--work-dir", tmp_path / "work")
    images = sorted((ade / "images" / "validation").glob("*.jpg"))
    out = tmp_path / "out"
    demo("segmentation", *images, config, tmp_path / "work" / "iter_4.pth", "--out-dir", out, cwd=tmp_path)
    assert len(list((out / "vis").iterdir())) == len(images)
    for image in images:
        record = json.loads((out / "preds" / f"{image.stem}.json").read_text())
        mask = Image.open(record["mask_png"])
        assert (mask.width, mask.height) == Image.open(image).size == (record["width"], record["height"])
        assert sum(record["pixels_per_class"].values()) == mask.width * mask.height
