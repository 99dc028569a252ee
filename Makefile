# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv and install the tested set first (scripts/setup_env.sh, idempotent).
PY := .venv/bin/python

.PHONY: venv demo test test-core test-fast lint bench bench-zoo bench-lowp bench-cuda detection segmentation clean

venv:
	bash scripts/setup_env.sh

demo: venv
	bash scripts/demo.sh

test: venv
	$(PY) -m pytest

# The fast tier: the package alone, which needs only `pip install -e .` and pytest (no timm, no mm stack, no
# exporters). Outside .venv: make test-core PY=python. The other tiers (markers in pyproject.toml): -m interop,
# -m mm, -m export, -m data.
test-core:
	$(PY) -m pytest -m core

# Every tier without the tests marked slow (those that launch training or evaluation processes).
test-fast: venv
	$(PY) -m pytest -m "not slow"

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Detection and segmentation users: the same install, mm stack included (mmcv built from source).
detection segmentation: venv
	@echo "mmengine, mmcv (with ops), mmdet and mmsegmentation are installed in .venv"

bench: venv
	$(PY) deployment/benchmark.py --output logs/benchmark_backbone_cpu.json | tee logs/benchmark_backbone_cpu.txt

# Next-ViT-S/B/L against timm's port and classic peers at 224 and 384, batch 1 and 8 (about 15 minutes
# on 2 cores), with the latency-accuracy chart.
bench-zoo: venv
	$(PY) deployment/benchmark.py --models nextvit_small nextvit_base nextvit_large timm:nextvit_small \
		timm:resnet50 timm:convnext_tiny timm:efficientformer_l1 --input-sizes 224 384 --batch-sizes 1 8 \
		--modes folded onnxruntime --runs 20 --output logs/benchmark_zoo_cpu.json --csv logs/benchmark_zoo_cpu.csv \
		--chart images/latency_accuracy_cpu.png | tee logs/benchmark_zoo_cpu.txt

# Next-ViT-S/B/L in fp32, bf16 and int8 per runtime (PyTorch folded, ONNX Runtime, OpenVINO) at 224 and
# 384, batch 1, each runtime in its own process, with ratios to timm's eager model of the same size.
# TORCH_BF16= (empty) leaves out PyTorch bf16, which takes seconds per call on CPUs without bf16 units.
TORCH_BF16 ?= $$m:folded:bfloat16
bench-lowp: venv
	for size in small base large; do \
		m=nextvit_$$size; \
		$(PY) deployment/benchmark.py --entries timm:$$m:eager $$m:folded $(TORCH_BF16) $$m:onnxruntime \
			$$m:onnxruntime_int8 $$m:openvino $$m:openvino:bfloat16 $$m:openvino_int8 --baseline 'timm:{model}:eager' \
			--input-sizes 224 384 --batch-sizes 1 --runs 12 --output logs/benchmark_lowp_cpu_$$size.json \
			--markdown logs/benchmark_lowp_cpu_$$size.md | tee logs/benchmark_lowp_cpu_$$size.txt || exit 1; \
	done

# On a CUDA GPU: Next-ViT-S against timm's port, ResNet-50 and ResNet-101 (the paper's peer) in fp16 at 224,
# batch 1, 8 and 256, eager-folded, CUDA graph, compiled with graph replay and the AOTInductor package, each
# row with its ratio to ResNet-101 in the same mode. compile and aoti build each model once per batch size
# (24 compilations: not measured yet, expect tens of minutes).
bench-cuda: venv
	$(PY) deployment/benchmark.py --device cuda --models nextvit_small timm:nextvit_small timm:resnet50 \
		timm:resnet101 --reference timm:resnet101 --modes folded cudagraph compile aoti --dtypes float16 \
		--batch-sizes 1 8 256 --runs 60 --warmup 10 --isolation none --output logs/benchmark_cuda.json \
		--markdown logs/benchmark_cuda.md | tee logs/benchmark_cuda.txt

clean:
	rm -rf .venv .pytest_cache .ruff_cache *.egg-info
