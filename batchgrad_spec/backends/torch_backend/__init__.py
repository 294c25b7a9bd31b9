"""The PyTorch backend: ``--backend torch`` (``batchgrad_spec.backends.torch_backend:backend``).

Builds the network from ``torch.nn`` modules with the problem's parameters copied in, computes
losses with ``torch.nn.functional`` and its own ``reduction=`` argument, and differentiates with
``torch.autograd`` (batch) and ``torch.func`` (per-example: ``vmap(grad(...))``) or a loop of
single-example backward passes. What is tested is PyTorch's own semantics: arguments are chosen
to realise the reference's definitions (spec §1.5, §7.2), as PyTorch users write them.

Rooms, one concern each (imports go one way, down this list):

* ``adapter``      ``TorchBackend`` and ``backend``: the contract, each method a call below
* ``loop``         the training loop of chapter 10: windows, clipping, loss scaling, DP-SGD
* ``training``     batch gradient, accumulation into ``.grad`` (§5), ``torch.optim`` steps (§6)
* ``per_example``  the "vmap" and "loop" methods (§1.4, §2.12; Undefined through train-mode
  BatchNorm, §4.3)
* ``losses``       ``torch.nn.functional`` losses and reductions, sequences (chapters 1-3)
* ``data``         the batch as tensors, results as numpy arrays
* ``modules``      one ``torch.nn`` builder per layer type, ``Net`` (chapters 1 and 4)
* ``precision``    strict / tf32 / bf16_autocast regions (§7.4)

Devices: "cpu", plus "cuda" when ``torch.cuda.is_available()`` (which does not initialise CUDA).

Threads: importing this package sets ``torch.set_num_threads(1)`` (process-wide) unless
``BATCHGRAD_TORCH_THREADS`` says otherwise (a number; 0 keeps torch's default). The suite's
problems are tiny, so a CPU thread pool costs more than it saves, and on a busy machine waking
it costs milliseconds per op: one thread ran ``tests/test_ch2_core.py`` in 44 s instead of
74-81 s with torch's default of 2 (2 cores, load 2.8; see benchmarks/README.md). The thread
count only changes how sums are grouped, which the error bound allows (spec §7.1).
"""

from __future__ import annotations

import os

import torch

_THREADS = int(os.environ.get("BATCHGRAD_TORCH_THREADS", "1") or 0)
if _THREADS > 0:
    torch.set_num_threads(_THREADS)

# ruff: noqa: E402  (the thread count is set before anything of torch runs)
from .adapter import TorchBackend, backend
from .data import extra_tensors, map_extra, tensors, to_numpy
from .losses import GAUSSIAN_NLL_EPS, IGNORE, per_example_loss, reduced_loss
from .modules import (
    SOFTPLUS_THRESHOLD,
    MaskDropout,
    Net,
    activation,
    batch_of_one,
    build_model,
    train_mode_batchnorm,
)
from .precision import precision_region
from .training import torch_optimizer

__all__ = ["GAUSSIAN_NLL_EPS", "IGNORE", "SOFTPLUS_THRESHOLD", "MaskDropout", "Net",
           "TorchBackend", "activation", "backend", "batch_of_one", "build_model",
           "extra_tensors", "map_extra", "per_example_loss", "precision_region", "reduced_loss",
           "tensors", "to_numpy", "torch_optimizer", "train_mode_batchnorm"]

# the names of the single-module backend, still used by batchgrad_spec/distributed/torch_ddp.py
# (tb._tensors, tb._extra, tb._strict), benchmarks/torch_func.py and tests/test_ch7_kernels.py
# (_activation)
_tensors = tensors
_extra = extra_tensors
_strict = precision_region
_activation = activation
