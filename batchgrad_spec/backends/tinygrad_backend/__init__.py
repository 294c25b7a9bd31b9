"""The tinygrad backend: ``--backend batchgrad_spec.backends.tinygrad_backend:backend``.

tinygrad 0.14 as its users write training code (``adapter``: the contract; ``model``: layers,
activations, losses). tinygrad compiles a kernel for every new graph: its ``CPU`` device needs a
``clang`` binary (the device compiles its own helper programs with it at start-up; tinygrad runs
``$CC``, default ``clang``, so a versioned ``clang-14`` is passed as ``CC``). Where no clang is
on ``PATH``, importing this package selects tinygrad's ``PYTHON`` device (its
reference emulator, which runs the same graphs, gradients and dtypes without a compiler) unless
``DEV`` is already set; ``versions()`` names the device used, so reports show it.
"""

from __future__ import annotations

import os
import shutil


def _clang() -> str | None:
    """A clang on PATH: ``clang``, or a versioned one (Debian's ``clang-14`` package)."""
    for name in ["clang"] + [f"clang-{v}" for v in range(21, 13, -1)]:
        if shutil.which(name):
            return name
    return None


if "DEV" not in os.environ:
    _cc = os.environ.get("CC") or _clang()
    if _cc:
        os.environ["DEV"], os.environ["CC"] = "CPU", _cc
    else:
        os.environ["DEV"] = "PYTHON"

# ruff: noqa: E402  (the device is chosen before tinygrad is imported)
from .adapter import CAPABILITIES, TinygradBackend, backend

__all__ = ["CAPABILITIES", "TinygradBackend", "backend"]
