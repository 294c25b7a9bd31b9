"""Data parallelism as JAX runs it: R host CPU devices, ``jax.shard_map``, ``lax.pmean``/``psum``.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts its CPU backend, and the
JAX of the test process (``--backend jax``) has started with one device long before. So
``JaxShardMapEngine`` runs one worker process (``python -m batchgrad_spec.distributed.jax_shard``,
see
``batchgrad_spec/distributed/workers.py``) whose environment carries ``XLA_FLAGS=
--xla_force_host_platform_device_count=R`` and ``JAX_PLATFORMS=cpu`` from its first instruction;
nobody has to set anything. The worker builds a one-axis mesh ``Mesh(devices[:R], ("d",))``.

Each rank's loss and gradient are the jax backend's own: ``batchgrad_spec.backends.jax_backend``
embeds each shard's problem in its fixed-shape bucket (``pad``) and ``_padded_batch`` is the very
function ``--backend jax`` jits for ``loss_and_grad`` (``jax.value_and_grad`` of its reduced
loss, every loss it supports), so every problem of a dtype and bucket runs one compiled program,
kept in the jax backend's persistent compilation cache. The R shards, each padded to the bucket
(unequal shard sizes are zero-coefficient padding), are stacked on a leading axis sharded over
"d" (``in_specs=P("d")``); θ and the network are replicated (``in_specs=P()``); inside the body
each device sees its shard. The program runs under ``check_vma=True`` (shard_map's default) and
computes every scheme at once:

* ``rank_mean``, ``count_weighted``, ``global_normaliser``, ``summed``: the gradient with respect
  to the device's own copy of θ, ``lax.pcast(θ, "d", to="varying")`` — so it is this rank's
  ∇L_r, as in a DDP process — then the explicit all-reduce: ``lax.pmean(g)``,
  ``lax.pmean(g · R·Ω_r/Ω)`` with Ω = ``lax.psum(Ω_r)``, ``lax.psum(g_sum / Ω)``, ``lax.psum(g)``
  (the penalty's gradient, by ``jax.grad`` too, added before the collective);
* ``shard_map_textbook``: the gradient with respect to the replicated θ itself, then
  ``lax.pmean`` — the pmap idiom, R × too large under ``check_vma=True`` (spec §5.9).

``variants`` (``JaxShardMapEngine.variants``) runs the idioms of spec §5.9's table on one small
problem, with ``check_vma`` True and False, the gradient inside and outside, ``lax.pcast``, the
deprecated ``jax.experimental.shard_map`` (``check_rep``) and ``jax.pmap``.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np

from reference.parallel import normaliser, shards, sum_type
from reference.problem import Problem
from reference.types import Grads

from . import Job
from .lifecycle import PooledEngine
from .workers import serve

__all__ = ["JaxShardMapEngine", "main"]

START_TIMEOUT_S = 180.0
"""Start-up: one interpreter importing jax, optax and the jax backend."""
REPLY_TIMEOUT_S = 300.0
"""A job's answer; the first job of a scheme and dtype compiles its program (seconds)."""
AXIS = "d"


# -- the worker process ----------------------------------------------------------------------------
class _Backend:
    """The jax backend's bucketed machinery as this engine uses it: ``pad`` (a problem in its
    bucket), ``_padded_batch`` (the backend's own value and gradient of the reduced loss, the
    function ``--backend jax`` jits) and ``unpad`` (the real parameters' gradients). The
    arguments of ``_padded_batch`` after θ, the network and the examples are the fields of
    ``Padded`` after ``ex``, whatever they are: arrays (coefficients, reduction, …), sharded with
    the examples, and Python scalars (a tier flag, …), which ``--backend jax`` passes as static
    arguments and this engine bakes into its program."""

    def __init__(self) -> None:
        import dataclasses

        from batchgrad_spec.backends import jax_backend as jb

        names = [f.name for f in dataclasses.fields(jb.Padded)]
        if names[:4] != ["layout", "params", "net", "ex"]:
            raise RuntimeError(f"batchgrad_spec/backends/jax_backend/buckets.py: Padded has fields "
                               f"{names}; batchgrad_spec/distributed/jax_shard.py:_Backend "
                               f"expects layout, params, net, ex first")
        self.jb, self.extra = jb, names[4:]

    def pad(self, problem: Problem, dtype: np.dtype
            ) -> tuple[Any, list[np.ndarray], tuple[tuple[int, Any], ...]]:
        """(padded, the array fields after ``ex``, the static ones as (position, value))."""
        padded = self.jb.pad(problem, dtype)
        values = [getattr(padded, f) for f in self.extra]
        static = tuple((i, v) for i, v in enumerate(values)
                       if isinstance(v, bool | int | float | str) or v is None)
        skip = {i for i, _ in static}
        return padded, [np.asarray(v) for i, v in enumerate(values) if i not in skip], static

    def value_and_grad(self, params: Any, net: Any, ex: Any, arrays: list[Any],
                       static: tuple[tuple[int, Any], ...]) -> Any:
        extra = list(arrays)
        for i, v in static:
            extra.insert(i, v)
        return self.jb._padded_batch(params, net, ex, *extra)

    def unpad(self, problem: Problem, padded: Any, grads: Any, lead: tuple) -> Grads:
        out = self.jb.unpad(problem, padded.layout, grads, lead)
        return {k: np.asarray(v, np.float64) for k, v in out.items()}


