"""The chapters' property tests that other code runs too: the meta-tests, the gallery, the bench.

A chapter's property test (a ``@given`` function citing its clause with ``@pytest.mark.clause``)
that only pytest runs lives in its chapter test module ``tests/test_ch*.py``. One that other code
runs as well — a meta-test re-running it against a deliberately faulty backend
(``batchgrad_spec.catching``), the gallery of caught bugs (``batchgrad_spec.faults.GALLERY``), the
benchmarks — is defined here instead, in the module of its room (``definitions`` for chapter 1,
``core`` for 2, ``losses`` for 3, ``layers`` for 4, …), under its test name, and its chapter test
module imports it by that name::

    from batchgrad_spec.properties.core import (  # noqa: F401 — run here, also by the meta-tests
        test_gradient_of_the_mean_loss_is_the_mean_of_per_example_gradients,
    )

so pytest collects it in the chapter module with the same node id
(``tests/test_ch2_core.py::test_...``: the spec's **Tests.** lines and xfails files cite node ids),
while the meta-tests import it from here: no test module imports another test module. These
modules import the harness and the strategies (library code), never a test module; their helpers
are the clauses' formulas the properties compare with, written out.
"""
