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
