"""Opacus ``make_private`` / ``DPOptimizer`` with ``noise_multiplier=0``:
``--backend batchgrad_spec.backends.trainers.opacus_dp:backend``.

``PrivacyEngine().make_private(module, optimizer, data_loader, noise_multiplier=0.0,
max_grad_norm=C, poisson_sampling=False)`` wraps the network in a ``GradSampleModule`` (per-sample
gradients by hooks; under ``loss_reduction="mean"`` it multiplies them by the micro-batch's
size, so they are ∇ℓ_i) and the optimiser in a ``DPOptimizer``. Each micro-batch's loss is the
mean of its per-example losses ℓ_i (Opacus's default ``loss_reduction="mean"``; DP-SGD does not
depend on the problem's reduction, §10.2) and ``backward()``; at the end
of a window ``optimizer.step()`` clips every per-sample gradient of the window to norm C
(factor ``C / (‖g_i‖ + 1e-6)`` capped at 1), sums them, adds noise 0, divides by
``expected_batch_size × accumulated_iterations`` (opacus 1.6.0, ``DPOptimizer.scale_grad``) and
steps. ``expected_batch_size`` is set to the loop's B / K, the size of one micro-batch of the
spec's expected batch of B examples per optimizer step, so a full window of K micro-batches
divides by B.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from reference.contract import Config
from reference.problem import Problem

from ..torch_backend import extra_tensors, per_example_loss, tensors, torch_optimizer
from .common import TrainerBackend, Windows, adam_step_count, loop_result, model_for

__all__ = ["OpacusBackend", "backend", "run"]


def run(problem: Problem, config: Config, loop: Any, windows: Windows) -> dict[str, Any]:
    """Opacus's DP-SGD with noise 0 over ``windows``; the ``train_loop`` answer."""
    from opacus import PrivacyEngine

    if loop.per_example_clip is None:
        raise ValueError("opacus: DPOptimizer always clips per example; the loop sets no "
                         "per_example_clip")
    k = loop.accumulation_steps
    net = model_for(problem, config)
    opt = torch_optimizer(net.parameters(), loop.optimizer)
    sizes = [part.batch.size for window in windows for part in window]
    loader = torch.utils.data.DataLoader(list(range(len(sizes))), batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, dp_opt, _ = PrivacyEngine().make_private(
            module=net, optimizer=opt, data_loader=loader, noise_multiplier=0.0,
            max_grad_norm=float(loop.per_example_clip), poisson_sampling=False,
            loss_reduction="mean")
    dp_opt.expected_batch_size = loop.expected_batch_size / k
    clip = getattr(loop, "clip_norm", None)
    for window in windows:
        dp_opt.zero_grad(set_to_none=True)
        for part in window:
            x, y, _ = tensors(part, config)
            extra = extra_tensors(part, config)
            per_example_loss(part, module(x, extra.get("drop")), y, extra).mean().backward()
        if clip is not None:
            dp_opt.pre_step()  # clipped, summed, scaled into .grad; then the global clip
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            dp_opt.original_optimizer.step()
        else:
            dp_opt.step()
    steps = adam_step_count(opt) if loop.optimizer.adam else len(windows)
    return loop_result(net, steps)


class OpacusBackend(TrainerBackend):
    """Opacus DP-SGD (noise 0): per-example clipping by ``DPOptimizer``."""

    def __init__(self) -> None:
        super().__init__(name="opacus", loop_features=("loop:per_example_clip",),
                         unsupported=("layer:batchnorm_train",))

    def versions(self) -> dict[str, str]:
        import opacus

        return {"torch": torch.__version__, "opacus": opacus.__version__}

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        return run(problem, config, loop, windows_of(problem, loop, batches, self.name))


backend = OpacusBackend()
