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
    """Import an entry-point script of a task folder (scripts import their siblings by name)."""
    import importlib
    import sys
    from pathlib import Path

    def load(folder: str, name: str):
        path = str(Path(__file__).resolve().parents[1] / folder)
        sys.path.insert(0, path)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(path)

    return load
