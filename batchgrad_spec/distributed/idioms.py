"""The "Realised by" code blocks of spec §5.6–§5.11, run as written on the engines' ranks.

Each idiom is a fenced ``python`` block of the clause's informative "Realised by" note whose first
line says where it runs and what it gives, ``# jax.shard_map(check_vma=True) → ∇L`` or
``# torch DistributedDataParallel, gloo → R ∇L``, and whose body leaves its result in ``grad``.
``idioms(clause)`` reads them from ``spec/05-accumulation-and-parallelism.md``; the engines run
them (``JaxShardMapEngine.idiom``, ``TorchDDPEngine.idiom``) on one small least-squares problem
(``problem_for``), with these names bound:

* JAX, inside ``jax.shard_map(…, mesh=Mesh(3 host CPU devices, ("d",)), in_specs=(P(), P("d"),
  …))`` in the mode the first line names: ``θ`` the replicated weight, ``L_r(θ)`` the device's
  shard loss (its own mean, or weighted mean), ``S_r(θ)`` its summed loss Σ a_i ℓ_i, ``n_r`` its
  count, ``Ω_r`` its normaliser (n_r, or Σ c_i), ``R``, ``λ``; and ``jax``, ``lax``, ``jnp``;
* torch, on each of the R gloo ranks: ``model`` a fresh ``torch.nn.Linear(d, 1, bias=False)``
  holding θ, ``L_r(m)``, ``S_r(m)`` the shard's losses through the module ``m`` (the model or
  its ``DistributedDataParallel`` wrapper), ``n_r``, ``Ω_r`` (a tensor), ``world`` = ``R``,
  ``rank``, ``λ``; and ``torch``, ``dist``, ``ReduceOp``, ``DistributedDataParallel``.

``expected`` turns the text after "→" (``∇L``, ``R ∇L``, ``∇L_r``, ``Σ_r ∇L_r``, ``(1/R) Σ_r
∇L_r``, ``R ∇S_r / N``, ``… + λθ``) into each rank's value from the float64 reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference.batch import Batch
from reference.grads import batch_grad
from reference.layers import Dense, Network
from reference.losses import Loss, Reduction
from reference.parallel import normaliser, shards, sum_type
from reference.problem import Problem

from ..resources import SPEC

__all__ = ["LAM", "Idiom", "expected", "idioms", "problem_for", "run_jax", "run_torch",
           "table_idioms"]

CHAPTER = SPEC / "05-accumulation-and-parallelism.md"  # the checkout's spec/, or the wheel's
LAM = 0.25
"""λ of the penalty idioms (§5.10)."""
SIZES = {"5.7": (1, 2, 3)}
"""Shard sizes per clause: unequal for §5.7, (2, 2, 2) otherwise."""
HEADER = re.compile(r"^# (jax|torch)\b(.*?)→ (.+?)(?:\s{2,}.*)?$")
EXPECT = re.compile(r"^(?:(\d+|R|\(1/R\)) )?(Σ_r ∇L_r|Σ_r ∇S_r|∇L_r|∇L|∇S_r)( / N)?"
                    r"(?: \+ (\d+|R)?λθ)?$")


@dataclass(frozen=True)
class Idiom:
    clause: str
    index: int  # its place among the clause's blocks, from 1
    engine: str  # "jax" or "torch"
    check_vma: bool | None  # the shard_map mode its first line names (jax)
    expect: str  # the text after "→"
    code: str

    @property
    def name(self) -> str:
        return f"§{self.clause} block {self.index} ({self.engine}): → {self.expect}"


def idioms(clause: str, text: str | None = None) -> list[Idiom]:
    """The idiom blocks of ``clause`` (its section up to the next clause anchor, sub-clauses
    included), in order."""
    text = CHAPTER.read_text(encoding="utf-8") if text is None else text
    start = text.find(f'<a id="s{clause}"></a>')
    if start < 0:
        raise ValueError(f"§{clause} has no anchor in {CHAPTER.name}")
    m = re.compile(r'<a id="s(\d+\.\d+)"></a>').search(text, start + 1)
    section = text[start: m.start() if m else len(text)]
    out = []
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        h = HEADER.match(block.splitlines()[0])
        if h is None:
            continue  # an illustration, not an idiom
        vma = re.search(r"check_vma=(True|False)", h.group(2))
        out.append(Idiom(clause, len(out) + 1, h.group(1),
                         None if vma is None else vma.group(1) == "True", h.group(3).strip(),
                         block))
    return out


TABLE_ROW = re.compile(r"^\| `([^`…]+)`(?:, no collective| — the pmap idiom)? "
                       r"\| (.+?) \| (.+?) \|$")


def table_idioms(clause: str = "5.9", text: str | None = None) -> list[Idiom]:
    """The rows of §5.9's table whose idiom is one expression taken inside the body, as idioms
    ``grad = <expression>`` in each mode (``check_vma`` True, then False)."""
    text = CHAPTER.read_text(encoding="utf-8") if text is None else text
    start = text.find(f'<a id="s{clause}"></a>')
    if start < 0:
        raise ValueError(f"§{clause} has no anchor in {CHAPTER.name}")
    out = []
    for line in text[start + 1:].split('\n<a id="s', 1)[0].splitlines():
        m = TABLE_ROW.match(line)
        if m is None:
            continue
        for vma, cell in ((True, m.group(2)), (False, m.group(3))):
            out.append(Idiom(clause, len(out) + 1, "jax", vma, cell.strip("* "),
                             f"# jax.shard_map(check_vma={vma}) → {cell.strip('* ')}\n"
                             f"grad = {m.group(1)}\n"))
    return out


def problem_for(clause: str) -> tuple[Problem, tuple[int, ...]]:
    """The problem and shard sizes the idioms of ``clause`` run on: least squares
    f(x) = w·x, w = (1, −2), x_i = (2i, 2i + 1)/8, y_i = i/4, N = 6 (spec §5.9's table), with a
    class-free ``weighted_mean`` for §5.11 (c chosen so that the Ω_r differ)."""
    x = np.arange(12.0).reshape(6, 2) / 8
    y = (np.arange(6.0) / 4)[:, None]
    weighted = clause == "5.11"
    c = np.array([1.5, 0.25, 1.0, 1.0, 0.5, 2.0]) if weighted else None
    problem = Problem(Network((Dense(2, 1, bias=False),)), Loss("squared_error"),
                      Reduction("weighted_mean" if weighted else "mean"),
                      {"0.weight": np.array([[1.0, -2.0]])}, Batch(x, y, c))
    return problem, SIZES.get(clause, (2, 2, 2))


def expected(expect: str, problem: Problem, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Each rank's value of ``expect`` (the text after "→") by the float64 reference."""
    m = EXPECT.match(expect)
    if m is None:
        raise ValueError(f"cannot read the expectation {expect!r} (→ [k] ∇L | ∇L_r | Σ_r ∇L_r "
                         f"| ∇S_r [/ N] [+ [k]λθ])")
    ranks = len(sizes)
    parts = shards(problem, sizes)
    k = {None: 1.0, "R": float(ranks), "(1/R)": 1.0 / ranks}.get(m.group(1))
    k = float(m.group(1)) if k is None else k
    own = [batch_grad(p)[1]["0.weight"] for p in parts]
    term = {"∇L": [batch_grad(problem)[1]["0.weight"]] * ranks, "∇L_r": own,
            "Σ_r ∇L_r": [np.sum(own, axis=0)] * ranks,
            "∇S_r": [batch_grad(sum_type(p))[1]["0.weight"] for p in parts]}
    term["Σ_r ∇S_r"] = [np.sum(term["∇S_r"], axis=0)] * ranks
    term = term[m.group(2)]
    if m.group(3):
        term = [t / sum(normaliser(p) for p in parts) for t in term]
    pen = 0.0
    if m.group(4) is not None or "λθ" in expect:
        pen = {None: 1.0, "R": float(ranks)}.get(m.group(4)) or float(m.group(4))
    return [k * t + pen * LAM * problem.params["0.weight"] for t in term]


def _shard_arrays(problem: Problem, sizes: tuple[int, ...], dtype: np.dtype
                  ) -> tuple[np.ndarray, ...]:
    """(x, y, a, n, Ω) stacked over ranks, each shard padded to the largest with a_i = 0."""
    parts, top = shards(problem, sizes), max(sizes)
    x = np.zeros((len(parts), top, problem.batch.inputs.shape[1]), dtype)
    y = np.zeros((len(parts), top, 1), dtype)
    a = np.zeros((len(parts), top), dtype)
    for r, p in enumerate(parts):
        n = p.batch.size
        x[r, :n], y[r, :n] = p.batch.inputs, p.batch.targets
        a[r, :n] = 1.0 if p.batch.weights is None else p.batch.weights
    n_r = np.array([float(s) for s in sizes], dtype)
    omega = np.array([normaliser(p) for p in parts], dtype)
    return x, y, a, n_r, omega


def run_jax(mesh: Any, idiom: Idiom, problem: Problem, sizes: tuple[int, ...], dtype: str
            ) -> list[np.ndarray]:
    """Run a JAX idiom inside ``jax.shard_map`` over ``mesh`` (axis "d"): every device's
    ``grad``."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import PartitionSpec as P

    dt = np.dtype(dtype)
    x, y, a, n_r, omega = _shard_arrays(problem, sizes, dt)
    theta = problem.params["0.weight"].astype(dt)
    weighted = problem.reduction.name == "weighted_mean"
    code = compile(idiom.code, f"<{idiom.name}>", "exec")

    def body(θ, x, y, a, n, om):
        x, y, a, n, om = x[0], y[0], a[0], n[0], om[0]

        def S_r(t):
            return jnp.sum(a * jnp.sum((x @ t.T - y) ** 2, axis=-1))

        def L_r(t):
            return S_r(t) / (om if weighted else n)

        names = {"jax": jax, "lax": lax, "jnp": jnp, "θ": θ, "L_r": L_r, "S_r": S_r,
                 "n_r": n, "Ω_r": om, "R": len(sizes), "λ": dt.type(LAM)}
        exec(code, names)
        grad = names["grad"]
        if idiom.check_vma:  # every device's value out, varying or not
            try:
                grad = lax.pcast(grad, "d", to="varying")
            except ValueError:  # already varying
                pass
        return grad[None]

    d = P("d")
    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), d, d, d, d, d), out_specs=d,
                               check_vma=bool(idiom.check_vma)))
    out = np.asarray(fn(theta, x, y, a, n_r, omega), np.float64)
    return [out[r] for r in range(len(sizes))]


def run_torch(rank: int, idiom: Idiom, problem: Problem, sizes: tuple[int, ...], dtype: str
              ) -> np.ndarray:
    """Run a torch idiom on this gloo rank: its ``grad`` (a list of tensors, one here)."""
    import torch
    import torch.distributed as dist
    from torch.distributed import ReduceOp
    from torch.nn.parallel import DistributedDataParallel

    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    part = shards(problem, sizes)[rank]
    x = torch.tensor(part.batch.inputs, dtype=tdt)
    y = torch.tensor(part.batch.targets, dtype=tdt)
    a = torch.tensor(np.ones(part.batch.size) if part.batch.weights is None
                     else part.batch.weights, dtype=tdt)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).to(tdt)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(problem.params["0.weight"], dtype=tdt))

    def S_r(m):
        return (a * ((m(x) - y) ** 2).sum(-1)).sum()

    def L_r(m):
        return S_r(m) / a.sum()

    names = {"torch": torch, "dist": dist, "ReduceOp": ReduceOp,
             "DistributedDataParallel": DistributedDataParallel, "model": model, "L_r": L_r,
             "S_r": S_r, "n_r": part.batch.size, "Ω_r": a.sum().detach(),
             "world": dist.get_world_size(), "R": dist.get_world_size(), "rank": rank,
             "λ": LAM}
    exec(compile(idiom.code, f"<{idiom.name}>", "exec"), names)
    grad = names["grad"]
    return np.concatenate([g.detach().to(torch.float64).numpy().reshape(-1) for g in grad]
                          ).reshape(problem.params["0.weight"].shape)
