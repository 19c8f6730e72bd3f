"""Every figure of the course, one module per notebook topic.

* ``toy``: notebook 01 (toy models, phase diagrams, feature pairs, 3-D polytopes, the sweep sliders);
* ``ground_truth``: notebook 02 (the data, SAE recovery, sweeps, training curves, the grid sliders);
* ``diagnostics``: notebook 03 (a grid's heatmaps, loss basins, MMCS with larger, the cell explorer);
* ``lm``: notebook 04 (statistics, tables, contexts, dashboards, the prompt box);
* ``interactive``: the plotly figures of notebooks 01, 03 and 04, with ``show`` to store them small;
* ``style``: what they share: ``DPI``, ``to_numpy`` and ``METRIC_STYLE``, one table of how each
  metric of a grid is named and coloured, static and interactive alike.

Import the module you need: ``from helpers.figures import toy as pt``.
"""
