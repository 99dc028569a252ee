# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv and install the tested set first (scripts/setup_env.sh, idempotent).
PY := .venv/bin/python

.PHONY: venv demo test lint bench bench-zoo detection segmentation clean

venv:
	bash scripts/setup_env.sh

demo: venv
	bash scripts/demo.sh

test: venv
	$(PY) -m pytest

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

clean:
	rm -rf .venv .pytest_cache .ruff_cache *.egg-info
