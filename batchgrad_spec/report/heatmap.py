"""The heatmap of a matrix (PNG, matplotlib): one row per clause, one column per backend-device-
dtype; passing cells coloured by their error/tolerance headroom, the others by outcome.

matplotlib is imported when a picture is drawn, not when this module is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .markdown import fmt_ratio
from .record import grid

__all__ = ["heatmap"]

COLOURS = {"fail": "#d73027", "xfail": "#9e9ac8", "skip": "#bdbdbd", "pass": "#80cdc1",
           "not run": "#f4f4f4", "error": "#8c510a", "interrupted": "#8c510a",
           "unsupported": "#dadaeb"}
HEADROOM = ["#006837", "#1a9850", "#66bd63", "#a6d96a", "#d9ef8b", "#fee08b", "#fdae61"]
"""Passing cells from ratio ≤ 1e-4 (dark green: much headroom) to 1 (orange: at the tolerance)."""


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _wrap(name: str, n: int = 13) -> str:
    """A long backend name broken after '_', '.' or ':' so that it fits its column."""
    lines, line = [], ""
    for part in filter(None, re.findall(r"[^_.:]*[_.:]?", name)):
        if line and len(line) + len(part) > n:
            lines.append(line)
            line = ""
        line += part
    return "\n".join(lines + [line])


def heatmap(matrix: dict[str, Any], path: Path) -> None:
    """A PNG of the matrix: one row per clause, one column per backend-device-dtype; passing
    cells coloured by their largest error/tolerance (log scale), with the value written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap, LogNorm
    from matplotlib.patches import Patch, Rectangle

    rows, cols, cell = grid(matrix)
    cmap = LinearSegmentedColormap.from_list("headroom", HEADROOM)
    norm = LogNorm(vmin=1e-4, vmax=1.0, clip=True)
    # the figure holds the grid (1 in × 0.34 in a cell) and the colour bar; the labels, title
    # and legend around them are added by bbox_inches="tight"
    grid_w, grid_h = 1.05 * len(cols), 0.34 * len(rows)
    bar_h = max(grid_h, 2.2)
    width, height = grid_w + 1.0, max(grid_h, bar_h)
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, (height - grid_h) / height, grid_w / width, grid_h / height))
    cax = fig.add_axes(((grid_w + 0.3) / width, (height - bar_h) / height, 0.16 / width,
                        bar_h / height))
    for i, (cid, _title) in enumerate(rows):
        for j, c in enumerate(cols):
            r = cell.get((cid, c))
            if r is None:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLOURS["not run"],
                                       edgecolor="white", linewidth=1.5))
                continue
            outcome, ratio = r["outcome"], r["max_ratio"]
            colour: Any
            if outcome == "pass" and ratio is not None:
                colour = cmap(norm(max(float(ratio), 1e-4)))
                label = fmt_ratio(ratio)
            else:
                colour = COLOURS[outcome]
                label = {"fail": "FAIL", "xfail": "xfail", "skip": "skip", "pass": "pass",
                         "error": "ERROR", "interrupted": "interrupted",
                         "unsupported": "not supported"}[outcome]
                if outcome == "fail" and ratio is not None and float(ratio) > 1:
                    label += f" {fmt_ratio(ratio)}"
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white",
                                   linewidth=1.5))
            dark = outcome == "fail" or (outcome == "pass" and ratio is not None
                                         and float(ratio) < 3e-3)
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=8.5,
                    color="white" if dark else "black",
                    fontweight="bold" if outcome == "fail" else "normal")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels([f"§{cid}  {_short(title, 80)}" for cid, title in rows], fontsize=9)
    ax.set_xticks([j + 0.5 for j in range(len(cols))])
    examples = {c: sum(r["examples"] or 0 for (_, cc), r in cell.items() if cc == c)
                for c in cols}
    ax.set_xticklabels(["\n".join([_wrap(c[0])] + [p for p in c[1:] if p not in ("-", "strict")]
                                  + ([f"{examples[c]} examples"] if examples[c] else []))
                        for c in cols], fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    sources = ", ".join(s["name"] for s in matrix["sources"])
    ax.set_title(f"batchgrad-spec {matrix.get('spec_version')} conformance ({sources})\n"
                 "cell: outcome, or for a pass its largest error/tolerance",
                 fontsize=10.5, pad=12, loc="left")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, cax=cax, orientation="vertical")
    bar.set_label("largest error / tolerance of a passing cell\n(1 = at the tolerance)",
                  fontsize=9)
    bar.ax.tick_params(labelsize=8)
    handles = [Patch(facecolor=COLOURS["fail"], label="fail"),
               Patch(facecolor=COLOURS["xfail"], label="xfail (known deviation)"),
               Patch(facecolor=COLOURS["error"], label="error / interrupted"),
               Patch(facecolor=COLOURS["skip"], label="skip"),
               Patch(facecolor=COLOURS["unsupported"], label="not supported"),
               Patch(facecolor=COLOURS["pass"], label="pass (no tolerance involved)"),
               Patch(facecolor=COLOURS["not run"], edgecolor="#bdbdbd", label="not run")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 0), ncol=len(handles),
              fontsize=8.5, frameon=False, borderaxespad=0.4, handlelength=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
