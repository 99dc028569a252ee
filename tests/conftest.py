"""Shared fixtures: models with random but realistic weights."""

from __future__ import annotations

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
