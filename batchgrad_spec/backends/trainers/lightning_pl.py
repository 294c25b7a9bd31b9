"""PyTorch Lightning: ``--backend batchgrad_spec.backends.trainers.lightning_pl:backend``.

A ``LightningModule`` whose ``training_step`` returns the micro-batch's loss (the problem's
reduction, PyTorch's ``reduction=``) and whose ``configure_optimizers`` returns the problem's
``torch.optim`` optimiser, run by ``lightning.Trainer(accelerator="cpu", max_epochs=1,
accumulate_grad_batches=K, gradient_clip_val=c, gradient_clip_algorithm="norm")``. Lightning
2.6.6 divides every ``training_step`` loss by ``accumulate_grad_batches``
(``ClosureResult.from_training_step_output(…, normalize=K)``), also in the last, shorter window
of an epoch, where it still steps (``_should_accumulate``: "Lightning steps on the final
batch"); it clips once per optimizer step (``_clip_gradients`` after the closure, after
unscaling under a precision plugin). ``tokens`` returns each micro-batch's summed loss divided
by the window's count of examples (tokens) and multiplied by K, which cancels Lightning's
division, also in the last window. ``amp`` is ``tokens`` under loss scaling: Lightning's
``MixedPrecision`` plugin with a CPU ``GradScaler`` (float64 only: the plugin's fp16 autocast
would run float32 matmuls in half precision). Every run has a constant ``LambdaLR`` with
``interval="step"``, as a warm-up schedule would be configured; the answer's step counter is the
larger of the optimiser's and the schedule's (Lightning steps the schedule after a step the
scaler skipped: Lightning-AI/pytorch-lightning#5558, #18828).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from reference.contract import Config
from reference.problem import Problem

from ..torch_backend import torch_optimizer
from .common import (
    SUMMED,
    TrainerBackend,
    Windows,
    adam_step_count,
    loop_result,
    micro_loss,
    model_for,
    window_normaliser,
)

__all__ = ["LightningBackend", "amp", "backend", "run", "tokens"]


def _amp_plugins(loop: Any) -> list[Any]:
    """``MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=S))``:
    Lightning's own precision plugin with a CPU GradScaler (``precision="16-mixed"`` alone falls
    back to bf16 on the CPU, which has no scaler). Its fp16 autocast leaves float64 untouched."""
    from lightning.pytorch.plugins import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=float(loop.loss_scale))
    return [MixedPrecision("16-mixed", "cpu", scaler=scaler)]


def run(problem: Problem, config: Config, loop: Any, windows: Windows,
        normalise: bool = False) -> dict[str, Any]:
    """One epoch of ``lightning.Trainer`` (``normalise``: each micro-batch's summed loss over
    the window's count, times K); the ``train_loop`` answer."""
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    parts = [part for window in windows for part in window]
    norms = [window_normaliser(window) for window in windows for _ in window]
    k = loop.accumulation_steps
    net = model_for(problem, config)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.scales: list[float | None] = []

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            j = int(batch[0])
            if not normalise:
                return micro_loss(self.net, parts[j], config)
            part = parts[j]
            return micro_loss(self.net, part, config, SUMMED[part.reduction.name]) / norms[j] * k

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            plugin = self.trainer.precision_plugin
            scaler = getattr(plugin, "scaler", None)
            self.scales.append(None if scaler is None else scaler.get_scale())

        def configure_optimizers(self) -> Any:
            self.opt = torch_optimizer(self.net.parameters(), loop.optimizer)
            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda _: 1.0)
            return {"optimizer": self.opt,
                    "lr_scheduler": {"scheduler": self.schedule, "interval": "step"}}

    loader = torch.utils.data.DataLoader(list(range(len(parts))), batch_size=1, shuffle=False)
    clip = getattr(loop, "clip_norm", None)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        accumulate_grad_batches=loop.accumulation_steps,
                        gradient_clip_val=clip, gradient_clip_algorithm="norm",
                        plugins=None if loop.loss_scale is None else _amp_plugins(loop))
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    scales = module.scales + [None if loop.loss_scale is None else
                              trainer.precision_plugin.scaler.get_scale()]
    skipped = [w for w in range(len(windows))
               if scales[w] is not None and scales[w + 1] < scales[w]]  # type: ignore[operator]
    # one counter in the answer: the optimiser's own (Adam's t; SGD has none: the steps taken)
    # or the step-interval schedule's, whichever advanced more (§10.3 holds both still)
    own = adam_step_count(module.opt) if loop.optimizer.adam else len(windows) - len(skipped)
    return loop_result(net, max(own, module.schedule.last_epoch), skipped)


class LightningBackend(TrainerBackend):
    """``lightning.Trainer`` with ``accumulate_grad_batches`` and ``gradient_clip_val``."""

    def __init__(self, normalise: bool = False, amp: bool = False) -> None:
        name = "lightning_amp" if amp else "lightning_tokens" if normalise else "lightning"
        features = ("loop:clip_norm", "loop:loss_scale") if amp else ("loop:clip_norm",)
        super().__init__(name=name, loop_features=features,
                         dtype_list=("float64",) if amp else ("float64", "float32"))
        self.normalise = normalise

    def versions(self) -> dict[str, str]:
        import lightning

        return {"torch": torch.__version__, "lightning": lightning.__version__}

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        windows = windows_of(problem, loop, batches, self.name)
        return run(problem, config, loop, windows, self.normalise)


backend = LightningBackend()
tokens = LightningBackend(normalise=True)
amp = LightningBackend(normalise=True, amp=True)
