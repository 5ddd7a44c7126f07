"""Every hand-written test kernel is real PTX: ptxas (CUDA) assembles it for sm_80 (the FP8
kernels, which need sm_89+, for sm_90)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ...conftest import need
from .kernels import ALL


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(ALL))
def test_kernel_assembles_with_ptxas(name, tmp_path):
    need(shutil.which("ptxas") is not None, "ptxas")
    src = tmp_path / f"{name}.ptx"
    src.write_text(ALL[name])
    # sm_80 for everything except kernels that need a newer target (FP8 needs sm_89+)
    arch = "sm_90" if ".target sm_90" in ALL[name] else "sm_80"
    r = subprocess.run(["ptxas", f"-arch={arch}", str(src), "-o", str(tmp_path / f"{name}.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
