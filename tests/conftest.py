"""Shared test settings: tests run at the ci scale on whatever device the machine has.

Unless ``COURSE_CACHE`` is set, a test run gets a cache folder of its own, empty at the start
and shared by the unit tests and the notebooks (nbval starts their kernels with this
environment). So every run exercises the current training code, and a grid that the tests
train is reused by the notebooks instead of being trained twice.

Tests and notebook kernels also run with one CPU thread (``OMP_NUM_THREADS=1``, set here
before torch is imported). The stored notebook outputs were produced that way, and the
floating-point results of a CPU matrix product depend on how the library splits it across
threads: a borderline number (one latent dead or alive at the edge of its window) must not
change with the number of cores of the machine that runs the tests.
"""
import os
import tempfile

os.environ.setdefault("TUTORIAL_SCALE", "ci")
os.environ.setdefault("COURSE_CACHE", tempfile.mkdtemp(prefix="course-test-cache-"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
