"""Fixtures of the data tests."""

import pytest

from data_models import FLOAT, identity_model


@pytest.fixture
def x_model(tmp_path):
    """One float input x[batch,3,4,4]."""
    return identity_model(tmp_path, ("x", FLOAT, ["batch", 3, 4, 4]))


@pytest.fixture
def ab_model(tmp_path):
    """Two float inputs a[batch,4] and b[batch,2]."""
    return identity_model(tmp_path, ("a", FLOAT, ["batch", 4]), ("b", FLOAT, ["batch", 2]))
