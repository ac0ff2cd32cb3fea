"""Shared pytest fixtures: a replayable RNG (QDRIFT_TEST_SEED) printed on failure."""
import os

import numpy as np
import pytest

SEED = int(os.environ.get("QDRIFT_TEST_SEED", "20261122"))


def pytest_report_header(config):
    return f"qdrift test seed: {SEED} (set QDRIFT_TEST_SEED to replay)"


@pytest.fixture
def rng(request):
    # One stream per test, derived from the global seed and the test's name: reordering or
    # selecting tests does not change any test's data.
    salt = sum(map(ord, request.node.nodeid))
    return np.random.default_rng([SEED, salt])
