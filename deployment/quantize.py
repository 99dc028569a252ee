"""Static int8 quantization of Next-ViT: a QDQ ONNX model calibrated on your images, checked on them.

    python deployment/quantize.py --model nextvit_small --checkpoint nextvit_small_in1k_224.pth \\
        --calib-dir /data/imagenet/train --calib-images 512 --eval-dir /data/imagenet/val --max-drop 0.5
    python deployment/quantize.py --model nextvit_small --checkpoint ckpt.pth --calib-dir train/ --target tensorrt

The checkpoint is folded and exported to fp32 ONNX, calibrated with ONNX Runtime on `--calib-images`
images of `--calib-dir` (spread over its class folders) through the eval preprocessing (resize to
size/crop_pct, bicubic, center crop, ImageNet mean/std; `config.json` beside a checkpoint written by
classification/main.py supplies its size and crop), and rewritten as QDQ with per-channel int8
weights. `--target tensorrt` makes activations symmetric int8, as TensorRT's explicit quantization
needs (build it with export_tensorrt_engine.py --onnx FILE --int8).

With `--eval-dir` (an ImageFolder of the classes the model was trained on) fp32 and int8 top-1,
their agreement and the logits' cosine are measured and written to the sidecar; a drop above
`--max-drop` points exits with status 1 and writes nothing. Exit codes: 0 done, 1 accuracy drop
too large, 2 bad input (flags, folders, checkpoint), 3 ONNX Runtime missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from nextvit.export import (
    DEFAULT_OPSET,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_bool_flag,
    add_source_args,
    check_source_args,
    cli_main,
    default_stem,
    export_and_check_onnx,
    provenance,
    replace_path,
    sha256_file,
    source_from_args,
    source_record,
    write_sidecar,
)
from nextvit.quantize import (
    CALIBRATION_METHODS,
    EvalPreprocess,
    QuantizeError,
    evaluate_onnx,
    find_images,
    labelled_images,
    onnx_latency_ms,
    quantize_qdq,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Quantize Next-ViT to a static int8 QDQ ONNX model, calibrated and evaluated on image folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument(
        "--calib-dir", type=Path, required=True, help="images to calibrate on (an ImageFolder or any tree)"
    )
    parser.add_argument("--calib-images", type=int, default=256, help="how many calibration images to use")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax", help="activation ranges from")
    parser.add_argument(
        "--target",
        choices=("cpu", "tensorrt"),
        default="cpu",
        help="cpu: uint8 activations for ONNX Runtime/OpenVINO; tensorrt: symmetric int8 activations",
    )
    parser.add_argument(
        "--reduce-range",
        choices=("auto", "on", "off"),
        default="auto",
        help="7-bit weights, for x86 CPUs without VNNI (auto: from this CPU's flags)",
    )
    add_bool_flag(parser, "--per-channel", True, "one weight scale per output channel")
    parser.add_argument("--eval-dir", type=Path, default=None, help="labelled images (ImageFolder) to measure top-1 on")
    parser.add_argument(
        "--max-drop", type=float, default=1.0, help="largest top-1 drop (points) accepted on --eval-dir"
    )
    parser.add_argument("--crop-pct", type=float, default=None, help="eval center crop (default: config.json or 0.875)")
    parser.add_argument("--latency-runs", type=int, default=30, help="timed ONNX Runtime calls per model (0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images are drawn")
    return parser


def _training_config(checkpoint: Path | None) -> dict:
    """`config.json` written beside `model.safetensors` by classification/main.py, if there is one."""
    if checkpoint is None:
        return {}
    path = checkpoint.with_name("config.json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args)
    if args.calib_images < 1:
        parser.error(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.features and args.eval_dir is not None:
        parser.error("--eval-dir measures classification accuracy: it does not apply to --features")
    if args.max_drop < 0:
        parser.error(f"--max-drop must be 0 or more, got {args.max_drop}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("error: ONNX Runtime is not installed (pip install onnxruntime); nothing was written", file=sys.stderr)
        return EXIT_UNAVAILABLE

    config = _training_config(args.checkpoint)
    size_given = any(a.startswith("--image-size") for a in (argv if argv is not None else sys.argv[1:]))
    if not size_given and isinstance(config.get("input_size"), int):
        args.image_size = [config["input_size"]]
    if len(args.image_size) != 1:
        parser.error("--image-size: quantization calibrates on square center crops, give one size")
    crop_pct = args.crop_pct or float(config.get("crop_pct", 0.875))
    preprocess = EvalPreprocess(args.image_size[0], crop_pct)
    try:
        calib = find_images(args.calib_dir, args.calib_images, args.seed, flag="--calib-dir")
    except QuantizeError as err:
        print(f"error: {err}; nothing was written", file=sys.stderr)
        return EXIT_USAGE

    source = source_from_args(args)
    samples = None
    if args.eval_dir is not None:
        try:
            samples, _ = labelled_images(args.eval_dir, source.num_classes, config.get("class_names"))
        except QuantizeError as err:
            print(f"error: {err}; nothing was written", file=sys.stderr)
            return EXIT_USAGE
    if source.checkpoint is None:
        print("note: quantizing random weights (--random-weights): for latency measurements only", file=sys.stderr)

    output = args.output or Path(default_stem(args.model, args.image_size, args.features) + "_int8.onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    reduce_range = {"auto": None, "on": True, "off": False}[args.reduce_range]
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32_record = export_and_check_onnx(
            source, fp32, opset=DEFAULT_OPSET, dynamic_batch=True, atol=1e-4, rtol=1e-4, log=lambda m: None
        )
        if not fp32_record["check"]["passed"]:
            print(f"error: the fp32 export differs from PyTorch ({fp32_record['check']['max_abs_diff']:.3g})",
                  file=sys.stderr)  # fmt: skip
            return EXIT_CHECK_FAILED
        print(f"calibrating on {len(calib)} images of {args.calib_dir} ({args.calib_method}, target {args.target})")
        int8 = Path(tmp) / "int8.onnx"
        settings = quantize_qdq(
            fp32,
            int8,
            calib,
            preprocess,
            method=args.calib_method,
            per_channel=args.per_channel,
            target=args.target,
            reduce_range=reduce_range,
            input_name=source.input_name,
        )
        record: dict = dict(
            format="onnx-qdq-int8",
            output=output.name,
            **source_record(source),
            quantization=dict(**settings, calib_dir=str(args.calib_dir), crop_pct=crop_pct),
        )
        record["check"] = _check_against_pytorch(source, int8)
        print(f"int8 vs PyTorch fp32 on random images: logit cosine {record['check']['cosine_min']:.5f} (min)")
        if samples is not None:
            print(f"evaluating fp32 and int8 on {len(samples)} images of {args.eval_dir}")
            accuracy = evaluate_onnx(fp32, int8, samples, preprocess, input_name=source.input_name)
            accuracy.update(eval_dir=str(args.eval_dir), max_drop=args.max_drop)
            record["accuracy"] = accuracy
            print(
                f"top-1 fp32 {accuracy['top1_fp32']:.2f}%  int8 {accuracy['top1_int8']:.2f}%  "
                f"drop {accuracy['top1_drop']:.2f} points  agreement {accuracy['top1_agreement']:.2f}%  "
                f"logit cosine {accuracy['logit_cosine_mean']:.5f}"
            )
            if accuracy["top1_drop"] > args.max_drop:
                print(f"error: int8 loses {accuracy['top1_drop']:.2f} points of top-1 (more than --max-drop "
                      f"{args.max_drop}); nothing was written", file=sys.stderr)  # fmt: skip
                return EXIT_CHECK_FAILED
        if args.latency_runs > 0:
            shape = (1, *source.input_shape[1:])
            threads = torch.get_num_threads()
            fp32_ms = onnx_latency_ms(fp32, shape, runs=args.latency_runs, threads=threads)
            int8_ms = onnx_latency_ms(int8, shape, runs=args.latency_runs, threads=threads)
            record["latency"] = dict(
                runtime="onnxruntime CPUExecutionProvider", batch=1, threads=threads, runs=args.latency_runs,
                warmup=5, statistic="median", fp32_ms=round(fp32_ms, 3), int8_ms=round(int8_ms, 3),
                int8_over_fp32=round(int8_ms / fp32_ms, 3),
            )  # fmt: skip
            print(f"ONNX Runtime batch 1, {threads} threads: fp32 {fp32_ms:.2f} ms, int8 {int8_ms:.2f} ms "
                  f"({int8_ms / fp32_ms:.2f}x)")  # fmt: skip
        replace_path(int8, output)
    record.update(output_sha256=sha256_file(output), **provenance())
    write_sidecar(output, record)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB) and {output.name}.json")
    return EXIT_OK


@torch.no_grad()
def _check_against_pytorch(source, int8: Path) -> dict:
    """Cosine of int8 ONNX outputs to the PyTorch fp32 reference on ImageNet-range random images."""
    from nextvit.quantize import onnx_session

    session = onnx_session(int8)
    x = source.example_input(batch=4, seed=1)
    got = session.run(None, {source.input_name: x.numpy()})
    refs = source.reference_outputs(x)
    cosines = []
    for a, b in zip(got, refs):
        a, b = a.reshape(a.shape[0], -1), b.numpy().reshape(b.shape[0], -1)
        cosines.append((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12))
    cos = np.concatenate(cosines)
    return dict(
        runtime="onnxruntime (CPUExecutionProvider)",
        reference="the PyTorch eval-mode model as loaded, float32",
        input="ImageNet-normalised uniform random pixels, seed 1, batch 4",
        cosine_mean=round(float(cos.mean()), 6),
        cosine_min=round(float(cos.min()), 6),
    )


if __name__ == "__main__":
    cli_main(main)
