"""Fixtures of the training tests (helpers live in ``trainkit.py``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainkit import write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The tiny preprocessed dataset folder (``<tmp>/preprocessed/tiny``), real frames + real dlib."""
    return write_dataset(tmp_path_factory.mktemp("preprocessed"))
