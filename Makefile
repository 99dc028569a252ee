# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv and install the tested set first (scripts/setup_env.sh, idempotent).
PY := .venv/bin/python

.PHONY: venv demo test lint bench detection segmentation clean

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
	$(PY) deployment/benchmark.py --output logs/benchmark_backbone_cpu.json

clean:
	rm -rf .venv .pytest_cache .ruff_cache *.egg-info
