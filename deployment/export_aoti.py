"""Export Next-ViT as an AOTInductor package (.pt2) for the CPU or a CUDA GPU, check it, record it.

    python deployment/export_aoti.py --checkpoint output/run/checkpoint_best.pth --device cuda --dtype fp16
    python deployment/export_aoti.py --model nextvit_small --checkpoint ckpt.pth --device cpu
    python deployment/export_aoti.py --model nextvit_tiny --random-weights --image-size 64 --no-dynamic-batch

torch.export captures the folded model and AOTInductor compiles it, ahead of time, into one `.pt2`
file for the device it runs on (a CUDA package is built on a machine with the GPU), computing in
--dtype behind a float32 interface. Load it with torch alone:
`torch._inductor.aoti_load_package("model.pt2")(x)`, x a float32 NCHW batch of normalised images on
that device (batch 1 to 1024 unless --no-dynamic-batch). The package is compared with the eager
float32 model on ImageNet-range random images (fp32: within --atol + --rtol * max|reference|;
fp16/bf16: the logits' cosine, --min-cosine) and `<output>.json` records the model, checkpoint,
input, preprocessing, class names, the check and provenance. Exit codes: 0 done, 1 the check failed
(the file is kept, the sidecar says so), 2 bad input, 3 no CUDA device for --device cuda.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nextvit.export import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    HelpFormatter,
    add_bool_flag,
    add_source_args,
    check_source_args,
    check_summary,
    cli_main,
    default_stem,
    report_source,
    source_from_args,
    write_sidecar,
)
from nextvit.export.aoti import AOTI_DEVICES, AOTI_DTYPES, MAX_DYNAMIC_BATCH, export_and_check_aoti, require_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export Next-ViT as an AOTInductor .pt2 package and check it against PyTorch.",
        formatter_class=HelpFormatter,
    )
    add_source_args(parser)
    parser.add_argument("--device", choices=AOTI_DEVICES, default="cpu", help="what the package is compiled for")
    parser.add_argument("--dtype", choices=sorted(AOTI_DTYPES), default="fp32",
                        help="what it computes in (its input and outputs stay float32)")  # fmt: skip
    add_bool_flag(parser, "--dynamic-batch", True, f"accept any batch from 1 to {MAX_DYNAMIC_BATCH}")
    parser.add_argument("--min-cosine", type=float, default=0.999, help="fp16/bf16: least logit cosine to fp32")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_source_args(parser, args)
    if args.output is not None and args.output.suffix != ".pt2":
        parser.error(f"--output {args.output}: an AOTInductor package is a .pt2 file")
    require_device(args.device)  # before any work: a clear error when CUDA is asked for and absent

    source = source_from_args(args)
    report_source(source)
    stem = default_stem(source.name, source.image_size, args.features)
    output = args.output or Path(f"{stem}_{args.device}_{args.dtype}.pt2")
    record = export_and_check_aoti(
        source,
        output,
        device=args.device,
        dtype=args.dtype,
        dynamic_batch=args.dynamic_batch,
        atol=args.atol,
        rtol=args.rtol,
        min_cosine=args.min_cosine,
    )
    write_sidecar(output, record)
    summary = check_summary(record["check"], args.dtype == "fp32", args.min_cosine)
    print(f"wrote {output} ({record['export_s']} s export, {record['compile_s']} s compile); "
          f"check against PyTorch {summary}")  # fmt: skip
    return EXIT_OK if record["check"]["passed"] else EXIT_CHECK_FAILED


if __name__ == "__main__":
    cli_main(main, {"device": "--device", "dtype": "--dtype"})
