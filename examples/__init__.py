"""Worked examples: a third-party backend (``autograd_backend``) and the gallery figures script."""
