"""Showing a ``Dashboard``: HTML (JupyterLab, Colab, GitHub) and a plain-text fallback.

``DashboardView`` carries both, so ``display(view)`` stores the HTML for a browser and the
text for anything else; every token is shaded by the unit's activation relative to its
largest one, the token it fires on is boxed, and ``⏎`` marks a newline.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from helpers.lm.dashboard import Dashboard, Example


def _show(t: str) -> str:
    return html.escape(t).replace("\n", "&#x23CE;").replace(" ", "&nbsp;")


def _plain(t: str) -> str:
    return t.replace("\n", "⏎")


def _example_html(tok, ex: Example, peak: float) -> str:
    spans = []
    for i, (t, v) in enumerate(zip(ex.ids.tolist(), ex.window.tolist())):
        alpha = max(0.0, min(1.0, v / peak)) if peak > 0 else 0.0
        border = "border:1px solid #c00;" if i == ex.at else ""
        spans.append(f"<span style='background:rgba(255,140,0,{alpha:.2f});{border}'>{_show(tok.decode([t]))}</span>")
    return f"<div>{ex.value:6.2f}&nbsp;&nbsp;{''.join(spans)}</div>"


def _example_text(tok, ex: Example) -> str:
    parts = [(f"[[{_plain(tok.decode([t]))}]]" if i == ex.at else _plain(tok.decode([t])))
             for i, t in enumerate(ex.ids.tolist())]
    return f"  {ex.value:6.2f}  {''.join(parts)}"


def _histogram_svg(d: Dashboard, width: int = 260, height: int = 70) -> str:
    """The histogram of positive activations as a small inline SVG (log count)."""
    c = np.log10(1 + d.hist_counts.astype(float))
    top = c.max() if c.max() > 0 else 1.0
    w = width / len(c)
    bars = "".join(f"<rect x='{i * w:.1f}' y='{height - h:.1f}' width='{max(w - 1, 1):.1f}' height='{h:.1f}' "
                   f"fill='#8e44ad'/>" for i, h in enumerate(height * c / top))
    return (f"<svg width='{width}' height='{height + 14}' style='display:block'>{bars}"
            f"<text x='0' y='{height + 12}' font-size='10'>0</text>"
            f"<text x='{width}' y='{height + 12}' font-size='10' text-anchor='end'>{d.hist_edges[-1]:.2f}</text></svg>")


def dashboard_html(d: Dashboard, tokenizer) -> str:
    """One unit's dashboard as an HTML block."""
    peak = d.max
    head = (f"<b>{d.kind} {d.unit}</b>: fires on {100 * d.density:.2f}% of tokens, max {d.max:.2f}; "
            f"top token carries {100 * d.token_share:.0f}% of its activation, token identity explains "
            f"{100 * d.token_r2:.0f}% of its variance")
    toks = ", ".join(f"<code>{_show(t)}</code> {100 * s:.0f}% ({n}x)" for t, s, n in d.top_tokens)
    parts = [f"<div style='font-family:monospace;font-size:12px;margin:6px 0 12px 0'>{head}",
             "<div style='display:flex;gap:16px;align-items:flex-start'>",
             f"<div>positive activations (log count)<br>{_histogram_svg(d)}</div>",
             f"<div>current tokens, share of activation:<br>{toks}</div></div>",
             "<div style='margin-top:4px'><i>strongest</i></div>"]
    parts += [_example_html(tokenizer, ex, peak) for ex in d.top]
    for (lo, hi), exs in reversed(d.bands):
        if exs:
            parts.append(f"<div style='margin-top:4px'><i>quantiles {100 * lo:.0f}-{100 * hi:.0f}%</i></div>")
            parts += [_example_html(tokenizer, ex, peak) for ex in exs]
    if d.logits is not None:
        def words(ws, color):
            return ", ".join(f"<span style='background:{color}'>{_show(w.token)}</span><sub>{w.logit:+.2f}</sub>"
                             for w in ws)
        parts.append(f"<div style='margin-top:4px'>promotes: {words(d.logits.promotes, '#d8f0d8')}</div>")
        parts.append(f"<div>suppresses: {words(d.logits.suppresses, '#f4d6d6')}</div>")
    return "\n".join(parts) + "</div>"


def dashboard_text(d: Dashboard, tokenizer) -> str:
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
    """Dashboards side by side (``columns``) in HTML, one after the other as text."""

    def __init__(self, dashboards: Sequence[Dashboard], tokenizer, columns: int = 1, titles: Sequence[str] = ()):
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
