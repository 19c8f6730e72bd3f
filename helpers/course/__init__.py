"""The course's own plumbing, as distinct from the ideas it teaches: ``sizes`` (how big every run is at
each ``TUTORIAL_SCALE``, one frozen block per notebook), ``recipes`` (the toy data's SAE recipe and
notebook 03's cached grid), ``claims`` (each sentence's number, checked where it is written),
``exercises`` (solutions and stubs from one source, and the ``check`` that follows an exercise),
``checks`` (one module of checks per notebook) and ``colab`` (the notebooks' setup cell)."""
