"""Losses and reductions as units: ℓ_i of each loss, the reduction's κ_i with L = Σ κ_i ℓ_i, and
their error model (spec §1.1, §1.2, chapter 3, §7.1).

The value and VJP rules of each loss on rows of outputs are in ``reference.ops.LOSSES``; this
room holds the descriptions (``Loss``, ``Reduction``) and the bound rules: ``loss_bound`` (ℓ and
∂ℓ/∂f of each row, with error bounds) and ``coefficient_error`` (the relative error of the
computed κ_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import activation
from .batch import Batch
from .capabilities import register
from .numerics import R, Rounding, gamma
from .ops import sigmoid, smoothed_targets
from .types import ProblemError

__all__ = [
    "CLASS_WEIGHTS", "CORE_LOSSES", "CORE_REDUCTIONS", "ELEMENTWISE_LOSSES", "IGNORE_INDEX",
    "LABEL_SMOOTHING", "LOSS_FEATURES", "LOSS_NAMES", "REDUCTION_FEATURES", "REDUCTION_NAMES",
    "SOFT_TARGETS",
    "Loss", "Reduction", "coefficient_error", "cotangent_factors", "loss_bound", "rows",
]

LOSS_NAMES = ("squared_error", "softmax_cross_entropy", "bce_with_logits", "huber",
              "gaussian_nll")
REDUCTION_NAMES = ("mean", "sum", "weighted", "weighted_mean", "sequence_mean")
CORE_LOSSES = LOSS_NAMES[:2]
CORE_REDUCTIONS = REDUCTION_NAMES[:4]
"""The chapter-2 vocabulary (spec 0.1.0): what the default strategies draw. Chapters 3 and 4 opt
in to the rest."""
ELEMENTWISE_LOSSES = ("squared_error", "bce_with_logits", "huber", "gaussian_nll")
"""Losses applied to each of the D outputs and averaged over them: targets are float (·, D)."""


LOSS_FEATURES = {name: register(f"loss:{name}", what) for name, what in (
    ("squared_error", "Loss('squared_error'): ℓ = (1/D) Σ_d (f_d − y_d)², float targets (N, D) "
                      "(§1.1, §3.2)"),
    ("softmax_cross_entropy", "Loss('softmax_cross_entropy'): −log softmax(f)_y, int labels "
                              "(N,) in [0, C) (§1.1)"),
    ("bce_with_logits", "Loss('bce_with_logits'): binary cross-entropy on logits, targets in "
                        "[0, 1] (§3.8)"),
    ("huber", "Loss('huber', delta=δ): ½r² for |r| ≤ δ, δ(|r| − ½δ) otherwise (§3.8)"),
    ("gaussian_nll", "Loss('gaussian_nll'): ½(log v + r²/v), variances v in batch.variances "
                     "(§3.8)"))}
"""Loss name → its capability name ``loss:<name>`` (spec §8.6)."""
CLASS_WEIGHTS = register("loss:class_weights", "cross-entropy with class weights w_k "
                         "(Loss.class_weights); a mean divides by Σ w_{y_i} (§3.3)")
IGNORE_INDEX = register("loss:ignore_index", "cross-entropy with Loss.ignore_index: rows whose "
                        "label equals it count 0, also in a mean's count (§3.4)")
LABEL_SMOOTHING = register("loss:label_smoothing", "cross-entropy with Loss.label_smoothing ε: "
                           "targets (1 − ε) q + ε/C (§3.5)")
SOFT_TARGETS = register("loss:soft_targets", "cross-entropy with float probability targets "
                        "(N, C) instead of int labels (§3.6)")
REDUCTION_FEATURES = {name: register(f"reduction:{name}", what) for name, what in (
    ("mean", "Reduction('mean'): L = Σ ℓ_i / Σ ω_i (§1.2, §3.1)"),
    ("sum", "Reduction('sum'): L = Σ ℓ_i (§1.2)"),
    ("weighted", "Reduction('weighted'): L = Σ c_i ℓ_i, c_i in batch.weights, any sign (§2.3)"),
    ("weighted_mean", "Reduction('weighted_mean'): L = Σ c_i ℓ_i / Σ c_i, batch.weights (§2.4)"),
    ("sequence_mean", "Reduction('sequence_mean'): L = (1/N) Σ_i ℓ_i / T_i over sequences "
                      "(§3.7)"))}
"""Reduction name → its capability name ``reduction:<name>`` (spec §8.6)."""


def rows(x: np.ndarray, lead: int) -> np.ndarray:
    """(N, [T,] ...) → (rows, ...): examples, or tokens of a sequence batch, as rows."""
    return x.reshape((-1,) + x.shape[lead:])


@dataclass(frozen=True)
class Loss:
    """Per-example loss ℓ_i (spec §1.1, chapter 3): the framework's ``reduction="none"`` value.

    Elementwise losses act on each of the D outputs (residual r = f − y) and are averaged over D:
      squared_error    ℓ = (1/D) Σ_d r_d²
      bce_with_logits  ℓ = (1/D) Σ_d max(f_d, 0) − f_d y_d + log(1 + e^{−|f_d|}),  y ∈ [0, 1]
      huber            ℓ = (1/D) Σ_d h_δ(r_d),  h_δ(r) = ½r² (|r| ≤ δ), δ(|r| − ½δ) otherwise
      gaussian_nll     ℓ = (1/D) Σ_d ½(log v_d + r_d²/v_d),  variances v from ``batch.variances``
    softmax_cross_entropy, with class weights w (default 1), label smoothing ε and targets q:
      ℓ_i = −Σ_k w_k q̃_ik log softmax(f_i)_k,   q̃_i = (1 − ε) q_i + ε/C
    where q_i = e_{y_i} for an integer label (ℓ_i = 0 when y_i = ignore_index) or the given
    probability row (soft targets). For sequences ℓ_i is the sum over the valid tokens (§3.7).
    """

    name: str
    class_weights: tuple[float, ...] | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    delta: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ProblemError(f"Loss({self.name!r}): unknown loss; choose one of {LOSS_NAMES}")
        ce = self.name == "softmax_cross_entropy"
        if not ce and (self.class_weights is not None or self.ignore_index is not None
                       or self.label_smoothing != 0.0):
            raise ProblemError(f"{self!r}: class_weights, ignore_index and label_smoothing "
                               f"belong to softmax_cross_entropy only")
        if self.name != "huber" and self.delta != 1.0:
            raise ProblemError(f"{self!r}: delta belongs to huber only")
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
            if min(self.class_weights) < 0:
                raise ProblemError(f"{self!r}: class weights must be >= 0")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ProblemError(f"{self!r}: label_smoothing must lie in [0, 1]")
        if not self.delta > 0:
            raise ProblemError(f"{self!r}: delta must be > 0")

    @property
    def elementwise(self) -> bool:
        return self.name in ELEMENTWISE_LOSSES

    def features(self) -> frozenset[str]:
        """``loss:<name>`` and its options (soft targets are the batch's: ``Problem.features``)."""
        out = {LOSS_FEATURES[self.name]}
        if self.class_weights is not None:
            out.add(CLASS_WEIGHTS)
        if self.ignore_index is not None:
            out.add(IGNORE_INDEX)
        if self.label_smoothing:
            out.add(LABEL_SMOOTHING)
        return frozenset(out)

    def __repr__(self) -> str:
        extra = ""
        if self.class_weights is not None:
            extra += f", class_weights={self.class_weights!r}"
        if self.ignore_index is not None:
            extra += f", ignore_index={self.ignore_index!r}"
        if self.label_smoothing:
            extra += f", label_smoothing={self.label_smoothing!r}"
        if self.delta != 1.0:
            extra += f", delta={self.delta!r}"
        return f"Loss({self.name!r}{extra})"


@dataclass(frozen=True)
class Reduction:
    """How per-example losses become the batch loss L = Σ κ_i ℓ_i (spec §1.2, §3.1).

    mean: L = Σ ℓ_i / Σ ω_i, ω_i the count of example i (``Problem.counts``: 1, or w_{y_i} for
    weighted cross-entropy, 0 for an ignored label, the valid tokens of a sequence)
    sum: L = Σ ℓ_i    weighted: L = Σ c_i ℓ_i    weighted_mean: L = Σ c_i ℓ_i / Σ c_i
    sequence_mean: L = (1/N) Σ_i ℓ_i / T_i (sequences; T_i valid tokens of sequence i)
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in REDUCTION_NAMES:
            raise ProblemError(
                f"Reduction({self.name!r}): unknown reduction; choose one of {REDUCTION_NAMES}"
            )

    @property
    def weighted(self) -> bool:
        return self.name in ("weighted", "weighted_mean")

    def features(self) -> frozenset[str]:
        return frozenset({REDUCTION_FEATURES[self.name]})

    def coefficients(self, counts: np.ndarray, weights: np.ndarray | None,
                     tokens: np.ndarray | None = None) -> np.ndarray:
        """The κ_i with L = Σ κ_i ℓ_i, so ∇L = Σ κ_i g_i (spec §1.2, §3.1).

        ``counts`` are the ω_i; a mean over Σ ω_i = 0 (every label ignored) is defined as
        κ = 0: L = 0 and ∇L = 0 (spec §3.4). ``tokens`` are the T_i of a sequence batch."""
        n = len(counts)
        if self.name == "mean":
            total = float(np.sum(counts))
            return np.full(n, 1.0 / total) if total != 0 else np.zeros(n)
        if self.name == "sum":
            return np.ones(n)
        if self.name == "sequence_mean":
            assert tokens is not None
            return 1.0 / (n * tokens)
        assert weights is not None
        if self.name == "weighted":
            return np.asarray(weights, dtype=np.float64)
        return np.asarray(weights, dtype=np.float64) / np.sum(weights)

    def __repr__(self) -> str:
        return f"Reduction({self.name!r})"


# -- the error model ----------------------------------------------------------------------------
def _abs_terms(r: Rounding, v: np.ndarray, e: np.ndarray, shadow: np.ndarray, ops: int) -> R:
    """A value computed by ``ops`` roundings of terms of total magnitude ``shadow`` (a formula
    frameworks write in more than one way): propagated error e plus ops·u·shadow."""
    return R(v, e + ops * r.u * shadow + r.tiny)


def cotangent_factors(loss: Loss, b: Batch, out: R) -> tuple[int, int, np.ndarray]:
    """∂ℓ/∂f as a backend forms it: a sum of ``terms`` products of factors, formed in any order,
    each of which may flush a subnormal partial product (spec §7.1.2). Returns (the number of
    product and addition steps, the number of product terms, Π max(1, |factor|) of a term, the
    largest over the terms; (M, D)):

    squared error  (1/D)·2·r                         2 steps, gain 2·max(1, |r|)
    huber          (1/D)·½·2·q and (1/D)·δ·sign(r)   7 steps, gain 2·max(1, q, δ), q = min(|r|, δ)
    gaussian NLL   (1/D)·½·(1/v)·2·r                 4 steps, gain 2·max(1, 1/v)·max(1, |r|)
    BCE            (1/D)·y·σ(−z) and (1/D)(1 − y)σ(z)   5 steps, gain 1 (every factor ≤ 1)
    cross-entropy  (Σ_j w_j q̃_j)·p_k − w_k q̃_k     3C + 3 steps (q̃ and Σ formed too),
                                                     gain max(1, max w)·max(1, Σ|w q̃|)
    The batch seed multiplies in κ_i as one more factor (``reference.bounds``)."""
    lead = 2 if b.sequence else 1
    shape = out.v.shape
    mag = np.abs(out.v) + out.e
    if loss.name == "softmax_cross_entropy":
        c = shape[1]
        w = np.ones(c) if loss.class_weights is None else np.abs(np.asarray(loss.class_weights))
        q = smoothed_targets(rows(b.targets, lead), c, loss.label_smoothing, loss.ignore_index)
        total = np.sum(w * np.abs(q), axis=1, keepdims=True)
        gain = max(1.0, float(w.max())) * np.maximum(1.0, total)
        return 3 * c + 3, 2, np.broadcast_to(gain, shape)
    y = rows(b.targets, lead)
    r = mag + np.abs(y)  # |f − y| ≤ |f| + e + |y|: the residual's magnitude, computed or exact
    if loss.name == "squared_error":
        return 2, 1, 2.0 * np.maximum(1.0, r)
    if loss.name == "huber":
        return 7, 2, 2.0 * np.maximum(np.maximum(1.0, np.minimum(r, loss.delta)), loss.delta)
    if loss.name == "gaussian_nll":
        assert b.variances is not None
        var = rows(b.variances, lead)
        return 4, 1, 2.0 * np.maximum(1.0, 1.0 / var) * np.maximum(1.0, r)
    return 5, 2, np.ones(shape)  # bce_with_logits


def loss_bound(loss: Loss, b: Batch, out: R, r: Rounding) -> tuple[R, R]:
    """Rows of f (M, D) → (ℓ per row (M,), ∂ℓ/∂f (M, D)) with error bounds (spec §7.1, §3);
    ∂ℓ/∂f includes its flushed partial products formed in any order (§7.1.2)."""
    value, cot = _loss_bound(loss, b, out, r)
    steps, _, gain = cotangent_factors(loss, b, out)
    flushed = r.tiny * steps * gain * r.maybe_nonzero(cot)
    return value, R(cot.v, cot.e + flushed)


def _loss_bound(loss: Loss, b: Batch, out: R, r: Rounding) -> tuple[R, R]:
    lead = 2 if b.sequence else 1
    d = out.v.shape[1]
    inv_d = r.const(1.0 / d)
    if loss.name == "softmax_cross_entropy":
        return _cross_entropy(loss, b, out, r, lead)
    y = rows(b.targets, lead)
    res = r.sub(out, r.exact(y))
    if loss.name == "squared_error":
        value = r.mul(r.sum(r.mul(res, res), axis=1), inv_d)
        return value, r.mul(r.const(2.0 / d), res)
    if loss.name == "bce_with_logits":
        # max(z,0) − z y + log(1 + e^{−|z|}) (torch: log(e^{−m} + e^{−z−m}); optax: via
        # log σ(±z)): ≤ 4 roundings of terms of size |z| + |z y| + 1, the log's error
        # relative to 1 (a log of a sum ≥ 1), and |∂ℓ/∂z| = |σ(z) − y| ≤ 1 times e_z.
        z = out.v
        sp = np.log1p(np.exp(-np.abs(z)))
        v = np.maximum(z, 0.0) - z * y + sp
        e = out.e + 4 * r.u * (np.abs(z) + np.abs(z * y) + 1.0) + r.fn_rel * (1.0 + sp)
        elem = R(v, e + r.tiny)
        # ∂ℓ/∂z = σ(z) − y; a backward kernel may form σ(z) as 1 − σ(−z) (PyTorch's batched
        # rule under torch.func.vmap does: 5·10⁻⁶ relative at z = −12.5), off by 2u absolute;
        # autodiff of optax's −y log σ(z) − (1 − y) log σ(−z) gives −yσ(−z) + (1 − y)σ(z):
        # each σ to ELEMENTARY_ULPS, three roundings, of terms |y|σ(−z) + |1 − y|σ(z)
        # (and PyTorch's vmap decomposition into clamp_min/exp/log gives (1 − y) − σ(−z)-like
        # forms): every such form is ≤ 4 roundings and two σ's of terms each ≤ 1 in size
        sig, _ = activation("sigmoid", out, r)
        terms = np.abs(y) + np.abs(1.0 - y) + sigmoid(-z) + sig.v
        sig = R(sig.v, sig.e + (r.fn_rel + 4 * r.u) * terms)
        return r.mul(r.sum(elem, axis=1), inv_d), r.mul(r.sub(sig, r.exact(y)), inv_d)
    if loss.name == "huber":
        delta = loss.delta
        a = np.abs(res.v)
        quad = np.minimum(a, delta)
        v = 0.5 * quad * quad + delta * (a - quad)
        # ½q² + δ(|r| − q) or its two-branch form: ≤ 4 roundings of ½q² + δ|r|; Lipschitz
        # |h'| = min(|r|, δ); the branches agree to ½e² at |r| = δ (first order: 0)
        elem = _abs_terms(r, v, np.minimum(a, delta) * res.e, 0.5 * quad**2 + delta * a, 4)
        slope = R(np.clip(res.v, -delta, delta), res.e + r.u * delta)
        return r.mul(r.sum(elem, axis=1), inv_d), r.mul(slope, inv_d)
    if loss.name == "gaussian_nll":
        assert b.variances is not None
        var = rows(b.variances, lead)
        lv = np.log(var)
        q = res.v * res.v / var
        v = 0.5 * (lv + q)
        # ½(log v + r²/v): log to ELEMENTARY_ULPS, ≤ 4 roundings of |log v| + r²/v;
        # ∂/∂r = r/v
        elem = R(v, np.abs(res.v / var) * res.e + r.fn_rel * np.abs(lv)
                 + 4 * r.u * (np.abs(lv) + q) + r.tiny)
        cot = r.div(res, r.exact(var * d))
        return r.mul(r.sum(elem, axis=1), inv_d), R(cot.v, cot.e + 2 * r.u * np.abs(cot.v))
    raise KeyError(loss.name)


def _cross_entropy(loss: Loss, b: Batch, out: R, r: Rounding, lead: int) -> tuple[R, R]:
    """ℓ = −Σ_k w_k q̃_k ls_k and ∂ℓ/∂z = (Σ_k w_k q̃_k) p − w ⊙ q̃, ls = log-softmax, p = e^{ls}.

    q̃ = (1 − ε)q + ε/C is formed by the backend (two constants rounded: 2u|q̃|). Frameworks
    group the sums differently (PyTorch: (1 − ε)·nll + (ε/C)·Σ_k w_k(−ls_k)): every grouping
    of the C products errs by ≤ (γ_C + 3u) Σ_k |w_k q̃_k ls_k| (spec §7.1)."""
    c = out.v.shape[1]
    m = R(out.v.max(axis=1, keepdims=True), out.e.max(axis=1, keepdims=True))
    s = r.sub(out, m)
    lse = r.log(r.sum(r.exp(s), axis=1))
    ls = r.sub(s, R(lse.v[:, None], lse.e[:, None]))
    w = np.ones(c) if loss.class_weights is None else np.asarray(loss.class_weights)
    q = smoothed_targets(rows(b.targets, lead), c, loss.label_smoothing, loss.ignore_index)
    wq = w * q
    hard = loss.label_smoothing == 0.0 and b.targets.dtype.kind in "iu"
    wq_rel = 0.0 if hard else 2 * r.u  # one-hot q̃ is exact
    terms = np.abs(wq * ls.v)
    value = R(-np.sum(wq * ls.v, axis=1),
              np.sum(np.abs(wq) * ls.e, axis=1)
              + (gamma(c, r.u) + 3 * r.u + wq_rel) * terms.sum(axis=1)
              + r.tiny * (terms > 0).sum(axis=1))
    p = r.exp(ls)
    total = np.abs(wq).sum(axis=1, keepdims=True)
    cot_v = wq.sum(axis=1, keepdims=True) * p.v - wq
    shadow = total * np.abs(p.v) + np.abs(wq)
    cot = R(cot_v, total * p.e + (gamma(c, r.u) + 3 * r.u + wq_rel) * shadow
            + r.tiny * (shadow > 0))
    return value, cot


def coefficient_error(reduction: Reduction, counts: np.ndarray, weights: np.ndarray | None,
                      u: float) -> np.ndarray:
    """Relative error of the computed κ_i: the division by Σ ω_i (a computed sum unless every
    ω_i is an integer: counts are exact), by Σ c_i (weighted_mean), N·T_i (sequence_mean: two
    divisions)."""
    n, name = len(counts), reduction.name
    if name == "mean":
        w = counts
        if np.all(w == np.round(w)) or not np.sum(w):
            return np.full(n, u)
        return np.full(n, gamma(w.size, u) * np.sum(np.abs(w)) / abs(np.sum(w)) + u)
    if name == "sequence_mean":
        return np.full(n, 2 * u)
    if name == "weighted_mean":
        c = weights
        assert c is not None
        return np.full(n, gamma(n, u) * np.sum(np.abs(c)) / abs(np.sum(c)) + u)
    return np.zeros(n)
