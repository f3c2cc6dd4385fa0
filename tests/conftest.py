"""Fixtures shared by every test suite."""

from __future__ import annotations

import pytest

from devenv.support.configs import sample_config
from webhook.config.schema import Config


@pytest.fixture
def config() -> Config:
    return sample_config()
