"""Which device and dtype a ``Config`` asks of the JAX backend (cpu, or the first GPU JAX sees),
and the check that its precision mode is one this backend computes."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from reference.contract import Config

__all__ = ["check", "gpu", "stack"]


@functools.cache
def gpu() -> jax.Device | None:
    """The first GPU, or None (no GPU backend, or a broken one: the backend reports "cpu" only)."""
    try:
        return jax.devices("gpu")[0]
    except Exception:  # no GPU backend (RuntimeError) or a broken one: report "cpu" only
        return None


def check(config: Config) -> tuple[np.dtype, jax.Device]:
    """(dtype, device) of ``config``; ValueError for a precision, device this backend lacks."""
    if config.precision not in ("strict", "tf32"):  # tf32 (spec §7.4): computed at HIGHEST still
        raise ValueError(f"precision {config.precision!r}: the jax backend supports 'strict' and "
                         f"'tf32' (computed at matmul precision HIGHEST, within either tolerance)")
    if config.device == "cpu":
        device = jax.devices("cpu")[0]
    elif config.device in ("gpu", "cuda"):
        device = gpu()
        if device is None:
            raise ValueError(f"device {config.device!r}: jax sees no GPU here")
    else:
        raise ValueError(f"device {config.device!r}: the jax backend has 'cpu' and 'gpu'")
    return np.dtype(config.dtype), device


def stack(rows: list[Any]) -> Any:
    """Per-example results (device arrays) → one pytree with a leading example axis (numpy)."""
    rows = jax.device_get(rows)
    return jax.tree.map(lambda *leaves: np.stack(leaves), *rows)
