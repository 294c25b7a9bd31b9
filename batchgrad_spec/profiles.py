"""The Hypothesis profiles of the suite: ``dev``, ``ci``, ``thorough``, ``certify-slow``,
``trainers`` (8 examples, the real training loops) and ``frameworks`` (4 examples, derandomized:
the CI profile of the slowest framework envs).

Importing this module only registers them (a library user's own loaded profile is left alone).
The pytest plugin calls ``load_default()``: ``dev``, or ``ci`` when the environment variable
``CI`` is set; pytest's ``--hypothesis-profile`` chooses another.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["REDUCED", "load_default"]

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
# derandomize is explicit everywhere: under CI=true Hypothesis's own defaults (the parent of
# every profile) are derandomized, which would silently turn `dev` and `thorough` deterministic.
settings.register_profile("dev", max_examples=20, derandomize=False, **_common)
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=1000, derandomize=False, **_common)
# the trainer envs (tox.ini, trainer-*): each example runs a real training loop once per prefix
# of its epoch, so `ci`'s derandomized examples, fewer of them and no shrinking (the env's
# 3-minute budget; a known deviation's strict xfail would otherwise shrink on every run, and each
# finding's minimal repro is in docs/findings/)
settings.register_profile("trainers", max_examples=8, derandomize=True, print_blob=True,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate), **_common)
# a framework that needs 0.3-1.5 s per call (kernel compilation per shape): fewer examples,
# derandomized like ci; with --shape-buckets (or the capability shapes:bucketed) the sizes come
# from a few buckets so that kernels are reused (spec §8.6, Appendix A "Slow frameworks")
settings.register_profile("certify-slow", max_examples=10, derandomize=True, print_blob=True,
                          **_common)
# the framework envs with a high cost per call (TensorFlow: a Keras model and a retraced
# tf.vectorized_map per call, about 1 example/s; tinygrad: kernel compiles) run this profile in
# CI to fit the 3-minute budget of an added env; tox.ini says so per env, with the full command
settings.register_profile("frameworks", max_examples=4, derandomize=True, print_blob=True,
                          **_common)

REDUCED = {"certify-slow": "a reduced certification for slow frameworks: 10 examples per test "
                           "(ci: 100); fewer examples find fewer deviations (spec §8.6)",
           "trainers": "a reduced certification for real training loops: 8 examples per test "
                       "(ci: 100), not shrunk; fewer examples find fewer deviations",
           "frameworks": "a reduced certification for the slowest framework envs: 4 examples "
                         "per test (ci: 100); fewer examples find fewer deviations (spec §8.6)"}
"""Profiles whose certificate is reduced, with what the report says about it."""


def load_default() -> None:
    """Load ``ci`` when the environment variable ``CI`` is set, else ``dev``."""
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
