"""Shared pytest setup: small workloads, few threads, and paths to the sample and real data."""
import os
from pathlib import Path

os.environ.setdefault("IN_TEST", "1")

import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"
PNEUMONIA_NPZ = SAMPLES / "pneumoniamnist28" / "pneumoniamnist28.npz"


@pytest.fixture
def samples_dir():
    return SAMPLES


@pytest.fixture
def pneumonia_npz():
    if not PNEUMONIA_NPZ.exists():
        pytest.fail(f"real-data check needs {PNEUMONIA_NPZ} (PneumoniaMNIST, shipped in data_samples/); it is missing")
    return PNEUMONIA_NPZ
