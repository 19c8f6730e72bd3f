"""The course's own plumbing, as distinct from the ideas it teaches: ``sizes`` (how big every run is at
each ``TUTORIAL_SCALE``). Other plumbing modules will join it here."""
