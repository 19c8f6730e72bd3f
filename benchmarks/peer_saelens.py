"""Our SAE trainer next to SAELens 6 on the same kind of toy data, and file compatibility.

SAELens is an optional extra, so run this with an interpreter that has it, e.g.::

    python3 -m venv .venv-saelens
    .venv-saelens/bin/pip install torch sae-lens && .venv-saelens/bin/pip install --no-deps -e .
    .venv-saelens/bin/python benchmarks/peer_saelens.py [--quick]

Both sides train a 256 -> 512 standard (ReLU) SAE at batch 256 and generate their data as
they go: ours with ``GroundTruthData.sample``, SAELens with its ``sae_lens.synthetic`` toolkit
(``ActivationGenerator`` + ``FeatureDictionary``, ``train_toy_sae``) configured like ours: the
same 512 feature directions, the same marginal firing probabilities and low-rank latent
correlation, magnitudes with the mean and spread of uniform(0, 1). ``ours_over_saelens`` is
the ratio of examples per second (ours with its default bfloat16 products where the CPU has
them; ``ours_float32_over_saelens`` with float32 throughout, as SAELens trains). Then SAELens loads SAEs that ``save_sae`` wrote (standard with
and without a decoder bias, TopK, BatchTopK (saved as SAELens saves it, a JumpReLU) and
JumpReLU) and we load one that SAELens trained and saved; the latents and
reconstructions must agree. The last line printed is one JSON object.

``--files-only`` runs just the file checks (every variant save_sae writes, loaded back by
SAELens, outputs compared; and one SAELens SAE loaded by us), without the speed comparison.
Without sae-lens the script prints one JSON object saying it skipped and why, and exits 0.
SAELens pins an older TransformerLens than the course, so give it a venv of its own; one that
reuses the course venv's torch (no second download)::

    python -m venv /work/venv-saelens
    echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \
        > /work/venv-saelens/lib/python3.11/site-packages/zz_course.pth   # course packages, lowest priority
    /work/venv-saelens/bin/pip install sae-lens
    /work/venv-saelens/bin/python benchmarks/peer_saelens.py --files-only
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time

import importlib.util
import sys

import torch

if importlib.util.find_spec("sae_lens") is None:  # an optional extra: say so and stop
    print(json.dumps({"benchmark": "peer_saelens", "skipped": True,
                      "reason": f"sae-lens is not installed for {sys.executable}: install it in a venv of its own "
                                "(see this script's docstring) and run the script with that venv's python"}))
    raise SystemExit(0)

import sae_lens  # noqa: E402
from sae_lens import SAE as SaeLensSAE  # noqa: E402
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig  # noqa: E402
from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, train_toy_sae  # noqa: E402

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.sae import SAE, SAEConfig, load_sae, save_sae, train_sae
from helpers.sae.fused import resolve_matmul_dtype

H, G, J, B, LR = 256, 512, 512, 256, 1e-3


def saelens_data(ours: GroundTruthData) -> tuple[FeatureDictionary, ActivationGenerator]:
    """SAELens' synthetic data set up to match ``GroundTruthData`` (see the module docstring)."""
    feature_dict = FeatureDictionary(G, H, initializer=None, seed=0)
    with torch.no_grad():
        feature_dict.feature_vectors.copy_(ours.features)
    factor = ours._corr_factor_t.T.contiguous()  # (G, r): correlation = factor factor^T + diag
    diag = 1.0 - factor.pow(2).sum(1)
    generator = ActivationGenerator(
        G,
        firing_probabilities=ours.feature_probabilities,  # our marginal P(feature g is on)
        mean_firing_magnitudes=0.5,
        std_firing_magnitudes=(1 / 12) ** 0.5,
        correlation_matrix=(factor, diag),
    )
    return feature_dict, generator


def saelens_examples_per_s(ours: GroundTruthData, steps: int) -> float:
    feature_dict, generator = saelens_data(ours)

    def fresh() -> StandardTrainingSAE:
        return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=H, d_sae=J, l1_coefficient=0.1 / J,
                                                             apply_b_dec_to_input=False))

    quiet = contextlib.redirect_stderr(io.StringIO())  # its progress bar
    with quiet:
        train_toy_sae(fresh(), feature_dict, generator, training_samples=B * 20, batch_size=B, lr=LR)  # warm up
        sae = fresh()
        t0 = time.perf_counter()
        train_toy_sae(sae, feature_dict, generator, training_samples=B * steps, batch_size=B, lr=LR)
    return B * steps / (time.perf_counter() - t0)


def ours_examples_per_s(data: GroundTruthData, steps: int, matmul_dtype: str = "auto") -> float:
    cfg = SAEConfig(d_in=H, d_sae=J, l1_coeffs=(0.1,), lr=LR, batch_size=B, matmul_dtype=matmul_dtype)
    train_sae(SAE(cfg, device="cpu"), data.sample, steps=20, progress=False)  # warm up
    log = train_sae(SAE(cfg, device="cpu"), data.sample, steps=steps, progress=False)
    return log.examples / log.seconds


