"""Figures and HTML views for notebook 04 (SAEs on a language model's MLP): activation and
firing statistics, the tables of CE loss recovered and of pair geometry, dictionary sizes
compared, a latent's top contexts, the dashboards of latents and neurons (``DashboardView``:
HTML for a browser, plain text for anything else), and the prompt box.

Each function draws one figure from numbers ``helpers.lm`` computed and returns it (or an
HTML string or a view); the notebook calls ``plt.show()`` / ``display``. In every HTML view a
token is shaded by the unit's activation relative to its largest one, the token it fires on is
boxed, and ``⏎`` marks a newline. The interactive figures of the notebook (pairs of latents, the
feature browser, the grid) are in ``helpers.figures.interactive``.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np

from helpers.figures.style import DPI, METRIC_STYLE, SIZE_AXIS

if TYPE_CHECKING:
    from helpers.lm import SAEEval
    from helpers.lm.dashboard import Dashboard, Example
    from helpers.lm.intervene import TokenUnits


def plot_activation_stats(sample: np.ndarray, title: str = "MLP activations"):
    """Two histograms of (tokens, d_mlp) activations: how often each neuron is positive, and
    the activation vector's norm per token."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    axes[0].hist((sample > 0).mean(0) * 100, bins=40, color="tab:blue")
    axes[0].set(xlabel="tokens where the neuron is positive (%)", ylabel="neurons",
                title="Density of each MLP neuron")
    axes[1].hist(np.linalg.norm(sample, axis=1), bins=60, color="tab:orange")
    axes[1].set(xlabel="L2 norm of the activation vector", ylabel="tokens", title="Activation norm per token")
    fig.suptitle(title)
    fig.set_dpi(DPI)
    return fig


def format_ce_table(evals: Sequence[SAEEval], kls: Sequence[float], base, free, baseline_kls: dict, d_mlp: int) -> str:
    """One line per SAE: size, alpha, L0 and FVU (held-out), the loss it adds to the clean model and
    its KL to the clean next-token distribution (nats/token), CE loss recovered against three
    floors (MLP zeroed, replaced by its mean, by a per-token lookup), and whether it beats the lookup.
    ``base``/``free``: ``lm.ce_baselines`` / ``lm.context_free_baselines`` on the same windows;
    ``baseline_kls``: KL of the three floors, keyed "zero", "mean", "token lookup"."""
    floors = {"zero": base.zero_ablated, "mean": free.mean_ablated, "token lookup": free.token_lookup}
    def pct(r):  # below 0: worse than that floor
        return f"{100 * r:>5.1f}%" if r >= 0 else f"{'< 0':>6}"

    lines = [f"{'':>19} {'L0':>6} {'FVU':>5} {'+CE':>6} {'KL':>6}   CE recovered vs zero / mean / lookup",
             f"{'(held-out tokens)':>19} {'':>6} {'':>5} {'nats':>6} {'nats':>6}"]
    for name, loss in floors.items():
        lines.append(f"{'floor: ' + name:>19} {'':>6} {'':>5} {loss - base.clean:>+6.2f} {baseline_kls[name]:>6.2f}")
    for e, kl in zip(evals, kls):
        rec = [(loss - e.ce.with_sae) / (loss - base.clean) for loss in floors.values()]
        mark = "  beats the lookup" if e.ce.with_sae < free.token_lookup else ""
        lines.append(f"{e.d_sae / d_mlp:>8g}x alpha {e.alpha:<4g} {e.l0:>6.1f} {e.fvu:>5.2f} {e.ce.with_sae - base.clean:>+6.2f} "
                     f"{kl:>6.2f}   {pct(rec[0])} / {pct(rec[1])} / {pct(rec[2])}{mark}")
    return "\n".join(lines)


