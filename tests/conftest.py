"""Shared test settings: tests run at the ci scale on whatever device the machine has."""
import os

os.environ.setdefault("TUTORIAL_SCALE", "ci")
