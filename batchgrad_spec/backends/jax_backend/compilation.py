"""How the JAX backend's programs are compiled and counted.

Importing this module switches on ``jax_enable_x64`` (float64 needs it; every array is created
with an explicit dtype, so float32 runs stay float32) and configures the persistent compilation
cache. ``BATCHGRAD_JAX_CACHE`` names its directory ("0", "off" or "" disables it; default:
``batchgrad-jax-cache`` in the system temp dir); with a warm cache a new process loads the
programs instead of compiling them. ``TRACES`` counts how often each jitted function was traced
(compiled or loaded), the full tier's with a ``/full`` suffix: ``JaxBackend.trace_counts()``.
``BATCHGRAD_JAX_BUCKETS=0`` selects the plain (unbucketed) programs (``buckets_enabled``).
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["CACHE_MAX_BYTES", "CPU_COMPILER_OPTIONS", "TRACES", "buckets_enabled",
           "jit_per_platform", "on_device"]

jax.config.update("jax_enable_x64", True)

CPU_COMPILER_OPTIONS: dict[str, Any] = (
    {"xla_cpu_use_fusion_emitters": False} if os.environ.get("BATCHGRAD_JAX_FAST_COMPILE") else {}
)
"""XLA options for the bucketed CPU programs: stock by default, so what is tested is what JAX
users run. ``BATCHGRAD_JAX_FAST_COMPILE=1`` selects the legacy loop emitters, which compile these
small programs about 30% faster and gave bit-identical results on 150 problems checked (with 6-24
programs per session the saving is a few seconds). The plain programs use them too: there the
saving is larger (chapter 9 compiles ~600 of them: one ci run of
tests/test_ch9_structured_layers.py took 111 s instead of 182 s, the same results)."""

CACHE_MAX_BYTES = 256 * 2**20
"""Size limit of the persistent compilation cache (the bucketed programs take < 1 MB each; an
unpadded run, BATCHGRAD_JAX_BUCKETS=0, adds ~60 kB per problem)."""

TRACES: collections.Counter[str] = collections.Counter()
"""How often each jitted function was traced (= compiled, or loaded from the persistent cache)."""


def _configure_persistent_cache() -> None:
    path = os.environ.get("BATCHGRAD_JAX_CACHE")
    if path is None:
        if jax.config.jax_compilation_cache_dir:  # the user configured one already
            return
        path = os.path.join(tempfile.gettempdir(), "batchgrad-jax-cache")
    if path.strip().lower() in ("", "0", "off", "none", "false"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)  # LRU eviction


_configure_persistent_cache()


def buckets_enabled() -> bool:
    """BATCHGRAD_JAX_BUCKETS, read at every call: the bucketed programs unless "0"/"off"/"false"."""
    return os.environ.get("BATCHGRAD_JAX_BUCKETS", "1").strip().lower() not in ("0", "off", "false")


def jit_per_platform(fn: Callable) -> dict[str, Callable]:
    """``fn`` jitted for the CPU (with CPU_COMPILER_OPTIONS) and for accelerators (stock), with
    the tier ``full`` static."""
    return {"cpu": jax.jit(fn, static_argnames="full", compiler_options=CPU_COMPILER_OPTIONS),
            "other": jax.jit(fn, static_argnames="full")}


def on_device(table: dict[str, Callable], device: jax.Device) -> Callable:
    """The entry of a ``jit_per_platform`` table for ``device``."""
    return table["cpu" if device.platform == "cpu" else "other"]