def plot_firing_density(freqs: dict, band: tuple[float, float] = (1e-3, 3e-2), title: str = "How often latents fire"):
    """Histogram of log10 firing density (share of tokens a latent fires on), one outline per
    SAE (``freqs``: label -> (d_sae,) densities; dead latents are counted in the title), with
    the "moderately rare" range of ``lm.pick_latents`` shaded."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2), constrained_layout=True)
    edges = np.linspace(-5, 0, 51)
    ax.axvspan(np.log10(band[0]), np.log10(band[1]), color="0.9", label="range lm.pick_latents reads from")
    for label, f in freqs.items():
        f = np.asarray(f)
        ax.hist(np.log10(f[f > 0]), bins=edges, histtype="step", lw=1.8,
                label=f"{label}; {int((f == 0).sum())} never fire")
    ax.set(xlabel="log10 share of tokens the latent fires on", ylabel="latents", title=title)
    ax.legend(fontsize=8, loc="upper left")
    fig.set_dpi(DPI)
    return fig


def plot_geometry_nulls(geos: dict, bins: int = 12):
    """Mean decoder cosine of latent pairs against their co-occurrence lift (binned in log10 lift),
    one line per dictionary (``geos``: label -> ``PairGeometry``): a null whose line lies on the
    SAE's explains the SAE's pattern."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4), constrained_layout=True)
    for label, g in geos.items():
        x = np.log10(np.clip(g.lift, 1e-3, None))
        edges = np.quantile(x, np.linspace(0, 1, bins + 1))
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        mids = np.array([np.median(x[idx == b]) if (idx == b).any() else np.nan for b in range(bins)])
        means = np.array([g.decoder_cos[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)])
        ax.plot(mids, means, "o-", ms=4, label=label)
    ax.axvline(0, color="grey", ls=":", lw=1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="log10 co-occurrence lift of the pair, in bins (0 = independent, -3 = never together)",
           ylabel="mean cosine of decoder directions",
           title="Do pairs that fire together point alike? SAE against nulls")
    ax.legend(fontsize=8)
    fig.set_dpi(DPI)
    return fig


def format_geometry_compare(tables: dict) -> str:
    """Several 2x2 tables of ``helpers.lm.geometry_table`` on one line each, with the two column
    gaps (co-occur minus do not co-occur, mean decoder cosine, in each output row)."""
    lines = [f"{'':34}{'similar output':^18}{'different output':^18}{'co-occurrence gap':^18}",
             f"{'':34}" + f"{'no co-oc':>9}{'co-oc':>9}" * 2 + f"{'similar':>9}{'diff.':>9}"]
    for name, t in tables.items():
        cells = [t[s, c][0] for s in (True, False) for c in (False, True)]
        lines.append(f"{name:34}" + "".join(f"{v:>+9.2f}" for v in cells)
                     + f"{cells[1] - cells[0]:>+9.2f}{cells[3] - cells[2]:>+9.2f}")
    lines.append("entries: mean cosine between the two latents' decoder directions")
    return "\n".join(lines)


def plot_latent_histograms(latent_acts: np.ndarray, latents: Sequence[int]):
    """Histogram of each latent's nonzero activations (log count: the tail is the story).

    ``latent_acts``: a dense (tokens, d_sae) array or a ``lm.LatentActs``."""
    fig, axes = plt.subplots(1, len(latents), figsize=(2.9 * len(latents), 2.6), constrained_layout=True,
                             squeeze=False)
    for ax, f in zip(axes[0], latents):
        col = np.asarray(latent_acts[:, f])  # one column (a lm.LatentActs computes it on demand)
        v = col[col > 0]
        ax.hist(v, bins=30, color="tab:purple", log=True)
        ax.set(title=f"latent {f} ({len(v):,} tokens)", xlabel="activation (when > 0)", ylabel="tokens (log)")
    fig.suptitle("How strongly the latents above fire")
    fig.set_dpi(DPI)
    return fig


