"""The course's ``synthetic_eval`` next to SAELens' ``eval_sae_on_synthetic_data``: same SAE, same samples.

``helpers.beyond.choosing.synthetic_eval`` is meant to report exactly the numbers of
``sae_lens.synthetic.evals.eval_sae_on_synthetic_data`` (true and SAE L0, dead latents,
shrinkage, explained variance, MCC, uniqueness, and the per-latent precision / recall / F1 /
accuracy of each latent against its best-matching true feature). This script checks that.

It trains two small SAEs on ``GroundTruthData`` (G = 64 features in h = 32 dimensions, J = 64
latents, 1500 steps of 256): a BatchTopK (``PerInstanceBatchTopK`` with one instance, k = 5) and a
ReLU + L1 SAE. Each is saved with ``save_sae`` and loaded back with ``sae_lens.SAE.load_from_disk``
(the BatchTopK comes back as the JumpReLU with its learned threshold that it is saved as, and
the course scores it in eval mode, which encodes with that same threshold). Then both
evaluations read the SAME samples: the course draws ``(x, c)`` with ``sample_with_coefficients``
inside ``data.fixed_stream(...)``; SAELens gets duck-typed stand-ins for its ``FeatureDictionary``
(``feature_vectors`` = the course's features, ``__call__(c) = c @ features``) and its
``ActivationGenerator`` (``sample(n)`` = ``data.sample_coefficients(n)`` from the same fixed
stream, in the same chunk sizes). The data has no jitter or noise, so the course's x is exactly
``c @ features``, the hidden activations SAELens builds.

Every field is printed side by side per SAE with its absolute difference, and the worst
difference over all fields and both SAEs. The target: MCC and F1 agree to 1e-3
(``agree_mcc_f1``); ``agree_all`` says whether every field does (dead latents exactly).

Run with an interpreter that has sae-lens and sees the course (see benchmarks/peer_saelens.py)::

    PYTHONPATH=. /work/venv-saelens/bin/python benchmarks/synthetic_metrics_saelens.py [--quick]

Without sae-lens it prints one JSON object saying it skipped and why, and exits 0. The last
line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile

import torch

if importlib.util.find_spec("sae_lens") is None:  # an optional extra: say so and stop
    print(json.dumps({"benchmark": "synthetic_metrics_saelens", "skipped": True,
                      "reason": f"sae-lens is not installed for {sys.executable}: install it in a venv of its own "
                                "(see benchmarks/peer_saelens.py) and run the script with that venv's python"}))
    raise SystemExit(0)

import sae_lens  # noqa: E402
from sae_lens import SAE as SaeLensSAE  # noqa: E402
from sae_lens.synthetic.evals import eval_sae_on_synthetic_data  # noqa: E402

from helpers.beyond.choosing import synthetic_eval  # noqa: E402
from helpers.beyond.matryoshka import PerInstanceBatchTopK  # noqa: E402
from helpers.data import GroundTruthConfig, GroundTruthData  # noqa: E402
from helpers.sae import SAE, SAEConfig, save_sae, train_sae  # noqa: E402

G, H, J, K, ALPHA = 64, 32, 64, 5, 0.3
STREAM = "synthetic-metrics-saelens"
TOLERANCE = 1e-3


class CourseFeatures:
    """What ``eval_sae_on_synthetic_data`` uses of a ``FeatureDictionary``: the course's features."""

    def __init__(self, data: GroundTruthData):
        self.feature_vectors = data.features.float()  # (G, h)

    def __call__(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.feature_vectors  # what sample_with_coefficients returns as x (no jitter, no noise)


class CourseCoefficients:
    """What it uses of an ``ActivationGenerator``: ``sample(n)`` -> (n, G) coefficients, here the course's."""

    def __init__(self, data: GroundTruthData):
        self.data = data

    def sample(self, n: int) -> torch.Tensor:
        return self.data.sample_coefficients(n)


def train(data: GroundTruthData, kind: str, steps: int):
    if kind == "batchtopk":
        cfg = SAEConfig(d_in=H, d_sae=J, l1_coeffs=(0.0,), architecture="batchtopk", k=K, steps=steps)
        sae = PerInstanceBatchTopK(cfg, ks=[K], device="cpu")
    else:
        sae = SAE(SAEConfig(d_in=H, d_sae=J, l1_coeffs=(ALPHA,), steps=steps), device="cpu")
    train_sae(sae, data.sample, progress=False)
    return sae


def compare(sae, data: GroundTruthData, n: int, chunk: int) -> dict:
    """Both evaluations of one SAE on the same n samples; every field side by side."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_sae(sae, tmp)[0]
        theirs = SaeLensSAE.load_from_disk(str(folder), device="cpu")
    with data.fixed_stream(STREAM):
        (ours,) = synthetic_eval(sae, data, n=n, chunk=chunk)
    with data.fixed_stream(STREAM):
        ref = eval_sae_on_synthetic_data(theirs, CourseFeatures(data), CourseCoefficients(data),
                                         num_samples=n, batch_size=chunk)
    flat = {k: v for k, v in ref.to_dict().items() if k != "classification"}
    flat.update({("f1" if k == "f1_score" else k): v for k, v in ref.classification.__dict__.items()})
    fields = {}
    for name in ours._fields:
        a, b = float(getattr(ours, name)), float(flat[name])
        fields[name] = {"course": round(a, 6), "saelens": round(b, 6), "abs_diff": abs(a - b)}
    return {"saelens_architecture": theirs.cfg.architecture(), "fields": fields,
            "max_abs_diff": max(f["abs_diff"] for f in fields.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 training steps and 4096 samples (a smoke test)")
    args = parser.parse_args()
    steps, n, chunk = (300, 4096, 1024) if args.quick else (1500, 16_384, 4096)
    cfg = GroundTruthConfig(n_features=G, d=H, seed=0)
    if cfg.jitter or cfg.noise_std:
        raise SystemExit("this comparison needs x == c @ features exactly: no jitter, no noise")
    data = GroundTruthData(cfg, device="cpu")
    results = {kind: compare(train(data, kind, steps), data, n, chunk) for kind in ("batchtopk", "l1")}
    worst = max(r["max_abs_diff"] for r in results.values())
    mcc_f1 = max(r["fields"][k]["abs_diff"] for r in results.values() for k in ("mcc", "f1"))
    all_ok = all(f["abs_diff"] <= (0 if name == "dead_latents" else TOLERANCE)
                 for r in results.values() for name, f in r["fields"].items())
    print(json.dumps({"benchmark": "synthetic_metrics_saelens", "sae_lens_version": sae_lens.__version__,
                      "torch": torch.__version__, "G": G, "h": H, "J": J, "k": K, "alpha": ALPHA, "steps": steps,
                      "samples": n, "chunk": chunk, "tolerance": TOLERANCE,
                      "max_abs_diff_mcc_f1": mcc_f1, "agree_mcc_f1": mcc_f1 <= TOLERANCE,
                      "max_abs_diff": worst, "agree_all": all_ok, **results}))


if __name__ == "__main__":
    main()
