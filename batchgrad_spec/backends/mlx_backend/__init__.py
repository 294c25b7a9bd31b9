"""The MLX backend: ``--backend batchgrad_spec.backends.mlx_backend:backend`` (MLX 0.32 with its
Linux CPU wheel, ``pip install "mlx[cpu]"``; float64 runs on the CPU). See ``adapter``."""

from __future__ import annotations

from .adapter import CAPABILITIES, MLXBackend, backend

__all__ = ["CAPABILITIES", "MLXBackend", "backend"]
