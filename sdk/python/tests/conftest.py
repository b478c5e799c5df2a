"""Shared fixtures: the vectors directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"missing test vectors {path} (generate them with sdk/vectors/generate.py)")
    return json.loads(path.read_text())