def saelens_reads_ours() -> dict:
    """Save each of our variants with ``save_sae``, load with SAELens, compare latents and reconstructions."""
    worst, ok, checked, per_variant = 0.0, True, [], {}
    x = GroundTruthData(GroundTruthConfig(n_features=G, d=H), device="cpu").sample(512)
    variants = [("standard", False, {}), ("standard", True, {}), ("topk", True, {"k": 8}),
                ("batchtopk", True, {"k": 8.0}), ("jumprelu", True, {"l1_coeffs": (3.0,)})]
    for architecture, decoder_bias, extra in variants:
        cfg = SAEConfig(d_in=H, d_sae=J, decoder_bias=decoder_bias, steps=200, architecture=architecture, **extra)
        sae = SAE(cfg, device="cpu")
        train_sae(sae, lambda n: x[:n] + 0.3, progress=False)  # +0.3: an offset for b_dec to learn
        sae.eval()  # BatchTopK encodes with its learned threshold, as SAELens saves it
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_sae(sae, tmp)[0]
            theirs = SaeLensSAE.load_from_disk(str(folder), device="cpu")
        with torch.no_grad():
            ours = sae(x + 0.3)
            acts = theirs.encode(x + 0.3)
            recon = theirs.decode(acts)
        diff = max(float((acts - ours.acts[0]).abs().max()), float((recon - ours.x_hat[0]).abs().max()))
        worst = max(worst, diff)
        ok = ok and diff < 1e-4 and theirs.cfg.apply_b_dec_to_input == decoder_bias
        checked.append(f"{architecture}->{theirs.cfg.architecture()}")
        per_variant[f"{architecture}{'+b_dec' if decoder_bias else ''}"] = diff
    return {"saelens_loads_ours": ok, "saelens_loads_ours_max_abs_diff": worst, "saelens_loads_ours_variants": checked,
            "saelens_loads_ours_diff_per_variant": per_variant}


def ours_reads_saelens(data: GroundTruthData) -> dict:
    """Train briefly with SAELens, save with SAELens, load with ``load_sae``: same reconstruction."""
    feature_dict, generator = saelens_data(data)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=H, d_sae=J, l1_coefficient=0.1 / J))
    with contextlib.redirect_stderr(io.StringIO()):
        train_toy_sae(sae, feature_dict, generator, training_samples=B * 50, batch_size=B, lr=LR)
    x = data.sample(512)
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        ours = load_sae(tmp, device="cpu")
        theirs = SaeLensSAE.load_from_disk(tmp, device="cpu")
    with torch.no_grad():
        diff = float((ours(x).x_hat[0] - theirs.decode(theirs.encode(x))).abs().max())
    return {"ours_loads_saelens": diff < 1e-4, "ours_loads_saelens_max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke test, noisier numbers)")
    parser.add_argument("--files-only", action="store_true", help="only the save/load checks, no speed comparison")
    args = parser.parse_args()
    if args.files_only:
        data = GroundTruthData(GroundTruthConfig(n_features=G, d=H), device="cpu")
        print(json.dumps({"benchmark": "peer_saelens", "sae_lens_version": sae_lens.__version__,
                          **saelens_reads_ours(), **ours_reads_saelens(data)}))
        return
    steps = 300 if args.quick else 1500
    data = GroundTruthData(GroundTruthConfig(n_features=G, d=H), device="cpu")
    # Alternate the two sides so that a slow spell of a shared machine hits both.
    ours_runs, fp32_runs, theirs_runs = [], [], []
    for _ in range(3):
        ours_runs.append(ours_examples_per_s(data, steps))
        fp32_runs.append(ours_examples_per_s(data, steps, "float32"))
        theirs_runs.append(saelens_examples_per_s(data, steps))
    ours_rate, fp32_rate, theirs_rate = max(ours_runs), max(fp32_runs), max(theirs_runs)
    summary = {
        "benchmark": "peer_saelens",
        "sae_lens_version": sae_lens.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "d_in": H, "d_sae": J, "batch": B, "steps": steps,
        "ours_examples_per_s": round(ours_rate),
        "saelens_examples_per_s": round(theirs_rate),
        "ours_over_saelens": round(ours_rate / theirs_rate, 2),
        # the default matmul_dtype ("auto": bfloat16 products on a CPU that has them), and float32 throughout
        "ours_matmul_dtype": str(resolve_matmul_dtype("auto", torch.device("cpu"))).removeprefix("torch."),
        "ours_float32_over_saelens": round(fp32_rate / theirs_rate, 2),
        **saelens_reads_ours(),
        **ours_reads_saelens(data),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
