"""The checks that follow the exercises of each notebook, one module per notebook topic:
``toy`` (01), ``sae`` (02), ``diagnostics`` (03), ``lm`` (04), ``beyond`` (05), ``choosing`` (06), and ``training``
(the bigger training exercises of 01 and 02: the toy model's Adam loop, resampling dead latents).

Each check is ``checks.<topic>.<exercise>(learner_fn)`` and returns the function the notebook
goes on with (see ``helpers.exercises.check``).
"""
