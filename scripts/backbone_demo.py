"""Part of `make demo`: build every Next-ViT variant, save and reload it, count it, fold it, and check.

For each of S, B and L (random weights, since no pretrained file can be downloaded here) it:
1. counts parameters and FLOPs at 224 and compares them with the paper;
2. saves the model in this package's format and in the original ByteDance layout, loads both back
   with `nextvit.create_model(..., checkpoint_path=...)` and checks the outputs are identical;
3. folds every BatchNorm and compares folded and unfolded outputs on a generated batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import nextvit
from nextvit.flops import count_flops, count_params

# The paper's figures (original README): parameters in M (truncated there), GFLOPs at 224.
PAPER = {"nextvit_small": (31.7, 5.8), "nextvit_base": (44.8, 8.3), "nextvit_large": (57.8, 10.8)}


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Give the BatchNorms statistics of real activations, so the folding check means something."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    model(images)
    model.eval()


def generated_batch(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images (low-frequency noise upsampled), normalised like ImageNet inputs."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 16, size // 16, generator=gen)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (images.clamp(0, 1) - mean) / std


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PAPER), choices=nextvit.list_models())
    parser.add_argument("--output-dir", type=Path, default=Path("output/demo_backbone"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    batch = generated_batch(4, 224, args.seed)
    print(
        f"Next-ViT demo: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"a generated batch of {tuple(batch.shape)}\n"
    )
    header = (
        f"{'model':<15}{'params':>14}{'paper':>8}{'GFLOPs':>9}{'paper':>7}  {'reload':<10}{'folded vs unfolded':>20}"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for name in args.models:
        start = time.perf_counter()
        model = nextvit.create_model(name)
        calibrate_batchnorm(model, generated_batch(8, 224, args.seed + 1))
        params, flops = count_params(model), count_flops(model, 224)

        ours_path = nextvit.save_checkpoint(model, args.output_dir / f"{name}.safetensors")
        bd_path = nextvit.save_bytedance_checkpoint(model, args.output_dir / f"{name}_bytedance.pth")
        with torch.no_grad():
            reference = model(batch)
            reloaded = [nextvit.create_model(name, checkpoint_path=p).eval()(batch) for p in (ours_path, bd_path)]
            folded = nextvit.fold_batchnorm(model)(batch)
        same = all(torch.equal(r, reference) for r in reloaded)
        rel = ((folded - reference).abs().max() / reference.abs().max()).item()
        ok = same and rel < 1e-5
        failures += not ok
        paper_params, paper_flops = PAPER.get(name, (float("nan"), float("nan")))
        print(
            f"{name:<15}{params:>14,}{paper_params:>8}{flops / 1e9:>9.2f}{paper_flops:>7}  "
            f"{'identical' if same else 'DIFFERENT':<10}{rel:>14.1e} rel  {'ok' if ok else 'FAIL'}"
            f"   ({time.perf_counter() - start:.0f} s)"
        )
    print(f"\ncheckpoints written to {args.output_dir}/ (this package's .safetensors and ByteDance .pth)")
    print("paper parameter counts are truncated to 0.1 M in the original README")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
