"""Every figure of the course, one module per notebook topic.

* ``toy``, ``toy_geometry``, ``toy_neurons``: notebook 01 (toy models and the sweep sliders; phase
  diagrams, feature pairs, 3-D polytopes; the models with a row of neurons and computing |x|);
* ``ground_truth``, ``training``: notebook 02 (the data, SAE recovery, sweeps, the grid sliders;
  firing frequencies, training curves, MMCS during training, the recipe ladder);
* ``diagnostics``: notebook 03 (a grid's heatmaps, loss basins, MMCS with larger, the cell explorer);
* ``lm``: notebook 04 (statistics, tables, contexts, dashboards, the prompt box);
* ``interactive``: the plotly figures of notebooks 01, 03 and 04, with ``show`` to store them small;
* ``style``: what they share: ``DPI``, ``to_numpy`` and ``METRIC_STYLE``, one table of how each
  metric of a grid is named and coloured, static and interactive alike.

Import the module you need: ``from helpers.figures import toy as pt``.
"""
