"""Conformance reports and known deviations (spec §8.5), one concern per module:

* ``xfails`` — the xfails file of known deviations: parsing and matching node ids;
* ``record`` — the run record (JSON): cells, outcomes, aggregation, merging records into a matrix;
* ``markdown`` — the Markdown table of a record or matrix;
* ``heatmap`` — the picture of a matrix (matplotlib);
* ``hooks`` — the pytest hooks (``--xfails-file``, ``--conformance-report``), registered by
  ``batchgrad_spec.plugin``; the only module here that needs pytest;
* ``cli`` — ``python -m batchgrad_spec.report merge reports/*.json --out reports/matrix``.

Importing the package imports none of them: the merge command runs where pytest is not installed
(``tox -e report``).
"""

__all__: list[str] = []