class _State:
    def __init__(self, world: int) -> None:
        import jax
        from jax.sharding import Mesh

        devices = jax.devices("cpu")
        if len(devices) < world:
            raise RuntimeError(f"jax sees {len(devices)} CPU devices, needs {world}: XLA_FLAGS="
                               f"{os.environ.get('XLA_FLAGS')!r} was not honoured")
        self.world = world
        self.backend = _Backend()
        self.mesh = Mesh(np.array(devices[:world]), (AXIS,))
        self.programs: dict[tuple[int, tuple[tuple[int, Any], ...]], Any] = {}


ALL = ("rank_mean", "count_weighted", "global_normaliser", "summed", "shard_map_textbook")


def _program(state: _State, n_extra: int, static: tuple[tuple[int, Any], ...]) -> Any:
    """The jitted shard_map computing every scheme at once (two backward passes, shared): (θ,
    net, examples, the other ``Padded`` fields, Ω_r data, penalty a_r, λ) → {scheme: each
    device's gradient, stacked on a leading axis}. One program per dtype and bucket (and value
    of the backend's static arguments)."""
    key = (n_extra, static)
    if key in state.programs:
        return state.programs[key]
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import PartitionSpec as P

    backend, world = state.backend, state.world

    def body(params, net, ex, extra, omega_host, weights, from_weights, pen, lam):
        # this device's shard: drop the leading axis of length 1
        ex, extra = jax.tree.map(lambda a: a[0], (ex, extra))
        omega_host, weights, pen = omega_host[0], weights[0], pen[0]

        def penalty(theta):  # a_r (λ/2)‖θ‖²; padded entries of θ are 0
            return pen * 0.5 * lam * sum(jnp.sum(t * t) for t in jax.tree.leaves(theta))

        def each(fn, *trees):  # fn over the parameters, every device's copy out
            return jax.tree.map(lambda *t: fn(*t)[None], *trees)

        out = {}
        # the pmap idiom: the backend's gradient of the rank's loss taken inside the body with
        # respect to the replicated θ, then lax.pmean (spec §5.9)
        _, g_inside = backend.value_and_grad(params, net, ex, extra, static)
        out["shard_map_textbook"] = each(lambda t: lax.pmean(t, AXIS), g_inside)
        # θ as this device's own copy (varying over "d"): the gradient is then this rank's own
        # ∇L_r, as in a DDP process, and the all-reduce below is explicit
        theta = jax.tree.map(lambda t: lax.pcast(t, AXIS, to="varying"), params)
        _, g = backend.value_and_grad(theta, net, ex, extra, static)
        gp = jax.grad(penalty)(theta)
        # Ω_r: Σ c_i from the data (weighted_mean), else the shard's count; Ω = psum
        omega_r = jnp.where(from_weights, jnp.sum(weights), omega_host)
        omega = lax.psum(omega_r, AXIS)
        scale = world * omega_r / omega
        out["rank_mean"] = each(lambda a, b: lax.pmean(a + b, AXIS), g, gp)
        out["count_weighted"] = each(lambda a, b: lax.pmean(a * scale + b, AXIS), g, gp)
        out["global_normaliser"] = each(lambda a, b: lax.psum(a / omega + b, AXIS), g, gp)
        out["summed"] = each(lambda a, b: lax.psum(a + b, AXIS), g, gp)
        return out

    d, r = P(AXIS), P()
    fn = jax.jit(jax.shard_map(body, mesh=state.mesh, in_specs=(r, r, d, d, d, d, r, d, r),
                               out_specs=d, check_vma=True))
    state.programs[key] = fn
    return fn


