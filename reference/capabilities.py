"""Capabilities (spec §8.6, §8.7): the names of the features a problem uses, what a backend
declares it supports, and its known deviations by clause and feature.

A capability is a ``kind:value`` string (``layer:dense``, ``activation:gelu``,
``loss:label_smoothing``, ``reduction:sequence_mean``, ``input:sequence`` …). Each reference
unit (layer type, ``Loss``, ``Reduction``, ``Batch``) says which it uses with ``features()``;
``features_of(problem)`` is their union. Each room of the reference ``register``s its own names
at import, with a one-line description: ``VOCABULARY`` (name → description) is the whole list.

A backend may declare what it supports with an optional method ``capabilities()`` (an iterable
of names); ``capabilities_of(backend)`` is that declaration, checked (an unknown name is a
``BackendError`` naming the close matches), or ``DEFAULT_CAPABILITIES`` for a backend that
declares nothing: the vocabulary of spec 0.2.0, so an adapter written for 0.2.0 is checked
exactly as before. A problem using a feature the backend does not declare is never sent to it.

Dtypes, devices and the per-example methods have their own contract methods (``dtypes()``,
``devices()``, ``per_example_methods()``), the optional methods are declared by being there
(``reference.contract.OPTIONAL``); they are not capabilities.

A backend may also list known deviations (optional ``known_deviations()``): ``KnownDeviation``
entries naming a clause and a feature (and optionally a dtype or device), so that the rest of
the clause is still certified (§8.7).

Imports nothing from ``reference`` but ``types``: every other room can register its names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .types import BackendError

__all__ = ["DEFAULT_CAPABILITIES", "REQUESTS", "VOCABULARY", "KnownDeviation",
           "capabilities_of", "check_capabilities", "features_of", "known_deviations_of",
           "register"]

NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z0-9_]+$")
VOCABULARY: dict[str, str] = {}
"""Every capability name → a one-line description (Appendix A's table is made from it)."""


def register(name: str, description: str) -> str:
    """Add ``name`` (``kind:value``, lower case) to ``VOCABULARY`` with its one-line
    description, and return it. Registering the same name again with the same description is a
    no-op; with another description it is an error (two rooms would mean two things)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"capability name {name!r}: write it as 'kind:value' in lower case, "
                         f"e.g. 'layer:dense'")
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"capability {name!r}: the description must be one non-empty line")
    old = VOCABULARY.get(name)
    if old is not None and old != description:
        raise ValueError(f"capability {name!r} is already registered as {old!r}")
    VOCABULARY[name] = description
    return name


DEFAULT_CAPABILITIES = frozenset({
    "layer:dense", "layer:layernorm", "layer:batchnorm", "layer:batchnorm_train",
    "layer:dropout",
    *(f"activation:{a}" for a in ("identity", "relu", "tanh", "sigmoid", "softplus", "gelu",
                                  "gelu_tanh", "leaky_relu", "elu")),
    *(f"loss:{n}" for n in ("squared_error", "softmax_cross_entropy", "bce_with_logits",
                            "huber", "gaussian_nll", "class_weights", "ignore_index",
                            "label_smoothing", "soft_targets")),
    *(f"reduction:{r}" for r in ("mean", "sum", "weighted", "weighted_mean", "sequence_mean")),
    "input:sequence", "input:mask",
})
"""The vocabulary of spec 0.2.0: what a backend without a ``capabilities()`` declaration is
assumed to support (everything the 0.2.0 suite sent it). Names added later are not in it."""

REQUESTS = frozenset({register(
    "shapes:bucketed", "the backend asks for batch sizes, widths and sequence lengths drawn from "
    "a few buckets (powers of two), so that a compile-per-shape framework reuses its kernels")})
"""Capabilities that ask the strategies for something rather than name a feature of a problem:
a backend may declare them; no problem uses them."""


def features_of(problem: Any) -> frozenset[str]:
    """The capabilities ``problem`` uses: the union of the ``features()`` of its layers, loss,
    reduction and batch, and of what only the whole says (soft targets: float targets of
    cross-entropy). ``Problem.features()`` computes it."""
    return frozenset(problem.features())


def _close(name: str) -> str:
    near = difflib.get_close_matches(name, list(VOCABULARY), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, near))}?" if near else ""


def check_capabilities(names: Iterable[str], who: str) -> frozenset[str]:
    """``names`` as a frozenset of known capability names; an unknown one (or a non-string) is a
    ``BackendError`` naming ``who`` and the close matches in ``VOCABULARY``."""
    if isinstance(names, str):
        raise BackendError(f"{who} declared the string {names!r}; declare an iterable of "
                           f"names, e.g. ({names!r},)")
    out = []
    for n in names:
        if not isinstance(n, str) or n not in VOCABULARY:
            raise BackendError(f"{who} declares unknown capability {n!r}{_close(str(n))} (the "
                               f"names: reference.capabilities.VOCABULARY, spec §8.6)")
        out.append(n)
    return frozenset(out)


def _declared(backend: Any, method: str) -> Any:
    fn = getattr(backend, method, None)
    if not callable(fn):
        return None
    try:
        return fn()
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"backend {getattr(backend, 'name', backend)!r}: {method}() raised "
                           f"{type(exc).__name__}: {exc}") from exc


def capabilities_of(backend: Any) -> frozenset[str]:
    """What ``backend`` supports: its ``capabilities()`` declaration, checked, or
    ``DEFAULT_CAPABILITIES`` when it has no such method (spec §8.6)."""
    declared = _declared(backend, "capabilities")
    if declared is None:
        return DEFAULT_CAPABILITIES
    name = getattr(backend, "name", type(backend).__name__)
    return check_capabilities(declared, f"backend {name!r} capabilities()")


CLAUSE = re.compile(r"^\d+\.\d+(?:\.\d+)*$")


@dataclass(frozen=True)
class KnownDeviation:
    """A deviation of a backend from one clause, confined to one feature (spec §8.7): the clause
    is certified on the problems without ``feature``; the problems with it are checked apart, as
    a strict expected failure. ``dtype``/``device`` narrow it (None: every one)."""

    clause: str
    feature: str
    reason: str
    dtype: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not CLAUSE.match(str(self.clause).lstrip("§")):
            raise ValueError(f"{self!r}: clause must be an id such as '4.6' or '3.7.4'")
        object.__setattr__(self, "clause", str(self.clause).lstrip("§"))
        check_capabilities([self.feature], "a known deviation")
        if not str(self.reason).strip():
            raise ValueError(f"{self!r}: say why (a reason citing the finding)")

    def covers(self, clause: str) -> bool:
        """Whether a test of ``clause`` is concerned: the same clause or one of its
        sub-clauses."""
        return clause == self.clause or clause.startswith(self.clause + ".")

    def applies(self, clause: str, device: str, dtype: str) -> bool:
        """Whether it concerns a test of ``clause`` on ``device`` in ``dtype``."""
        return (self.covers(clause) and self.dtype in (None, dtype)
                and self.device in (None, device))


def known_deviations_of(backend: Any) -> tuple[KnownDeviation, ...]:
    """The backend's ``known_deviations()`` (``KnownDeviation``s, or mappings with their fields),
    checked; () when it has no such method."""
    declared = _declared(backend, "known_deviations")
    if declared is None:
        return ()
    name = getattr(backend, "name", type(backend).__name__)
    out = []
    for d in declared:
        try:
            out.append(d if isinstance(d, KnownDeviation) else KnownDeviation(**dict(d))
                       if isinstance(d, Mapping) else KnownDeviation(*d))
        except (TypeError, ValueError, BackendError) as exc:
            raise BackendError(f"backend {name!r} known_deviations(): {d!r}: {exc}") from exc
    return tuple(out)
