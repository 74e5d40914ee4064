"""Figures of the DESOM pipeline, as PNG (matplotlib Agg, no pyplot global state, so safe in
web workers and threads).

Every function returns the PNG bytes and also writes them to ``path`` when one is given.
Map cell (row, col) is node ``row * cols + col``; row 0 is drawn at the top.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch


def _finish(fig: Figure, path) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    png = buf.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return png


def _map_shape(n: int, map_shape) -> tuple[int, int]:
    if map_shape is None:
        side = int(round(np.sqrt(n)))
        if side * side != n:
            raise ValueError(f"{n} cells is not a square map; pass map_shape=(rows, cols)")
        return side, side
    rows, cols = int(map_shape[0]), int(map_shape[1])
    if rows * cols != n:
        raise ValueError(f"{n} values do not fill a {rows}x{cols} map")
    return rows, cols


def prototype_map(prototypes, map_shape=None, path=None, title: str | None = None,
                  cmap: str = "gray", cell_inches: float | None = None) -> bytes:
    """Mosaic of decoded prototypes, one small image per map unit (the paper's Figure 6).

    prototypes: a DESOM-1 model (its prototypes are decoded), or an array (K, H, W) /
    (K, 1, H, W) of images. Each image keeps its own grey scale (min-max per tile) so faint
    prototypes stay visible.
    """
    if hasattr(prototypes, "decoded_prototypes"):
        if map_shape is None:
            map_shape = prototypes.map_shape
        prototypes = prototypes.decoded_prototypes().cpu().numpy()
    imgs = np.asarray(prototypes, dtype=np.float64)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(f"prototype images must be (K, H, W) or (K, 1, H, W), got {imgs.shape}")
    rows, cols = _map_shape(imgs.shape[0], map_shape)
    h, w = imgs.shape[1:]
    lo = imgs.reshape(len(imgs), -1).min(axis=1)[:, None, None]
    span = imgs.reshape(len(imgs), -1).max(axis=1)[:, None, None] - lo
    tiles = (imgs - lo) / np.where(span > 0, span, 1.0)
    pad = 1
    mosaic = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad))
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        mosaic[y:y + h, x:x + w] = tiles[k]
    if cell_inches is None:   # 25x25 maps at 0.32 in per cell; small maps get bigger cells
        cell_inches = max(0.32, 4.0 / max(rows, cols))
    fig = Figure(figsize=(cols * cell_inches + 0.6, rows * cell_inches + 0.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    step = max(1, cols // 10)
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(0, cols, step)])
    ax.set_xticklabels([str(c) for c in range(0, cols, step)], fontsize=6)
    step = max(1, rows // 10)
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(0, rows, step)])
    ax.set_yticklabels([str(r) for r in range(0, rows, step)], fontsize=6)
    ax.set_title(title or f"DESOM prototypes ({rows}x{cols})", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def density_map(histo, map_shape=(25, 25), path=None, title: str | None = None,
                log: bool = False, cmap: str = "viridis") -> bytes:
    """Heat map of a histo-vector laid out on the DESOM-1 map (the paper's Figures 7-8)."""
    v = np.asarray(histo, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError("histo-vector contains NaN or infinite values")
    rows, cols = _map_shape(v.size, map_shape)
    grid = v.reshape(rows, cols)
    if log:
        grid = np.log10(1.0 + np.clip(grid, 0, None))
    fig = Figure(figsize=(4.6, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="log10(1 + count)" if log else "count")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title or f"density map (total {v.sum():.0f})", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def histo_vector_plot(histo, path=None, title: str | None = None) -> bytes:
    """Bar plot of a histo-vector: count per DESOM-1 cell index (the paper's Figure 8, right)."""
    v = np.asarray(histo, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("histo-vector must be non-empty and finite")
    fig = Figure(figsize=(6.4, 2.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(v.size), v, width=1.0, color="#3b6ea8")
    ax.set_xlim(-0.5, v.size - 0.5)
    ax.set_xlabel("DESOM-1 cell")
    ax.set_ylabel("count")
    ax.set_title(title or f"histo-vector (sum {v.sum():.0f})", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


_LABEL_COLOURS = ["#4daf4a", "#e41a1c", "#377eb8", "#ff7f00", "#984ea3", "#a65628",
                  "#f781bf", "#999999", "#dede00", "#17becf"]


def label_map(cell_labels: dict, counts=None, map_shape=(20, 20), path=None,
              title: str | None = None, colours: dict | None = None) -> bytes:
    """DESOM-2 map coloured by each cell's label with its member count (the paper's Figure 10).

    cell_labels: {cell: label}, cell a node index or a (row, col) pair; cells not in it are
    unlabelled and drawn white. counts: members per cell, an array of K values or a dict
    {cell: count}; cells with members show the number. colours: optional {label: colour}.
    """
    rows, cols = int(map_shape[0]), int(map_shape[1])
    k = rows * cols

    def index(cell):
        if isinstance(cell, (tuple, list)) and len(cell) == 2:
            r, c = int(cell[0]), int(cell[1])
            if not (0 <= r < rows and 0 <= c < cols):
                raise ValueError(f"cell {cell} is outside the {rows}x{cols} map")
            return r * cols + c
        i = int(cell)
        if not 0 <= i < k:
            raise ValueError(f"cell {cell} is outside the {rows}x{cols} map (0..{k - 1})")
        return i

    labels = {index(c): str(lab) for c, lab in (cell_labels or {}).items() if lab is not None}
    if counts is None:
        count_arr = None
    elif isinstance(counts, dict):
        count_arr = np.zeros(k)
        for c, n in counts.items():
            count_arr[index(c)] = n
    else:
        count_arr = np.asarray(counts, dtype=np.float64).ravel()
        if count_arr.size != k:
            raise ValueError(f"counts has {count_arr.size} values, the map has {k} cells")
    names = sorted(set(labels.values()))
    colour_of = {}
    for i, name in enumerate(names):
        colour_of[name] = (colours or {}).get(name, _LABEL_COLOURS[i % len(_LABEL_COLOURS)])
    palette = ["#ffffff"] + [colour_of[n] for n in names]
    grid = np.zeros((rows, cols), dtype=int)
    for i, lab in labels.items():
        grid[divmod(i, cols)] = names.index(lab) + 1
    fig = Figure(figsize=(max(4.0, cols * 0.32) + 1.6, max(4.0, rows * 0.32)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, cmap=ListedColormap(palette), vmin=0, vmax=len(palette) - 1,
              interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="#cccccc", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    if count_arr is not None:
        size = max(4, min(8, int(160 / max(rows, cols))))
        for i in np.flatnonzero(count_arr > 0):
            r, c = divmod(int(i), cols)
            ax.text(c, r, f"{count_arr[i]:.0f}", ha="center", va="center", fontsize=size)
    ax.legend(handles=[Patch(facecolor=to_rgba(colour_of[n]), edgecolor="k", label=n) for n in names]
              + [Patch(facecolor="white", edgecolor="k", label="unlabelled")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_title(title or f"DESOM-2 map ({rows}x{cols}) by label", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)