def plot_expansion(evals: Sequence[SAEEval], mmcs_larger: np.ndarray, d_mlp: int):
    """Dictionary sizes compared at matched sparsity: CE loss recovered and FVU against L0, one
    curve per size (its L1 values are the points), and MMCS with larger dictionaries per L1
    value. ``mmcs_larger`` is the grid's (sizes, L1 values) array.

    At one alpha the sizes sit at different L0 (the L1 term is alpha / J), so the first two
    panels are read at equal height on the x axis, not at equal alpha."""
    sizes = sorted({e.d_sae for e in evals})
    alphas = sorted({e.alpha for e in evals})
    by = {(e.d_sae, e.alpha): e for e in evals}
    ratio = np.array(sizes) / d_mlp
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), constrained_layout=True)
    for i, J in enumerate(sizes):
        color = plt.cm.plasma(0.85 * i / max(len(sizes) - 1, 1))
        pts = sorted((by[J, a] for a in alphas), key=lambda e: e.l0)
        label = f"{J / d_mlp:g}x ({J} latents)"
        axes[0].plot([e.l0 for e in pts], [100 * e.ce.recovered for e in pts], "o-", color=color, label=label)
        axes[1].plot([e.l0 for e in pts], [e.fvu for e in pts], "o-", color=color, label=label)
    for ax, y, t in ((axes[0], "CE loss recovered (%)", "CE loss recovered at matched L0"),
                     (axes[1], "FVU (fraction of variance unexplained)", "Reconstruction error at matched L0")):
        ax.set_xscale("log")
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if min(e.l0 for e in evals) / 1.5 <= t <= max(e.l0 for e in evals) * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel="L0 (active latents per token, held-out tokens)", ylabel=y, title=t)
        ax.legend(fontsize=7, title=SIZE_AXIS, title_fontsize=7)
    axes[1].set_yscale("log")
    for j, a in enumerate(alphas):
        color = plt.cm.viridis(j / max(len(alphas) - 1, 1))
        axes[2].plot(ratio[:-1], mmcs_larger[:-1, j], "o-", color=color, label=f"alpha {a:.3g}")
    axes[2].set_xscale("log", base=2)
    axes[2].set_xticks(ratio[:-1], [f"{r:g}x" for r in ratio[:-1]])
    axes[2].minorticks_off()
    axes[2].set(xlabel=f"{SIZE_AXIS} / MLP width", ylabel=METRIC_STYLE["mmcs_larger"].label,
                title="Agreement with larger dictionaries")
    axes[2].legend(fontsize=7)
    fig.set_dpi(DPI)
    return fig


# --------------------------------------------------------------------------------------
# HTML views: a latent's top contexts, dashboards, the prompt box
# --------------------------------------------------------------------------------------
def _token_html(t: str) -> str:
    return html.escape(t).replace("\n", "&#x23CE;").replace(" ", "&nbsp;")


def _plain(t: str) -> str:
    return t.replace("\n", "⏎")


def _shaded_row(tokenizer, ids, acts, at: int, value: float, peak: float) -> str:
    """One example as HTML: its value, then its tokens, each shaded by its activation relative to
    ``peak``, the token at ``at`` boxed."""
    spans = []
    for i, (t, v) in enumerate(zip(ids.tolist(), acts.tolist())):
        alpha = max(0.0, min(1.0, v / peak)) if peak > 0 else 0.0
        border = "border:1px solid #c00;" if i == at else ""
        spans.append(f"<span style='background:rgba(255,140,0,{alpha:.2f});{border}'>{_token_html(tokenizer.decode([t]))}</span>")
    return f"<div>{value:6.2f}&nbsp;&nbsp;{''.join(spans)}</div>"


def _words_html(words, color: str) -> str:
    """Tokens on a coloured background, each a string or a (token, logit) pair (``lm.TokenLogit``),
    the logit written after it."""
    def word(w) -> str:
        text, logit = (w, None) if isinstance(w, str) else (w[0], float(w[1]))
        return f"<span style='background:{color}'>{_token_html(text)}</span>" + ("" if logit is None else f"<sub>{logit:+.2f}</sub>")

    return ", ".join(word(w) for w in words)


