"""The backend contract (spec chapter 8): what a framework adapter implements, and how it is loaded.

Everything crossing the contract is numpy arrays and the dataclasses of ``reference.problem``
(and its parts).
Problems always arrive in float64; the backend casts to ``config.dtype`` itself. A backend
computes with its framework's own autodiff:

    loss_and_grad(problem, config)        -> (L, {name: ∇_θ L})       autodiff of the reduced loss
    per_example(problem, config, method)  -> (ℓ (N,), {name: g (N, *shape)})   g_i = ∇_θ ℓ_i

    train(problem, config, optimizer, batches) -> {name: θ}   OPTIONAL: one step of the
                                          framework's optimiser per batch (spec chapter 6)
    accumulate(problem, config, plan, method) -> {name: G}   OPTIONAL: gradient accumulation
                                          over micro-batches (spec §5.1–§5.5); ``method`` one of
                                          ``accumulation_methods()`` (default ("sum",))
    capabilities()  -> iterable of names  OPTIONAL: the features it supports (spec §8.6,
                                          ``reference.capabilities``); default: the 0.2.0 set
    known_deviations() -> KnownDeviations OPTIONAL: deviations by clause and feature (§8.7)

``per_example`` returns g_i itself, not g_i/N (spec §1.4). ``method`` is one of the backend's
``per_example_methods()``, at least "vmap" (vectorised) and "loop" (one example at a time).

``load_backend("name")`` resolves a built-in; ``load_backend("package.module:attribute")`` imports
any object that implements the contract (a class is instantiated with no arguments, a factory
function is called). Every failure is a ``BackendError`` whose message says what to do.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from .accumulation import micro_batches
from .batch import Batch
from .capabilities import capabilities_of, known_deviations_of
from .problem import DTYPES, Problem
from .types import BackendError, Grads, Undefined

__all__ = [  # Undefined is defined with the other exceptions (types.py) and raised by backends
    "CONTRACT", "OPTIONAL", "Backend", "BackendError", "Config", "Undefined",
    "accumulation_methods", "capabilities_of", "checked_accumulate", "checked_loss_and_grad",
    "checked_per_example", "checked_train", "copy_batch", "implements", "load_backend",
]


@dataclass(frozen=True)
class Config:
    """Where and how a backend computes: device ("cpu", "cuda", "gpu", …), dtype, precision mode."""

    device: str = "cpu"
    dtype: str = "float64"
    precision: str = "strict"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"Config(dtype={self.dtype!r}): choose one of {DTYPES}")

    def __str__(self) -> str:
        return f"{self.device}-{self.dtype}-{self.precision}"


@runtime_checkable
class Backend(Protocol):
    """What a framework adapter implements. See the module docstring and spec chapter 8.

    Optional methods (``OPTIONAL``, not part of this protocol's isinstance check): ``train``,
    ``accumulate``, ``capabilities() -> Iterable[str]`` (names of ``reference.capabilities.
    VOCABULARY``; read with ``capabilities_of``) and ``known_deviations()`` (``reference.
    capabilities.KnownDeviation`` entries)."""

    name: str

    def versions(self) -> Mapping[str, str]:
        """Framework name → version string, for reports (e.g. {"torch": "2.13.0"})."""
        ...

    def devices(self) -> Sequence[str]:
        """Devices present now, e.g. ("cpu", "cuda"); must not fail without an accelerator."""
        ...

    def dtypes(self) -> Sequence[str]:
        """Supported dtypes among ("float64", "float32")."""
        ...

    def per_example_methods(self) -> Sequence[str]:
        """Names of per-example gradient methods, e.g. ("vmap", "loop")."""
        ...

    def loss_and_grad(self, problem: Problem, config: Config) -> tuple[float, Mapping[str, Any]]:
        """The reduced loss L and ∇_θ L by the framework's autodiff of L."""
        ...

    def per_example(
        self, problem: Problem, config: Config, method: str
    ) -> tuple[Any, Mapping[str, Any]]:
        """Per-example losses ℓ_i (N,) and gradients g_i = ∇_θ ℓ_i ({name: (N, *shape)})."""
        ...


CONTRACT = ("name", "versions", "devices", "dtypes", "per_example_methods", "loss_and_grad",
            "per_example")


def _resolve(spec: str, builtins: Mapping[str, str]) -> Any:
    target = builtins.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(builtins)) or "(none)"
        raise BackendError(
            f"unknown backend {spec!r}: built-in backends are {known}; for your own backend pass "
            f"'package.module:attribute' naming an object that implements "
            f"reference.contract.Backend"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {spec!r}: cannot import module {module_name!r} ({exc}); is its framework "
            f"installed and the module on sys.path?"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise BackendError(
            f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}"
        ) from exc
    if inspect.isclass(obj) or (callable(obj) and not hasattr(obj, "loss_and_grad")):
        try:
            obj = obj()
        except Exception as exc:
            raise BackendError(f"backend {spec!r}: calling {target} raised {exc!r}") from exc
    return obj


