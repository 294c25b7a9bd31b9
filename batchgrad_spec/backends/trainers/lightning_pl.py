"""PyTorch Lightning: ``--backend batchgrad_spec.backends.trainers.lightning_pl:backend``.

A ``LightningModule`` whose ``training_step`` returns the micro-batch's loss (the problem's
reduction, PyTorch's ``reduction=``) and whose ``configure_optimizers`` returns the problem's
``torch.optim`` optimiser, run by ``lightning.Trainer(accelerator="cpu", max_epochs=1,
accumulate_grad_batches=K, gradient_clip_val=c, gradient_clip_algorithm="norm")``. Lightning
2.6.6 divides every ``training_step`` loss by ``accumulate_grad_batches``
(``ClosureResult.from_training_step_output(…, normalize=K)``), also in the last, shorter window
of an epoch, where it still steps (``_should_accumulate``: "Lightning steps on the final
batch"); it clips once per optimizer step (``_clip_gradients`` after the closure, after
unscaling under a precision plugin).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from reference.contract import Config
from reference.problem import Problem

from ..torch_backend import torch_optimizer
from .common import TrainerBackend, Windows, adam_step_count, loop_result, micro_loss, model_for

__all__ = ["LightningBackend", "backend", "run"]


def run(problem: Problem, config: Config, loop: Any, windows: Windows) -> dict[str, Any]:
    """One epoch of ``lightning.Trainer``; the ``train_loop`` answer."""
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    parts = [part for window in windows for part in window]
    net = model_for(problem, config)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return micro_loss(self.net, parts[int(batch[0])], config)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            self.opt = torch_optimizer(self.net.parameters(), loop.optimizer)
            return self.opt

    loader = torch.utils.data.DataLoader(list(range(len(parts))), batch_size=1, shuffle=False)
    clip = getattr(loop, "clip_norm", None)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        accumulate_grad_batches=loop.accumulation_steps,
                        gradient_clip_val=clip, gradient_clip_algorithm="norm")
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    steps = adam_step_count(module.opt) if loop.optimizer.adam else trainer.global_step
    return loop_result(net, steps)


class LightningBackend(TrainerBackend):
    """``lightning.Trainer`` with ``accumulate_grad_batches`` and ``gradient_clip_val``."""

    def __init__(self) -> None:
        super().__init__(name="lightning", loop_features=("loop:clip_norm",))

    def versions(self) -> dict[str, str]:
        import lightning

        return {"torch": torch.__version__, "lightning": lightning.__version__}

    def train_loop(self, problem: Problem, config: Config, loop: Any,
                   batches: Any) -> dict[str, Any]:
        from .schedule import windows_of

        return run(problem, config, loop, windows_of(problem, loop, batches, self.name))


backend = LightningBackend()
