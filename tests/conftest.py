"""Shared fixtures: the legacy datasets and a fast way to write scratch datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import split_dataset

DATA = Path(__file__).parent / "data"
LEGACY = DATA / "legacy"

#: name of the expected array -> dataset folder
LEGACY_CASES = {
    p.name[: -len(".expected.npy")]: LEGACY / p.name[: -len(".expected.npy")].replace("__", "/")
    for p in sorted(LEGACY.glob("*.expected.npy"))
}

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def legacy_copy(tmp_path: Path):
    """Copy a legacy fixture into tmp_path (writable) and return its path."""

    def copy(name: str) -> Path:
        dst = tmp_path / name.replace("__", "_")
        shutil.copytree(LEGACY_CASES[name], dst)
        for p in dst.rglob("*"):
            p.chmod(0o644)
        return dst

    return copy


def save_fast(data: np.ndarray, path: Path, shape_block, **kwargs) -> split_dataset.SplitDataset:
    """``split_dataset.save`` without fsync (tests write many small datasets)."""
    kwargs.setdefault("fsync", False)
    return split_dataset.save(data, path, shape_block, **kwargs)
