"""Interactive figures (plotly) where hovering teaches more than a static plot, and the static
twin a viewer without JavaScript needs where the notebook has no other.

* ``grid_heatmaps``: a diagnostic grid (``helpers.diagnostics.GridResult``), one heatmap per
  metric; hovering a cell shows all of its numbers (L0, dead latents, losses, SSLL, MMCS).
  Static twin: ``helpers.figures.diagnostics.plot_diagnostics``; both name and colour each
  metric from ``style.METRIC_STYLE``.
* ``tegum_polytope``: feature directions in 3 dimensions (notebook 01): the points, the
  spokes from the origin and their convex hull, so an octahedron, a trigonal bipyramid or a
  tetrahedron can be turned around. ``ideal_polytope`` gives the perfect shapes to compare.
  Static twin: ``helpers.figures.toy_geometry.plot_polytopes_3d``.
* ``decoder_geometry``: pairs of latents (``lm.PairGeometry``), decoder cosine against
  co-occurrence, hover naming the two latents (the notebook's static view of the same pairs is
  ``helpers.figures.lm.plot_geometry_nulls``).
* ``feature_browser``: every latent of an SAE (``lm.browser.LatentTable``), density against
  how much of it is one token; hover shows its top token and what it promotes. Static twin:
  ``feature_browser_static``.

``show(fig)`` displays a figure compactly: the plotly JSON (JupyterLab renders it) and a small
HTML version that loads plotly.js from its CDN (Colab), with no 4 MB copy of plotly.js in the
notebook, and a line of text for viewers without JavaScript (GitHub), which see the static
twin drawn in the cell before.
"""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from helpers.figures.style import DPI, L1_AXIS, METRIC_STYLE, SIZE_AXIS, check_metrics
from helpers.figures.toy_geometry import directions_3d

PLOTLY_MIME = "application/vnd.plotly.v1+json"
"""The mimetype JupyterLab renders plotly figures from."""


def show(fig: go.Figure, note: str = "static version above") -> None:
    """Display ``fig`` as plotly JSON + CDN-backed HTML + a text line (see the module docstring)."""
    from IPython.display import display

    display(bundle(fig, note), raw=True)