def load_backend(spec: str, builtins: Mapping[str, str] | None = None) -> Backend:
    """Load a backend by built-in name or 'module:attribute', and check it has the contract."""
    obj = _resolve(spec, builtins or {})
    missing = [m for m in CONTRACT if not hasattr(obj, m)]
    if missing:
        raise BackendError(
            f"backend {spec!r} ({type(obj).__name__}) does not implement the contract: missing "
            f"{', '.join(missing)} (see reference.contract.Backend)"
        )
    dtypes = list(obj.dtypes())
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise BackendError(f"backend {spec!r}: dtypes() returned {dtypes}; allowed: {DTYPES}")
    capabilities_of(obj), known_deviations_of(obj)  # a declaration is checked when loaded (§8.6)
    return cast(Backend, obj)


# -- calling a backend through the contract, with every answer checked ----------------------------
def _where(backend: Backend, call: str, config: Config) -> str:
    return f"backend {backend.name!r} {call} on {config}"


def _as_array(backend: Backend, call: str, config: Config, what: str, x: Any,
              shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"{_where(backend, call, config)} returned {what} that is not a numeric "
                           f"array: {type(x).__name__}") from exc
    if a.shape != shape:
        raise BackendError(f"{_where(backend, call, config)} returned {what} of shape {a.shape}, "
                           f"but the contract requires {shape}")
    if not np.all(np.isfinite(a)):
        at = np.argwhere(~np.isfinite(a))[:3].tolist()
        where = f"value {float(a)!r}" if a.ndim == 0 else f"NaN or inf at {at}"
        raise BackendError(f"{_where(backend, call, config)} returned non-finite {what} "
                           f"({where}); the reference is finite here")
    return a


def _check_grads(backend: Backend, call: str, config: Config, grads: Any,
                 shapes: Mapping[str, tuple[int, ...]], lead: tuple[int, ...]) -> Grads:
    if not isinstance(grads, Mapping):
        raise BackendError(f"{_where(backend, call, config)} returned gradients as "
                           f"{type(grads).__name__}, expected a mapping name -> array")
    if set(grads) != set(shapes):
        raise BackendError(f"{_where(backend, call, config)} returned gradients for "
                           f"{sorted(grads)}, expected exactly {sorted(shapes)}")
    return {k: _as_array(backend, call, config, f"gradient {k!r}", grads[k], lead + shapes[k])
            for k in shapes}