def contexts_html(tokenizer, contexts, title: str = "", promotes: Sequence[str] = (),
                  suppresses: Sequence[str] = ()) -> str:
    """One latent as HTML: its top contexts, every token shaded by the latent's activation and
    the peak token boxed, then the tokens its output promotes and suppresses (strings, or the
    ``(token, logit)`` pairs of ``lm.logit_effects``, shown with their logit)."""
    peak = max((c[2] for c in contexts), default=1.0) or 1.0
    lines = [f"<div style='font-family:monospace;font-size:12px;margin-bottom:8px'><b>{html.escape(title)}</b>"]
    lines += [_shaded_row(tokenizer, ids, vals, at, value, peak) for ids, at, value, vals in contexts]
    if promotes:
        lines.append(f"<div style='margin-top:3px'>promotes: {_words_html(promotes, '#d8f0d8')}</div>")
    if suppresses:
        lines.append(f"<div>suppresses: {_words_html(suppresses, '#f4d6d6')}</div>")
    return "\n".join(lines) + "</div>"


def _example_text(tok, ex: "Example") -> str:
    parts = [(f"[[{_plain(tok.decode([t]))}]]" if i == ex.at else _plain(tok.decode([t])))
             for i, t in enumerate(ex.ids.tolist())]
    return f"  {ex.value:6.2f}  {''.join(parts)}"


def _histogram_svg(d: "Dashboard", width: int = 260, height: int = 70) -> str:
    """The histogram of positive activations as a small inline SVG (log count)."""
    c = np.log10(1 + d.hist_counts.astype(float))
    top = c.max() if c.max() > 0 else 1.0
    w = width / len(c)
    bars = "".join(f"<rect x='{i * w:.1f}' y='{height - h:.1f}' width='{max(w - 1, 1):.1f}' height='{h:.1f}' "
                   f"fill='#8e44ad'/>" for i, h in enumerate(height * c / top))
    return (f"<svg width='{width}' height='{height + 14}' style='display:block'>{bars}"
            f"<text x='0' y='{height + 12}' font-size='10'>0</text>"
            f"<text x='{width}' y='{height + 12}' font-size='10' text-anchor='end'>{d.hist_edges[-1]:.2f}</text></svg>")


def dashboard_html(d: "Dashboard", tokenizer) -> str:
    """One unit's dashboard (``lm.dashboards``) as an HTML block."""
    head = (f"<b>{d.kind} {d.unit}</b>: fires on {100 * d.density:.2f}% of tokens, max {d.max:.2f}; "
            f"top token carries {100 * d.token_share:.0f}% of its activation, token identity explains "
            f"{100 * d.token_r2:.0f}% of its variance")
    toks = ", ".join(f"<code>{_token_html(t)}</code> {100 * s:.0f}% ({n}x)" for t, s, n in d.top_tokens)
    parts = [f"<div style='font-family:monospace;font-size:12px;margin:6px 0 12px 0'>{head}",
             "<div style='display:flex;gap:16px;align-items:flex-start'>",
             f"<div>positive activations (log count)<br>{_histogram_svg(d)}</div>",
             f"<div>current tokens, share of activation:<br>{toks}</div></div>",
             "<div style='margin-top:4px'><i>strongest</i></div>"]
    parts += [_shaded_row(tokenizer, ex.ids, ex.window, ex.at, ex.value, d.max) for ex in d.top]
    for (lo, hi), exs in reversed(d.bands):
        if exs:
            parts.append(f"<div style='margin-top:4px'><i>quantiles {100 * lo:.0f}-{100 * hi:.0f}%</i></div>")
            parts += [_shaded_row(tokenizer, ex.ids, ex.window, ex.at, ex.value, d.max) for ex in exs]
    if d.logits is not None:
        parts.append(f"<div style='margin-top:4px'>promotes: {_words_html(d.logits.promotes, '#d8f0d8')}</div>")
        parts.append(f"<div>suppresses: {_words_html(d.logits.suppresses, '#f4d6d6')}</div>")
    return "\n".join(parts) + "</div>"


