"""Shared fixtures (models with random but realistic weights), and the test tiers.

Each test file belongs to one tier, named after what it needs installed (the markers of
pyproject.toml): `pytest -m core` runs with the package alone, `make test` runs every tier.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomize_and_calibrate


@pytest.fixture(scope="session")
def tiny_calibrated():
    import nextvit

    torch.manual_seed(0)
    return randomize_and_calibrate(nextvit.create_model("nextvit_tiny", num_classes=10))


@pytest.fixture(scope="session")
def small_calibrated():
    import nextvit

    torch.manual_seed(0)
    return randomize_and_calibrate(nextvit.create_model("nextvit_small"))


@pytest.fixture(scope="session")
def import_script():
    """Import an entry-point script of a task folder by path (scripts import their siblings by name).

    Modules are registered as `<folder>.<name>`: detection/ and segmentation/ both have a
    get_flops.py, train.py and test.py, and a plain `import get_flops` would return whichever
    folder came first.
    """
    import importlib.util
    import sys
    from pathlib import Path

    def load(folder: str, name: str):
        key = f"{folder}.{name}"
        if key in sys.modules:
            return sys.modules[key]
        path = Path(__file__).resolve().parents[1] / folder
        spec = importlib.util.spec_from_file_location(key, path / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path))
        try:
            sys.modules[key] = module
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
        finally:
            sys.path.remove(str(path))
        return module

    return load


TIERS = {
    # `pip install -e .` (torch, safetensors, huggingface_hub) and pytest: the package's own tests
    "core": (
        "test_model",
        "test_checkpoint",
        "test_folding",
        "test_deploy_layers",
        "test_ecosystem",
        "test_package",
        "test_setup",
        "test_files",
        "test_records",
    ),
    # `pip install -e .[timm,flops]`: checks against timm's port, fvcore's counts and torchvision's
    # feature extractor (the files of the core tier mark their own such tests)
    "interop": ("test_flops",),
    "mm": ("test_image_demo", "test_mm_adapter", "test_detection", "test_segmentation", "test_train_pipelines"),
    "export": ("test_predict", "test_deployment", "test_quantize", "test_openvino", "test_benchmark", "test_aoti"),
    "data": (
        "test_preprocess",
        "test_classification",
        "test_augment",
        "test_slurm",
        "test_architecture_figure",
        "test_train_speed",
        "test_gpu_check",
    ),
}
TIER_OF_FILE = {name: tier for tier, names in TIERS.items() for name in names}


def needs_cuda(item: pytest.Item) -> bool:
    """Marked `cuda`, or skipped without a GPU by a skipif whose reason names CUDA."""
    if item.get_closest_marker("cuda"):
        return True
    return any("CUDA" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its file's tier, unless the test names its own (one that needs more than its file).

    A file missing from TIERS runs in `make test` only; test_package.py checks that none is missing.
    Tests that need a GPU are marked `cuda` (`pytest -m cuda` runs them, as scripts/gpu_check.sh does)
    and skipped where torch sees none."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        tier = TIER_OF_FILE.get(Path(str(item.path)).stem)
        if tier and not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, tier))
        if needs_cuda(item):
            if not item.get_closest_marker("cuda"):
                item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(no_gpu)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m core` reads only the core files: the others import, at the top, what `pip install -e .` lacks."""
    if config.getoption("markexpr") == "core" and collection_path.name.startswith("test_"):
        return TIER_OF_FILE.get(collection_path.stem) != "core"
    return None
