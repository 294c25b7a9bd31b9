"""``python -m batchgrad_spec.report merge RECORD... --out STEM`` (see ``cli``)."""

import sys

from .cli import main

sys.exit(main())
