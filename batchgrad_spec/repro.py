"""Reading a failure's repro snippets back out of pytest's output.

A clause failure carries a runnable snippet as an exception note (``Check.repro``); pytest prints
it inside the failure, each line behind its own prefix (``E   ``, ``  | ``). The meta-tests and
``tools/check_installed.py`` take the snippets back out to run them.
"""

from __future__ import annotations

__all__ = ["reproductions"]


def reproductions(out: str, clause: str) -> list[str]:
    """The repro snippets in pytest's output, with pytest's line prefixes ("E   ", "  | ") cut."""
    snippets = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        col = line.find(f"# Reproduce §{clause} ")
        if col < 0:
            continue
        block = []
        for body in lines[i:]:
            block.append(body[col:])
            if body[col:].startswith("print('observed:'"):
                break
        snippets.append("\n".join(block))
    return snippets
