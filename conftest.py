"""Shared test settings: tests run at the ci scale on whatever device the machine has.

This file sits at the repository root so that it applies however pytest is started
(``pytest``, ``pytest tests/test_sae.py``, ``pytest notebooks/01_toy_superposition.ipynb``).

Unless ``COURSE_CACHE`` is set, a test run gets a cache folder of its own, empty at the start
and shared by the unit tests and the notebooks (nbval starts their kernels with this
environment, and pytest-xdist's worker processes inherit it). So every run exercises the current training code, and a grid that the tests
train is reused by the notebooks instead of being trained twice.

Claims are strict here (``COURSE_CLAIMS_STRICT=1``): a claim that does not hold raises, so the
notebook that states it fails.

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
# A false claim raises (helpers.course.claims.ClaimFailed): a notebook whose sentence is no longer true
# fails its nbval run, whatever scale the stored outputs come from.
os.environ.setdefault("COURSE_CLAIMS_STRICT", "1")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (set in pyproject.toml): one worker per CPU core, at most four.

    Each worker runs one test module or one notebook at a time (``--dist loadscope`` keeps
    a notebook's cells together, in order) with one thread, so on a 2-core machine two
    notebooks run side by side. A grid or an activation cache that two workers need at the
    same time is computed by one of them while the other waits (``helpers.store.cache_lock``).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


# The order in which pytest-xdist hands modules and notebooks to the workers (``--dist loadscope
# --no-loadscope-reorder``: a worker takes the next one when it is almost done with its own). One
# job dominates a test run on an empty cache: notebook 03's ci grid (about 7 minutes on one
# thread), which tests/test_diagnostics.py trains and notebooks 02, 03, 04 and 05 reuse. So that
# module goes first, and the notebooks that do not wait for the grid go before those that do:
# 01 and its exercise version never use it, and 04 needs it only in its last section, after its
# own language-model grid. Notebook 06 is the longest (its toy grids, about 7 minutes at ci) and
# needs neither grid, so it starts second: the run no longer ends with it alone on one worker
# while its exercise version waits for its caches on the other. Each exercise version stays well
# behind its solution, so it reopens the solution's caches instead of waiting on them.
_FIRST_MODULES = ("tests/test_diagnostics.py",)
_NOTEBOOK_ORDER = (
    "notebooks/01_toy_superposition.ipynb",
    "notebooks/06_choosing_l0_and_width.ipynb",
    "notebooks/exercises/01_toy_superposition.ipynb",
    "notebooks/04_lm_mlp_features.ipynb",
    "notebooks/02_sae_ground_truth.ipynb",
    "notebooks/03_hyperparameter_diagnostics.ipynb",
    "notebooks/05_beyond_the_report.ipynb",
    "notebooks/exercises/04_lm_mlp_features.ipynb",
    "notebooks/exercises/02_sae_ground_truth.ipynb",
    "notebooks/exercises/03_hyperparameter_diagnostics.ipynb",
    "notebooks/exercises/05_beyond_the_report.ipynb",
    "notebooks/exercises/06_choosing_l0_and_width.ipynb",
)


def pytest_collection_modifyitems(session, config, items):
    """Put the grid's module first and the notebooks in ``_NOTEBOOK_ORDER`` (others keep their place)."""
    def rank(item):
        path = item.nodeid.split("::")[0]
        if path in _FIRST_MODULES:
            return 0, 0
        if path in _NOTEBOOK_ORDER:
            return 2, _NOTEBOOK_ORDER.index(path)
        return (3, 0) if path.endswith(".ipynb") else (1, 0)

    items.sort(key=rank)  # stable: tests keep their order inside each rank