def _call(backend: Backend, call: str, config: Config, fn: Any, *args: Any) -> Any:
    try:
        out = fn(*args)
    except (BackendError, Undefined):
        raise
    except Exception as exc:
        raise BackendError(
            f"{_where(backend, call, config)} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(out, tuple) and len(out) == 2):
        raise BackendError(f"{_where(backend, call, config)} returned {type(out).__name__}, "
                           f"expected a pair (loss, gradients)")
    return out


BATCH_ARRAYS = ("inputs", "targets", "weights", "mask", "variances")


def copy_batch(b: Batch) -> Batch:
    """A batch with arrays of its own (dropout masks included)."""
    def c(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.copy()

    drop = None if b.dropout is None else {k: v.copy() for k, v in b.dropout.items()}
    return Batch(b.inputs.copy(), b.targets.copy(), c(b.weights), c(b.mask), c(b.variances), drop)


def _same_batch(b: Batch, c: Batch) -> str | None:
    """The name of the first field in which ``c`` differs from ``b``, else None."""
    def same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        return x is y is None or (x is not None and y is not None and np.array_equal(x, y))

    for a in BATCH_ARRAYS:
        if not same(getattr(b, a), getattr(c, a)):
            return a
    bd, cd = b.dropout or {}, c.dropout or {}
    if set(bd) != set(cd) or any(not same(bd[k], cd[k]) for k in bd):
        return "dropout"
    return None


def _private_copy(problem: Problem) -> Problem:
    """A copy of ``problem`` with arrays of its own, for the backend to read (or wrongly write):
    the caller's problem, and so the counterexample a failure reports, stays as it was drawn."""
    return replace(problem, params={k: v.copy() for k, v in problem.params.items()},
                   batch=copy_batch(problem.batch))


def _check_unmodified(backend: Backend, call: str, config: Config, problem: Problem,
                      given: Problem) -> None:
    """The backend was handed ``given``, a private copy of ``problem``: it must be unchanged."""
    if set(given.params) != set(problem.params):
        raise BackendError(f"{_where(backend, call, config)} added or removed keys of "
                           f"problem.params in place; a problem is read-only")
    pairs = [(f"problem.params[{k!r}]", v, given.params[k]) for k, v in problem.params.items()]
    changed = _same_batch(problem.batch, given.batch)
    if changed:
        pairs.append((f"problem.batch.{changed}", np.zeros(1), np.ones(1)))
    for what, before, after in pairs:
        if not (before is after is None or (before is not None and after is not None
                                            and np.array_equal(before, after))):
            raise BackendError(f"{_where(backend, call, config)} modified {what} in place; a "
                               f"problem is read-only (a batch is evaluated at one θ, §2.5)")


def checked_loss_and_grad(
    backend: Backend, problem: Problem, config: Config
) -> tuple[float, Grads]:
    """``backend.loss_and_grad`` with its answer validated (shape, keys, finiteness, no writes)."""
    call = "loss_and_grad"
    try:
        given = _private_copy(problem)
        loss, grads = _call(backend, call, config, backend.loss_and_grad, given, config)
        _check_unmodified(backend, call, config, problem, given)
        loss_a = _as_array(backend, call, config, "loss", loss, ())
        return float(loss_a), _check_grads(backend, call, config, grads,
                                           problem.network.param_shapes(), ())
    except BackendError as exc:
        exc.call = "loss_and_grad"
        raise


def checked_per_example(backend: Backend, problem: Problem, config: Config,
                        method: str) -> tuple[np.ndarray, Grads]:
    """``backend.per_example`` with its answer validated (shape, keys, finiteness, no writes)."""
    call = f"per_example(method={method!r})"
    n = problem.batch.size
    try:
        given = _private_copy(problem)
        losses, grads = _call(backend, call, config, backend.per_example, given, config, method)
        _check_unmodified(backend, call, config, problem, given)
        return (_as_array(backend, call, config, "losses", losses, (n,)),
                _check_grads(backend, call, config, grads, problem.network.param_shapes(), (n,)))
    except BackendError as exc:
        exc.call = "per_example"
        raise


# -- the optional update step (spec chapter 6) ----------------------------------------------------
OPTIONAL = ("train", "accumulate", "capabilities", "known_deviations")
"""Optional contract methods: a backend without train/accumulate skips the clauses that need
them; without capabilities() it is assumed to support ``DEFAULT_CAPABILITIES`` (spec §8.6);
without known_deviations() it declares none (§8.7)."""


def implements(backend: Backend, method: str) -> bool:
    """Whether ``backend`` implements the optional contract method ``method`` (e.g. "train")."""
    return callable(getattr(backend, method, None))


def checked_train(backend: Backend, problem: Problem, config: Config, optimizer: Any,
                  batches: Sequence[Batch]) -> Grads:
    """``backend.train`` (optional, spec §6.1) with its answer validated like the others.

    ``train(problem, config, optimizer, batches)`` starts at ``problem.params``, takes one step of
    the framework's own optimiser (``optimizer``, a ``reference.update.Optimizer``) per batch,
    each batch reduced with ``problem.reduction`` and ``problem.loss``, and returns the final
    parameters {name: array of the parameter's shape}: exactly the problem's names, every value
    finite, the problem and the batches unchanged (they are private copies).
    """
    call = "train"
    if not implements(backend, call):
        exc = BackendError(f"backend {backend.name!r} does not implement the optional train()")
        exc.call = call
        raise exc
    try:
        given = _private_copy(problem)
        copies = [copy_batch(b) for b in batches]
        try:
            params = backend.train(given, config, optimizer, copies)  # type: ignore[attr-defined]
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{_where(backend, call, config)} raised {type(exc).__name__}: "
                               f"{exc}") from exc
        _check_unmodified(backend, call, config, problem, given)
        for i, (b, c) in enumerate(zip(batches, copies, strict=True)):
            changed = _same_batch(b, c)
            if changed:
                raise BackendError(f"{_where(backend, call, config)} modified "
                                   f"batches[{i}].{changed} in place; batches are read-only")
        shapes = problem.network.param_shapes()
        if not isinstance(params, Mapping):
            raise BackendError(f"{_where(backend, call, config)} returned parameters as "
                               f"{type(params).__name__}, expected a mapping name -> array")
        if set(params) != set(shapes):
            raise BackendError(f"{_where(backend, call, config)} returned parameters "
                               f"{sorted(params)}, expected exactly {sorted(shapes)}")
        return {k: _as_array(backend, call, config, f"parameter {k!r}", params[k], shapes[k])
                for k in shapes}
    except BackendError as exc:
        exc.call = call
        raise


# -- the optional gradient accumulation (spec §5.1–§5.5) ------------------------------------------
def accumulation_methods(backend: Backend) -> tuple[str, ...]:
    """The accumulators ``backend.accumulate`` offers: its ``accumulation_methods()`` if it has
    one, else ("sum",). "sum" adds the micro-batch gradients (PyTorch ``.grad``), "average" takes
    their running mean (``optax.MultiSteps``); see ``reference.accumulation``."""
    if not implements(backend, "accumulate"):
        return ()
    methods = getattr(backend, "accumulation_methods", None)
    return tuple(methods()) if callable(methods) else ("sum",)


def checked_accumulate(backend: Backend, problem: Problem, config: Config, plan: Any,
                       method: str = "sum") -> Grads:
    """``backend.accumulate`` (optional, spec §5.1) with its answer validated like the others.

    ``accumulate(problem, config, plan, method)`` differentiates, at ``problem.params``, each
    micro-batch objective J_k = s_k L_k + t_k (λ/2)‖θ‖² of the ``reference.accumulation.
    Accumulation`` plan (consecutive micro-batches of ``plan.sizes``, L_k reduced with
    ``plan.reduction`` or the problem's) with the framework's autodiff, one backward pass per
    micro-batch, and combines them with its accumulator ``method`` ("sum": G = Σ_k ∇J_k;
    "average": the running mean of ∇(K J_k), the same G). It returns G {name: array of the
    parameter's shape}: exactly the problem's names, every value finite, the problem unchanged.
    A plan that does not fit the problem is the caller's error (``PlanError``), raised before the
    backend is called.
    """
    micro_batches(problem, plan)  # PlanError when the plan does not fit the problem
    call = f"accumulate(method={method!r})"
    try:
        if not implements(backend, "accumulate"):
            raise BackendError(f"backend {backend.name!r} does not implement the optional "
                               f"accumulate()")
        if method not in accumulation_methods(backend):
            raise BackendError(f"backend {backend.name!r} offers the accumulators "
                               f"{accumulation_methods(backend)}, not {method!r}")
        given = _private_copy(problem)
        try:
            grads = backend.accumulate(given, config, plan, method)  # type: ignore[attr-defined]
        except (BackendError, Undefined):
            raise
        except Exception as exc:
            raise BackendError(f"{_where(backend, call, config)} raised {type(exc).__name__}: "
                               f"{exc}") from exc
        _check_unmodified(backend, call, config, problem, given)
        return _check_grads(backend, call, config, grads, problem.network.param_shapes(), ())
    except BackendError as exc:
        exc.call = "accumulate"
        raise
