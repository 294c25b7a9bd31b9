"""``python -m batchgrad_spec ...`` is the ``batchgrad-spec`` command."""

from .cli import main

raise SystemExit(main())
