"""Known deviations: the xfails file (``--xfails-file PATH``, spec §8.5).

One node-id pattern per line followed by ``# §C.N reason`` (``# §C.N.M reason`` for a
sub-clause; ``skip PATTERN  # §C.N reason`` to skip instead of xfail). A line citing no clause,
or a clause that is not in spec/, is an error. ``PATTERN feature=NAME [dtype=D] [device=V]  #
§C.N reason`` confines the deviation to one feature (a capability name, spec §8.7): the matching
tests of the clause draw no problem with it, and a strict-xfail variant of each checks it.
Parsing and matching only: ``batchgrad_spec.report.hooks`` applies the entries to a session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference.capabilities import KnownDeviation

from .. import harness

__all__ = ["Deviation", "XfailsError", "parse_xfails"]

CITATION = re.compile(r"§(\d+\.\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class Deviation:
    """One line of an xfails file: ``[skip ]PATTERN  # §C.N reason``."""

    source: str
    line: int
    pattern: str
    action: str  # "xfail" or "skip"
    clause: str
    reason: str
    feature: str | None = None
    dtype: str | None = None
    device: str | None = None

    def known(self) -> KnownDeviation:
        """A feature's deviation as the backend would declare it (spec §8.7)."""
        assert self.feature is not None
        return KnownDeviation(self.clause, self.feature, self.reason, self.dtype, self.device)

    def matches(self, nodeid: str) -> bool:
        """The pattern occurs in the node id; ``*`` matches any run of characters, ``?`` one
        (brackets are literal, so ``test_x[torch-cpu-float64*]`` means what it says)."""
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                     for c in self.pattern)
        return re.search(rx, nodeid) is not None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def as_json(self) -> dict[str, Any]:
        out = {"line": self.line, "pattern": self.pattern, "action": self.action,
               "clause": self.clause, "reason": self.reason}
        return out | {k: v for k, v in (("feature", self.feature), ("dtype", self.dtype),
                                        ("device", self.device)) if v is not None}


class XfailsError(ValueError):
    """An xfails file that cannot be used (pytest turns it into a usage error, exit status 4)."""


NARROWING = ("feature", "dtype", "device")


def _narrowing(n: int, pattern: str, action: str) -> tuple[str, dict[str, str]]:
    """The pattern, and the ``feature=``/``dtype=``/``device=`` words after it (spec §8.7)."""
    words = pattern.split()
    narrow = {}
    while len(words) > 1 and "=" in words[-1]:
        k, _, v = words.pop().partition("=")
        if k not in NARROWING or not v:
            raise XfailsError(f"line {n}: {k}={v!r}: write feature=NAME, dtype=D or device=V")
        narrow[k] = v
    if narrow and "feature" not in narrow:
        raise XfailsError(f"line {n}: dtype=/device= narrow a feature=NAME entry; add one")
    if narrow and action == "skip":
        raise XfailsError(f"line {n}: a feature's deviation is checked as a strict xfail, "
                          f"not skipped; drop 'skip'")
    if "feature" in narrow:
        try:
            KnownDeviation("0.0", narrow["feature"], "x")
        except Exception as exc:
            raise XfailsError(f"line {n}: {exc}") from None
    return " ".join(words), narrow


def parse_xfails(path: str | Path, text: str | None = None) -> list[Deviation]:
    """The entries of an xfails file. Blank lines and lines starting with ``#`` are comments;
    every other line is ``PATTERN  # §C.N reason`` (``skip PATTERN  # …`` to skip), and must
    cite a clause that exists in spec/."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise XfailsError(f"cannot read it: {exc.strerror or exc}") from None
    known = harness.clauses()
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, comment = line.partition("#")
        pattern, action = pattern.strip(), "xfail"
        words = pattern.split(None, 1)
        if words and words[0] in ("skip", "xfail"):
            action, pattern = words[0], words[1] if len(words) > 1 else ""
        m = CITATION.search(comment)
        if not pattern:
            raise XfailsError(f"line {n}: no test pattern before the comment: {raw!r}")
        if m is None:
            raise XfailsError(
                f"line {n}: {raw!r} cites no clause; write it as "
                f"`PATTERN  # §C.N reason` (every known deviation names the clause it breaks)")
        if m.group(1) not in known:
            raise XfailsError(f"line {n}: cites §{m.group(1)}, which is not a clause of spec/")
        pattern, narrow = _narrowing(n, pattern, action)
        out.append(Deviation(str(path), n, pattern, action, m.group(1), comment.strip(),
                             **narrow))
    return out
