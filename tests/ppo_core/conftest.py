"""Fixtures of the ppo_core tests."""

from __future__ import annotations

import pytest

from ppo_core.tiny import tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
