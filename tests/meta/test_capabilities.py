"""The capability vocabulary and a backend's declaration (spec §8.6): every unit names what it
uses, the 0.2.0 set is the default, an unknown name is a clear error when the backend is loaded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from batchgrad_spec.harness import load
from batchgrad_spec.strategies import layer_problems, loss_problems
from reference.capabilities import (
    DEFAULT_CAPABILITIES,
    REQUESTS,
    VOCABULARY,
    KnownDeviation,
    check_capabilities,
    features_of,
    known_deviations_of,
    register,
)
from reference.contract import BackendError, capabilities_of, load_backend

pytestmark = pytest.mark.meta


@pytest.mark.clause("8.6")
def test_the_default_is_the_0_2_0_vocabulary_and_every_name_is_described():
    assert reference.SPEC_VERSION  # the package is imported: every room has registered
    assert DEFAULT_CAPABILITIES <= set(VOCABULARY)
    assert not DEFAULT_CAPABILITIES & REQUESTS
    expected = ({f"activation:{a}" for a in reference.ACTIVATION_NAMES}
                | {f"loss:{n}" for n in reference.LOSS_NAMES}
                | {f"reduction:{r}" for r in reference.REDUCTION_NAMES})
    assert expected <= DEFAULT_CAPABILITIES
    for name, text in VOCABULARY.items():
        assert name.count(":") == 1 and text.strip() and "\n" not in text, name


@pytest.mark.clause("8.6")
def test_register_rejects_a_malformed_name_and_a_second_meaning():
    with pytest.raises(ValueError, match="kind:value"):
        register("Gelu", "an activation")
    with pytest.raises(ValueError, match="already registered"):
        register("layer:dense", "something else")
    assert register("layer:dense", VOCABULARY["layer:dense"]) == "layer:dense"


@pytest.mark.clause("8.6")
@settings(max_examples=60, deadline=None)
@given(st.one_of(layer_problems(losses=("squared_error", "softmax_cross_entropy")),
                 loss_problems(sequences=None)))
def test_features_of_a_problem_are_the_union_of_its_units(problem):
    f = features_of(problem)
    assert f <= DEFAULT_CAPABILITIES
    assert f"loss:{problem.loss.name}" in f and f"reduction:{problem.reduction.name}" in f
    assert "layer:dense" in f
    assert ("input:sequence" in f) == problem.batch.sequence
    for layer in problem.network.layers:
        assert layer.unit_features() <= f
    if problem.loss.label_smoothing:
        assert "loss:label_smoothing" in f
    soft = problem.loss.name == "softmax_cross_entropy" and problem.batch.targets.dtype.kind == "f"
    assert ("loss:soft_targets" in f) == soft
    bn = [la for la in problem.network.layers if isinstance(la, reference.BatchNorm)]
    assert ("layer:batchnorm_train" in f) == any(la.training for la in bn)


class _Declares:
    name = "declares"
    caps: object = ()

    def capabilities(self) -> object:
        return self.caps


@pytest.mark.clause("8.6")
def test_unknown_capability_is_an_error_naming_the_close_matches():
    b = _Declares()
    b.caps = ("layer:dense", "activaton:gelu")
    with pytest.raises(BackendError, match=r"unknown capability 'activaton:gelu'; did you mean "
                                           r"'activation:gelu'"):
        capabilities_of(b)
    b.caps = "layer:dense"
    with pytest.raises(BackendError, match="declare an iterable of names"):
        capabilities_of(b)
    with pytest.raises(BackendError, match="unknown capability 3"):
        check_capabilities([3], "x")


@pytest.mark.clause("8.6")
def test_an_unknown_capability_is_rejected_when_the_backend_is_loaded():
    with pytest.raises(BackendError, match="unknown capability 'layer:densee'"):
        load_backend("batchgrad_spec.faults.capabilities:misspelt")


@pytest.mark.clause("8.6")
def test_a_backend_without_a_declaration_supports_the_0_2_0_vocabulary():
    class Old:
        name = "old"

    assert capabilities_of(Old()) == DEFAULT_CAPABILITIES
    assert known_deviations_of(Old()) == ()


@pytest.mark.clause("8.6")
@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_builtin_backends_declare_everything_they_implement(name):
    pytest.importorskip(name)
    declared = capabilities_of(load(name))
    assert DEFAULT_CAPABILITIES <= declared


@pytest.mark.clause("8.7")
def test_a_known_deviation_names_a_clause_and_a_known_feature():
    d = KnownDeviation("§4.6", "activation:elu", "elu'(0) is 1 here (finding)", dtype="float64")
    assert d.clause == "4.6" and d.applies("4.6", "cpu", "float64")
    assert d.applies("4.6.1", "cpu", "float64") and not d.applies("4.6", "cpu", "float32")
    assert not d.applies("4.60", "cpu", "float64")
    with pytest.raises(BackendError, match="unknown capability 'activation:eluu'"):
        KnownDeviation("4.6", "activation:eluu", "x")
    with pytest.raises(ValueError, match="clause must be an id"):
        KnownDeviation("four", "activation:elu", "x")
    b = _Declares()
    b.known_deviations = lambda: [{"clause": "4.6", "feature": "activation:elux", "reason": "r"}]
    with pytest.raises(BackendError, match=r"backend 'declares' known_deviations\(\)"):
        known_deviations_of(b)
