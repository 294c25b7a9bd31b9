"""Real training loops as backends (spec chapter 10, issue #14), each loaded by
``--backend batchgrad_spec.backends.trainers.<module>:<attribute>`` and run by its own tox env:

* ``amp:backend``            a plain PyTorch loop with ``torch.amp.GradScaler`` (CPU)
* ``accel:backend``          ``accelerate`` — the guide's idiom (micro-batch mean, backward ÷ K)
* ``accel:tokens``           ``accelerate`` — the guide's loss-normalisation idiom
* ``hf:backend``             ``transformers.Trainer`` with ``num_items_in_batch``
* ``hf:mean``                ``transformers.Trainer`` with a model returning its micro-batch mean
* ``lightning_pl:backend``   ``lightning.Trainer(accumulate_grad_batches, gradient_clip_val)``
* ``opacus_dp:backend``      Opacus ``make_private`` / ``DPOptimizer``, noise 0

Rooms: ``common`` (shared: delegation of the required methods to the torch backend, windows,
the answer), ``schedule`` (``Loop`` → windows), then one module per trainer. Importing this
package imports no trainer library; each module imports its own at call time.
"""

__all__: list[str] = []