def _run_job(state: _State, job: Job) -> list[Grads]:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if job.scheme == "shard_map_textbook" and job.penalty_ranks:
        raise ValueError("shard_map_textbook takes no penalty")
    dt = np.dtype(job.dtype)
    own = shards(job.problem, job.sizes)
    local = [sum_type(p) for p in own] if job.scheme == "global_normaliser" else own
    pads = [state.backend.pad(p, dt) for p in local]
    first, static = pads[0][0], pads[0][2]
    shapes = {(jax.tree.map(np.shape, pd.ex), st) for pd, _, st in pads}
    if len(shapes) != 1:
        raise ValueError(f"shards padded to different buckets {shapes}: keep every shard "
                         f"within one batch bucket")

    def stack(*leaves: np.ndarray) -> np.ndarray:
        return np.stack(leaves)

    ex = jax.tree.map(stack, *[pd.ex for pd, _, _ in pads])
    extra = [np.stack([e[i] for _, e, _ in pads]) for i in range(len(pads[0][1]))]
    weighted = own[0].reduction.name == "weighted_mean"
    n_max = max(ex_leaf.shape[1] for ex_leaf in jax.tree.leaves(ex))
    weights = np.zeros((len(own), n_max), dt)
    if weighted:
        for r, p in enumerate(own):
            assert p.batch.weights is not None
            weights[r, : p.batch.size] = p.batch.weights
    omega_host = np.array([normaliser(p) for p in own], dt)
    pen = np.array(job.penalty_ranks or (0.0,) * len(own), dt)
    d, r_ = NamedSharding(state.mesh, P(AXIS)), NamedSharding(state.mesh, P())
    args = (jax.device_put(first.params, r_), jax.device_put(first.net, r_),
            jax.device_put(ex, d), jax.device_put(extra, d), jax.device_put(omega_host, d),
            jax.device_put(weights, d), jax.device_put(np.asarray(weighted), r_),
            jax.device_put(pen, d), jax.device_put(np.asarray(job.lam, dt), r_))
    grads = jax.device_get(_program(state, len(extra), static)(*args)[job.scheme])
    return [state.backend.unpad(job.problem, first, grads, (r,)) for r in range(len(own))]


