"""The checks that follow the exercises of each notebook, one module per notebook topic:
``toy`` (01), ``sae`` (02), ``diagnostics`` (03), ``lm`` (04), ``beyond`` (05), ``choosing`` (06), and ``training``
(the bigger training exercises of 01 and 02: the toy model's Adam loop, resampling dead latents).

Each check is ``checks.<topic>.<exercise>(learner_fn)`` and returns the function the notebook
goes on with (see ``helpers.course.exercises.check``). A topic too long for one module keeps part of its
checks in a sibling it re-exports (``toy_geometry``, ``toy_training``, ``lm_floors``; ``matching``
serves ``beyond`` and ``choosing``); ``common`` holds what every check shares (reading an answer,
comparing it, running a table of likely mistakes).
"""
