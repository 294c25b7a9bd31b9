"""What a pytest session of the suite runs: its backends, its Hypothesis settings, its items.

The plugin (``batchgrad_spec.plugin``: options, parametrisation, header, summary) and the
conformance report (``batchgrad_spec.report.hooks``) both read these; neither imports the other.
"""

from __future__ import annotations

from typing import Any

import pytest

from reference.contract import Backend, BackendError

from . import harness, stats

__all__ = ["BEFORE", "EXCLUDED", "FEATURE_DEVIATIONS", "backends_environment", "item_key",
           "item_target", "load_backends",
           "run_settings", "selected_backends"]

_BACKENDS = pytest.StashKey[list[tuple[str, Backend]]]()

BEFORE = pytest.StashKey[tuple[stats.Key, stats.Stat | None]]()
"""A test item's statistics key and their snapshot when it was set up (``stats.snapshot``)."""
FEATURE_DEVIATIONS = pytest.StashKey[list[Any]]()
"""The xfails file's entries confined to a feature (spec §8.7): set by the report's hooks, read
by the plugin when it generates the tests."""
EXCLUDED = pytest.StashKey[set[str]]()
"""The features a test item's strategies left out (spec §8.6): set by the plugin."""


def load_backends(config: pytest.Config) -> None:
    """Load what ``--backend`` names (default: every built-in whose framework imports)."""
    backends = []
    for name in config.getoption("backend") or harness.available_builtins():
        try:
            backends.append((name, harness.load(name)))
        except BackendError as exc:
            raise pytest.UsageError(f"--backend {name}: {exc}") from None
    config.stash[_BACKENDS] = backends


def selected_backends(config: pytest.Config) -> list[tuple[str, Backend]]:
    """(what --backend named, the backend) for each backend this session checks."""
    return config.stash[_BACKENDS]


def item_target(item: pytest.Item) -> harness.Target | None:
    """The target a test item runs against (None for a test that runs no backend)."""
    t = getattr(item, "callspec", None) and item.callspec.params.get("target")
    return t if isinstance(t, harness.Target) else None


def item_key(item: pytest.Item) -> stats.Key | None:
    """The statistics key of a test item's target."""
    t = item_target(item)
    return stats.key(t) if t is not None else None


def backends_environment(config: pytest.Config) -> list[dict[str, Any]]:
    """Each selected backend: what --backend named, its name, framework versions, and the
    devices and dtypes this run checks (the backend's, filtered by --device/--dtype)."""
    want_dev, want_dt = config.getoption("device"), config.getoption("dtype")
    return [{
        "spec": spec,
        "name": b.name,
        "versions": {str(k): str(v) for k, v in b.versions().items()},
        "devices": [d for d in b.devices() if not want_dev or d in want_dev],
        "dtypes": [d for d in b.dtypes() if not want_dt or d in want_dt],
        "per_example_methods": list(b.per_example_methods()),
        "precision": config.getoption("precision"),
    } for spec, b in selected_backends(config)]


def run_settings(config: pytest.Config) -> dict[str, Any]:
    """Profile, max_examples, derandomize and seed as Hypothesis will really use them."""
    from hypothesis import settings

    seed = config.getoption("hypothesis_seed", None)
    if seed is not None:
        try:
            seed = int(seed)
        except ValueError:
            pass
    current = settings()  # the loaded profile, as a test without its own @settings sees it
    return {"profile": settings.get_current_profile_name(),
            "max_examples": current.max_examples, "derandomize": bool(current.derandomize),
            "seed": seed}