def dashboard_text(d: "Dashboard", tokenizer) -> str:
    """One unit's dashboard as plain text (the fired-on token in [[ ]])."""
    lines = [f"{d.kind} {d.unit}: fires on {100 * d.density:.2f}% of tokens, max {d.max:.2f}; "
             f"top token {100 * d.token_share:.0f}% of activation, token identity R^2 {d.token_r2:.2f}",
             "  current tokens: " + ", ".join(f"{_plain(t)!r} {100 * s:.0f}%" for t, s, _ in d.top_tokens),
             "  strongest:"]
    lines += [_example_text(tokenizer, ex) for ex in d.top]
    for (lo, hi), exs in reversed(d.bands):
        if exs:
            lines.append(f"  quantiles {100 * lo:.0f}-{100 * hi:.0f}%:")
            lines += [_example_text(tokenizer, ex) for ex in exs]
    if d.logits is not None:
        lines.append("  promotes:   " + ", ".join(f"{_plain(w.token)!r} {w.logit:+.2f}" for w in d.logits.promotes))
        lines.append("  suppresses: " + ", ".join(f"{_plain(w.token)!r} {w.logit:+.2f}" for w in d.logits.suppresses))
    return "\n".join(lines)


class DashboardView:
    """Dashboards side by side (``columns``) in HTML, one after the other as text: ``display(view)``
    stores the HTML for a browser (JupyterLab, Colab, GitHub) and the text for anything else."""

    def __init__(self, dashboards: Sequence["Dashboard"], tokenizer, columns: int = 1, titles: Sequence[str] = ()):
        self.dashboards, self.tokenizer, self.columns, self.titles = list(dashboards), tokenizer, columns, list(titles)

    def _repr_html_(self) -> str:
        cells = []
        for i, d in enumerate(self.dashboards):
            title = f"<h4 style='margin:2px 0'>{html.escape(self.titles[i])}</h4>" if i < len(self.titles) else ""
            cells.append(f"<div style='min-width:0'>{title}{dashboard_html(d, self.tokenizer)}</div>")
        return (f"<div style='display:grid;grid-template-columns:repeat({self.columns},minmax(0,1fr));gap:18px'>"
                + "".join(cells) + "</div>")

    def __repr__(self) -> str:
        out = []
        for i, d in enumerate(self.dashboards):
            title = f"== {self.titles[i]} ==\n" if i < len(self.titles) else ""
            out.append(title + dashboard_text(d, self.tokenizer))
        return "\n\n".join(out)


def prompt_html(rows: list["TokenUnits"], kind: str = "latent") -> str:
    """The tokens of a prompt (``lm.prompt_latents``) in a row, each shaded by its strongest unit's
    activation, with its strongest units listed underneath (hover a token for the full list)."""
    peak = max((r.values[0] for r in rows if r.values), default=1.0) or 1.0
    cells = []
    for r in rows:
        a = r.values[0] / peak if r.values else 0.0
        tip = html.escape(", ".join(f"{kind} {u}: {v:.2f}" for u, v in zip(r.units, r.values)) or "nothing fires")
        under = "<br>".join(f"{u} <small>{v:.1f}</small>" for u, v in zip(r.units[:3], r.values[:3]))
        cells.append(f"<div title='{tip}' style='display:inline-block;vertical-align:top;margin:1px;"
                     f"font-family:monospace;font-size:11px;text-align:center'>"
                     f"<div style='background:rgba(255,140,0,{a:.2f});padding:1px 2px'>{_token_html(r.token)}</div>"
                     f"<div style='color:#555'>{under}</div></div>")
    return "<div>" + "".join(cells) + "</div>"


def prompt_box(model, units, text: str = "", k: int = 5, layer: int = 0):
    """A text box: on Enter, the tokens of its text with the ``k`` strongest units of ``units``
    on each (``units`` from ``lm.latent_units(sae, range(d_sae))``), drawn by ``prompt_html``.
    Returns the widget."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    from helpers.lm.intervene import prompt_latents

    box = widgets.Text(value=text, placeholder="type a prompt and press Enter",
                       description="prompt", layout=widgets.Layout(width="80%"), continuous_update=False)
    out = widgets.Output()

    def update(_=None):
        out.clear_output(wait=True)
        with out:
            if box.value.strip():
                display(HTML(prompt_html(prompt_latents(model, units, box.value, k=k, layer=layer), units.kind)))

    box.observe(update, names="value")
    update()
    return widgets.VBox([box, out])