def _variants(state: _State, job: Job) -> dict[str, Any]:
    """Spec §5.9's table: the gradient of a linear least-squares problem (``Dense(d, 1,
    bias=False)``, squared error, mean) over R equal shards by each idiom. Returns
    {idiom: gradient of "0.weight"} (NaN where the idiom raises) and the jax version."""
    import jax
    import jax.experimental.shard_map as experimental
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    world, mesh = state.world, state.mesh
    dt = np.dtype(job.dtype)
    problem = job.problem
    w0 = problem.params["0.weight"].astype(dt)
    x0, y0 = problem.batch.inputs.astype(dt), problem.batch.targets.astype(dt)

    def loss(w, x, y):  # mean over examples of (x·w − y)²: the problem's mean squared error
        return jnp.mean((x @ w.T - y) ** 2)

    def put(a, spec):
        return jax.device_put(a, NamedSharding(mesh, spec))

    w, x, y = put(w0, P()), put(x0, P(AXIS)), put(y0, P(AXIS))
    specs = (P(), P(AXIS), P(AXIS))
    inside = {
        "grad inside, then pmean": lambda w, x, y: lax.pmean(jax.grad(loss)(w, x, y), AXIS),
        "grad inside, then psum": lambda w, x, y: lax.psum(jax.grad(loss)(w, x, y), AXIS),
        "grad inside, no collective": lambda w, x, y: jax.grad(loss)(w, x, y),
        "grad inside of pmean(loss)":
            lambda w, x, y: jax.grad(lambda v: lax.pmean(loss(v, x, y), AXIS))(w),
        "grad inside of psum(loss)":
            lambda w, x, y: jax.grad(lambda v: lax.psum(loss(v, x, y), AXIS))(w),
        "pcast θ to varying, grad inside, then pmean":
            lambda w, x, y: lax.pmean(jax.grad(loss)(lax.pcast(w, AXIS, to="varying"), x, y),
                                      AXIS),
    }
    out: dict[str, Any] = {"jax": jax.__version__}
    for check in (True, False):
        for name, fn in inside.items():
            key = f"shard_map(check_vma={check}): {name}"
            try:
                prog = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(),
                                             check_vma=check))
                out[key] = np.asarray(prog(w, x, y), np.float64)
            except Exception as exc:  # reported as NaN with the error
                out[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        outer = jax.shard_map(lambda w, x, y: lax.pmean(loss(w, x, y), AXIS), mesh=mesh,
                              in_specs=specs, out_specs=P(), check_vma=check)
        out[f"shard_map(check_vma={check}): grad outside of pmean(loss)"] = np.asarray(
            jax.jit(jax.grad(outer))(w, x, y), np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            legacy = experimental.shard_map(inside["grad inside, then pmean"], mesh, specs, P(),
                                            check_rep=check)
        out[f"experimental.shard_map(check_rep={check}): grad inside, then pmean"] = np.asarray(
            jax.jit(legacy)(w, x, y), np.float64)
    n = x0.shape[0] // world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = jax.pmap(lambda w, x, y: lax.pmean(jax.grad(loss)(w, x, y), AXIS), axis_name=AXIS,
                      in_axes=(None, 0, 0), devices=list(mesh.devices.flat))
        out["pmap: grad inside, then pmean"] = np.asarray(
            pm(w0, x0.reshape(world, n, -1), y0.reshape(world, n, -1))[0], np.float64)
    return out


def _handle(state: _State, payload: tuple[str, Job]) -> Any:
    kind, job = payload
    if kind == "variants":
        return _variants(state, job)
    if kind == "idiom":  # a spec code block (batchgrad_spec/distributed/idioms.py)
        from .idioms import run_jax

        return run_jax(state.mesh, *job)
    return _run_job(state, job)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="the JAX shard_map engine's worker (internal)")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.worker, lambda: _State(args.world), _handle)


# -- the engine (this process) ---------------------------------------------------------------------
class JaxShardMapEngine(PooledEngine):
    """``jax.shard_map`` over R host CPU devices of one worker process, started once
    (``lifecycle.PooledEngine``: start, timeouts, failures)."""

    name = "jax"
    module = "batchgrad_spec.distributed.jax_shard"
    label = "jax shard_map worker"
    title = "jax shard_map"
    stopped_text = "the worker"
    start_timeout_s = START_TIMEOUT_S
    reply_timeout_s = REPLY_TIMEOUT_S

    @property
    def workers_text(self) -> str:
        return f"the worker with {self.world_size} host devices"

    def _pool_size(self) -> int:
        return 1

    def _pool_env(self) -> dict[str, str]:
        flags = os.environ.get("XLA_FLAGS", "")
        flags = " ".join(f for f in flags.split()
                         if not f.startswith("--xla_force_host_platform_device_count"))
        return {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count="
                             f"{self.world_size}".strip(),
                "JAX_PLATFORMS": "cpu"}

    def run(self, job: Job) -> list[Grads]:
        if len(job.sizes) != self.world_size:
            raise ValueError(f"job has {len(job.sizes)} shards; the mesh has "
                             f"{self.world_size} devices")
        return self._request(job, [("job", job)])[0]  # type: ignore[no-any-return]

    def variants(self, job: Job) -> dict[str, Any]:
        """Spec §5.9's table of idioms on ``job.problem`` (a bias-free linear least-squares
        problem with N = R·n): {idiom: gradient of "0.weight", or the error it raised}."""
        return self._request(job, [("variants", job)])[0]  # type: ignore[no-any-return]

    def idiom(self, idiom: Any, problem: Problem, sizes: tuple[int, ...], dtype: str
              ) -> list[np.ndarray]:
        """Every device's ``grad`` of a spec idiom block (``idioms.run_jax``)."""
        return self._request(Job(problem, dtype, sizes, "rank_mean"),  # type: ignore[no-any-return]
                             [("idiom", (idiom, problem, sizes, dtype))])[0]


if __name__ == "__main__":
    main(sys.argv[1:])
