"""Fixtures for the landscape tests."""

import pytest

from ._models import make_data, make_model


@pytest.fixture
def cnn():
    return make_model("cnn")


@pytest.fixture
def binary_net():
    return make_model("binary")


@pytest.fixture
def data():
    return {"train": make_data(48, seed=1), "test": make_data(24, seed=2)}
