"""Precision modes (spec §7.4) as PyTorch sets them, around each forward and backward pass.

"strict": ``torch.backends.cuda.matmul.allow_tf32 = False`` and ``torch.backends.cudnn.allow_tf32
= False`` while computing; "tf32": both True (no effect on the CPU, where PyTorch has no TF32
kernels; on Ampere and later GPUs float32 matmuls then round operands to TF32);
"bf16_autocast": ``torch.autocast(dtype=torch.bfloat16)`` around the computation (float32 only;
float64 is never autocast). The previous flags are restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from reference.contract import Config

__all__ = ["PRECISIONS", "precision_region"]

PRECISIONS = ("strict", "tf32", "bf16_autocast")


@contextlib.contextmanager
def precision_region(config: Config) -> Iterator[None]:
    """TF32 off (strict) or on (precision "tf32"); "bf16_autocast": ``torch.autocast`` to
    bfloat16. One region per forward/backward: autocast caches its bfloat16 copies of the weights
    until its region ends."""
    if config.precision not in PRECISIONS:
        raise ValueError(f"torch backend: precision {config.precision!r} not supported")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = config.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = config.precision == "tf32"
    autocast = torch.autocast("cuda" if config.device == "cuda" else "cpu", dtype=torch.bfloat16,
                              enabled=config.precision == "bf16_autocast")
    try:
        with autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
