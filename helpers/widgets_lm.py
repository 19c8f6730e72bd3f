"""Interactive boxes for notebook 04: type a prompt, see which latents fire on each token.

The work is done by ``helpers.lm.intervene.prompt_latents`` (a pure function, tested on its
own); this module only wires it to a text box and an output area.
"""
from __future__ import annotations

import html

from helpers.lm.intervene import TokenUnits, prompt_latents


def prompt_html(rows: list[TokenUnits], kind: str = "latent") -> str:
    """The tokens of a prompt in a row, each shaded by its strongest unit's activation, with its
    strongest units listed underneath (hover a token for the full list)."""
    peak = max((r.values[0] for r in rows if r.values), default=1.0) or 1.0
    cells = []
    for r in rows:
        a = r.values[0] / peak if r.values else 0.0
        tip = html.escape(", ".join(f"{kind} {u}: {v:.2f}" for u, v in zip(r.units, r.values)) or "nothing fires")
        under = "<br>".join(f"{u} <small>{v:.1f}</small>" for u, v in zip(r.units[:3], r.values[:3]))
        text = html.escape(r.token).replace("\n", "&#x23CE;").replace(" ", "&nbsp;")
        cells.append(f"<div title='{tip}' style='display:inline-block;vertical-align:top;margin:1px;"
                     f"font-family:monospace;font-size:11px;text-align:center'>"
                     f"<div style='background:rgba(255,140,0,{a:.2f});padding:1px 2px'>{text}</div>"
                     f"<div style='color:#555'>{under}</div></div>")
    return "<div>" + "".join(cells) + "</div>"


def prompt_box(model, units, text: str = "", k: int = 5, layer: int = 0):
    """A text box: on Enter, the tokens of its text with the ``k`` strongest units of ``units``
    on each (``units`` from ``lm.latent_units(sae, range(d_sae))``). Returns the widget."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

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
