"""A kernel less accurate than the model assumes is traced to its elementary function (spec
§7.1.4, Appendix A §3): ``batchgrad_spec.faults:inaccurate_tanh`` computes tanh with a relative
error of 10⁻⁴ (the model allows 8u ≈ 4.8·10⁻⁷ in float32) and everything else exactly.

* A chapter-2 clause fails on it in float32, and the failure says that an inaccurate kernel is a
  finding about accuracy and how to find which.
* ``batchgrad_spec.accuracy.probe`` names tanh, and only tanh; on the correct numpy backend no
  probe exceeds its tolerance (no false alarm), in float32 and float64.
"""

from __future__ import annotations

import pytest

from batchgrad_spec.accuracy import main, probe, probes
from batchgrad_spec.catching import make_target, run_property
from batchgrad_spec.harness import ClauseFailure, load
from batchgrad_spec.properties import core
from batchgrad_spec.strategies import networks, problems
from reference.contract import Config

pytestmark = pytest.mark.meta

FLOAT32 = Config("cpu", "float32")


@pytest.mark.clause("7.1.4")
def test_a_failure_in_float32_points_to_the_accuracy_probe():
    target = make_target("batchgrad_spec.faults:inaccurate_tanh", "2.12", "float32", "vmap")
    out = run_property(core.test_backend_per_example_gradients_match_the_reference, target,
                       problem=problems(nets=networks(activations=("tanh",))))
    assert isinstance(out.error, ClauseFailure), out.error
    assert ("accuracy: if a framework's kernel is less accurate than the model's 4 ulp (§7.1.4), "
            "that is a finding about accuracy, not a false alarm: `python -m "
            "batchgrad_spec.accuracy --backend batchgrad_spec.faults:inaccurate_tanh --dtype "
            "float32`") in str(out.error)


@pytest.mark.clause("7.1.4")
def test_the_probe_names_tanh_and_nothing_else(capsys):
    rows = {r.name: r for r in probe(load("batchgrad_spec.faults:inaccurate_tanh"), FLOAT32)}
    assert rows["tanh"].ratio is not None and rows["tanh"].ratio > 10, rows["tanh"]
    beyond = [n for n, r in rows.items() if r.ratio is not None and r.ratio > 1]
    assert beyond == ["tanh"], rows
    assert main(["--backend", "batchgrad_spec.faults:inaccurate_tanh"]) == 1
    assert "beyond the model: tanh" in capsys.readouterr().out


@pytest.mark.clause("7.1.4")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_probe_raises_no_false_alarm_on_a_correct_backend(dtype):
    rows = probe(load("numpy"), Config("cpu", dtype))
    assert len(rows) == len(probes()) and all(r.ratio is not None for r in rows), rows
    assert max(r.ratio for r in rows) <= 1, rows  # type: ignore[type-var]