def bundle(fig: go.Figure, note: str = "static version above") -> dict:
    """The mimetype bundle ``show`` displays (for tests and for saving).

    The figure is stored without plotly's default template (6 kB of styling, twice per figure)."""
    fig = go.Figure(fig).update_layout(template="none")
    fig.update_xaxes(showgrid=True, gridcolor="#e5e5e5", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#e5e5e5", zeroline=False)
    spec = json.loads(fig.to_json())
    title = (fig.layout.title.text or "figure") if fig.layout.title else "figure"
    return {PLOTLY_MIME: {"data": spec["data"], "layout": spec.get("layout", {})},
            "text/html": fig.to_html(include_plotlyjs="cdn", full_html=False, config={"displaylogo": False}),
            "text/plain": f"[interactive plotly figure: {title}; run the notebook to hover, {note}]"}


# --------------------------------------------------------------------------------------
# (a) a diagnostic grid
# --------------------------------------------------------------------------------------
def grid_heatmaps(grid, metrics=("l0", "dead", "recon_loss", "mmcs_larger"), title: str = "Diagnostic grid") -> go.Figure:
    """One heatmap per metric of ``grid`` (sizes down, L1 values across), each cell printed and
    its hover listing every number of that cell."""
    check_metrics(metrics)
    S, L = grid.shape
    x = [f"{a:.3g}" for a in grid.l1_values]
    y = [grid.size_label(i) for i in range(S)]
    hover_keys = ["l0", "dead", "recon_loss", "l1_loss", "ssll", "mmcs_larger"]
    if np.isfinite(grid.mmcs_ground_truth).any():
        hover_keys.append("mmcs_ground_truth")
    custom = np.stack([np.asarray(grid.metric(k), dtype=float) for k in hover_keys], axis=-1)     # (S, L, n)
    lines = "<br>".join(f"{METRIC_STYLE[k].short}: %{{customdata[{n}]:.4g}}" for n, k in enumerate(hover_keys))
    fig = make_subplots(1, len(metrics), subplot_titles=[METRIC_STYLE[m].short for m in metrics],
                        horizontal_spacing=0.06)
    for c, m in enumerate(metrics):
        z = np.asarray(grid.metric(m), dtype=float)
        style = METRIC_STYLE[m]
        color = np.log10(np.clip(z, 1e-12, None)) if style.log else z
        fig.add_trace(go.Heatmap(z=np.round(color, 4), x=x, y=y, text=np.vectorize(lambda v: f"{v:.3g}")(z),
                                 texttemplate="%{text}", customdata=np.round(custom, 5), colorscale=style.colorscale,
                                 showscale=False, name=style.short,
                                 hovertemplate=f"size %{{y}}, alpha %{{x}}<br>{lines}<extra></extra>"), 1, c + 1)
        fig.update_xaxes(title_text=L1_AXIS, type="category", row=1, col=c + 1)
    fig.update_yaxes(title_text=SIZE_AXIS, type="category", row=1, col=1)
    fig.update_layout(title=title, height=300, width=260 * len(metrics) + 80, margin=dict(l=60, r=20, t=70, b=50))
    return fig


# --------------------------------------------------------------------------------------
# (b) feature directions in 3 dimensions
# --------------------------------------------------------------------------------------
def ideal_polytope(name: str) -> np.ndarray:
    """(n, 3) unit vectors of a perfect 'octahedron', 'trigonal bipyramid' or 'tetrahedron'."""
    if name == "octahedron":
        return np.concatenate([np.eye(3), -np.eye(3)])
    if name == "trigonal bipyramid":
        ang = 2 * np.pi * np.arange(3) / 3
        return np.concatenate([np.stack([np.cos(ang), np.sin(ang), np.zeros(3)], 1), [[0, 0, 1], [0, 0, -1]]])
    if name == "tetrahedron":
        return np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    raise ValueError(f"name must be 'octahedron', 'trigonal bipyramid' or 'tetrahedron', got {name!r}")


def tegum_polytope(W, title: str = "Feature directions in 3 dimensions", min_norm: float = 0.5) -> go.Figure:
    """The features of ``W`` ((3, n) as a toy model stores it, or (n, 3)) as points in 3-D with
    spokes from the origin and their convex hull.

    Features with norm below ``min_norm`` (not represented) are drawn grey at the origin side
    and left out of the hull. Hover: the feature, its norm and its largest |cosine| with another.
    """
    P = directions_3d(W)                                                               # (n, 3)
    norms = np.linalg.norm(P, axis=1)
    unit = P / np.clip(norms, 1e-9, None)[:, None]
    cos = unit @ unit.T
    np.fill_diagonal(cos, 0)
    big = np.abs(cos).max(1) if len(P) > 1 else np.zeros(len(P))
    rep = norms >= min_norm
    fig = go.Figure()
    if rep.sum() >= 4:
        fig.add_trace(go.Mesh3d(x=P[rep, 0], y=P[rep, 1], z=P[rep, 2], alphahull=0, opacity=0.25,
                                color="#7f7fff", hoverinfo="skip", name="convex hull"))
    xs, ys, zs = [], [], []
    for p in P:
        xs += [0, p[0], None]; ys += [0, p[1], None]; zs += [0, p[2], None]  # noqa: E702
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="grey", width=3), hoverinfo="skip",
                               name="spokes"))
    fig.add_trace(go.Scatter3d(
        x=P[:, 0], y=P[:, 1], z=P[:, 2], mode="markers+text", text=[str(i) for i in range(len(P))],
        marker=dict(size=6, color=np.where(rep, "crimson", "lightgrey")), name="features",
        customdata=np.stack([np.arange(len(P)), norms, big], 1).round(3),
        hovertemplate="feature %{customdata[0]}<br>norm %{customdata[1]}<br>largest |cos| with another "
                      "%{customdata[2]}<extra></extra>"))
    r = float(max(norms.max(), 1e-9)) * 1.1
    axis = dict(range=[-r, r], title="")
    fig.update_layout(title=title, width=420, height=420, showlegend=False, margin=dict(l=0, r=0, t=40, b=0),
                      scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube"))
    return fig


# --------------------------------------------------------------------------------------
# (c) decoder geometry of latent pairs, (d) the feature browser
# --------------------------------------------------------------------------------------
def decoder_geometry(geo, max_points: int = 600, seed: int = 0) -> go.Figure:
    """Decoder cosine against co-occurrence lift for pairs of latents (a random ``max_points`` of
    them), coloured by output similarity; hover names the pair."""
    m = len(geo.latents)
    i, j = np.triu_indices(m, 1)
    pick = np.arange(len(i))
    if len(pick) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(pick), max_points, replace=False))
    lift = np.log10(geo.lift[pick] + 1e-3)
    custom = np.stack([geo.latents[i[pick]], geo.latents[j[pick]], geo.lift[pick], geo.output_cos[pick],
                       geo.decoder_cos[pick]], 1)
    fig = go.Figure(go.Scattergl(
        x=np.round(lift, 3), y=np.round(geo.decoder_cos[pick], 3), mode="markers",
        marker=dict(size=4, color=np.round(geo.output_cos[pick], 3), colorscale="RdBu_r", cmin=-1, cmax=1,
                    colorbar=dict(title="output<br>cosine")),
        customdata=np.round(custom, 3),
        hovertemplate="latents %{customdata[0]} and %{customdata[1]}<br>lift %{customdata[2]}<br>"
                      "output cosine %{customdata[3]}<br>decoder cosine %{customdata[4]}<extra></extra>"))
    fig.add_vline(0, line_dash="dot", line_color="grey")
    fig.update_layout(title=f"Pairs of latents ({len(pick):,} of {len(i):,} shown)", width=620, height=380,
                      xaxis_title="log10 co-occurrence lift (0 = independent, -3 = never together)",
                      yaxis_title="cosine of decoder directions", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def feature_browser(table, title: str = "Every latent of the SAE") -> go.Figure:
    """Each latent of a ``LatentTable`` as a point: density (log) against the share of its top
    activations on one token; hover: its top token and the token it promotes."""
    custom = np.stack([table.latents, np.round(100 * table.density, 3), np.round(table.max, 2)], 1)
    text = [f"fires on {t!r}, promotes {p!r}" for t, p in zip(table.top_token, table.promotes)]
    fig = go.Figure(go.Scattergl(
        x=np.round(np.log10(table.density), 3), y=np.round(table.top_token_share, 3), mode="markers",
        marker=dict(size=5, color=np.round(np.log10(table.max), 3), colorscale="Viridis",
                    colorbar=dict(title="log10 max<br>activation")),
        customdata=custom, text=text,
        hovertemplate="latent %{customdata[0]}: %{customdata[1]}% of tokens, max %{customdata[2]}<br>"
                      "%{text}<extra></extra>"))
    fig.update_layout(title=title, width=620, height=380, xaxis_title="log10 density (share of tokens it fires on)",
                      yaxis_title="share of top activations on one token", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def feature_browser_static(table, title: str = "Every latent of the SAE", label: int = 6):
    """The matplotlib version of ``feature_browser``; ``label`` single-token latents, spread over the densities, are named."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    sc = ax.scatter(table.density, table.top_token_share, c=np.log10(table.max), s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="log10 max activation")
    ax.set(xscale="log", xlabel="density (share of tokens it fires on)",
           ylabel="share of top activations on one token", title=title)
    pure = np.flatnonzero(table.top_token_share >= 0.95)
    pure = pure[np.argsort(table.density[pure], kind="stable")]
    named = pure[np.unique(np.linspace(0, len(pure) - 1, min(label, len(pure))).astype(int))]
    for k, n in enumerate(named):  # labels in a row below the plateau, in density order, so none overlap
        ax.annotate(f"{table.latents[n]}: {table.top_token[n]!r}", (table.density[n], table.top_token_share[n]),
                    xytext=(0.02 + 0.82 * k / max(len(named) - 1, 1), 0.84 - 0.09 * (k % 2)),
                    textcoords="axes fraction", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", color="grey", lw=0.5))
    fig.set_dpi(DPI)
    return fig
