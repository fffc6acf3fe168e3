"""Shared fixtures. Tests on real data fail (not skip) when EMSEG_REQUIRE_DATA=1."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "emseg", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=25
)
settings.load_profile("emseg")


def _require_data() -> bool:
    return os.environ.get("EMSEG_REQUIRE_DATA", "") not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def data_root():
    """The folder with the real datasets; skips (or fails in CI) when it is missing."""
    from emseg.data import data_root as find
    from emseg.errors import DataUnavailableError

    try:
        return find()
    except DataUnavailableError as exc:
        if _require_data():
            pytest.fail(f"EMSEG_REQUIRE_DATA=1 but the real data is missing: {exc}")
        pytest.skip(f"real data not available: {exc}")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
