"""The memory estimate behind notebook 04's grid sizes: right about the tensors a real run holds,
and inside a free Colab T4 for every model the course names at ``full``."""
import pytest
import torch

from helpers import lm
from helpers.course.sizes import sizes
from helpers.diagnostics import run_grid
from helpers.diagnostics.grid import column_config
from helpers.lm.memory import HEADROOM, T4_BYTES, fit_sizes, grid_memory, sae_parameters
from helpers.optim import adam
from helpers.sae import SAE, SAEConfig


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("decoder_bias", [True, False])
def test_the_estimate_counts_the_tensors_a_small_grid_really_holds(decoder_bias):
    d, sizes_J, alphas = 16, (8, 32), (0.1, 0.3, 1.0)
    base = SAEConfig(d_in=d, d_sae=8, steps=4, batch_size=32, decoder_bias=decoder_bias,
                     dead_window=2, log_every=2)
    gen = torch.Generator().manual_seed(0)
    grid = run_grid(lambda n: torch.randn(n, d, generator=gen), base, sizes_J, alphas, keep_saes=True, progress=False)
    est = grid_memory(d, sizes_J, len(alphas), train_rows=100, batch_size=32)

    finished = _bytes(p for sae in grid.saes[:-1] for p in sae.parameters())
    assert est.finished_saes == finished, (
        f"finished SAEs: estimate {est.finished_saes} bytes, the grid's kept SAEs hold {finished}: "
        "sae_parameters no longer matches the SAE's parameters")
    kept_grads = [p.grad for sae in grid.saes for p in sae.parameters() if p.grad is not None]
    assert not kept_grads, "kept SAEs hold gradients after training; the estimate counts weights only"

    sae = SAE(column_config(base, sizes_J[-1], alphas))
    opt = adam(sae.parameters(), 1e-3)
    sae(torch.randn(32, d, generator=gen)).loss.backward()
    opt.step()
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
    actual = _bytes(sae.parameters()) + _bytes(p.grad for p in sae.parameters() if p.grad is not None) + _bytes(state)
    # without a decoder bias b_dec is frozen: no gradient or Adam state (the estimate counts them anyway)
    assert 0 <= est.training - actual <= 3 * 4 * len(alphas) * d, (
        f"the SAE in training: estimate {est.training} bytes, weights + gradients + Adam state hold {actual}")


def test_plan_grid_counts_the_rows_the_sampler_copies(model, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    acts = lm.harvest(model, 2048, layer=0, progress=False)
    data = [c.cell_contents for c in acts.sampler("post", holdout=0.25).__closure__
            if torch.is_tensor(c.cell_contents)]
    kept, memory, text = lm.plan_grid(acts, model, (0.5, 1.0), n_alphas=2, steps=10, holdout=0.25)
    assert kept == (0.5, 1.0) and "grid plan (cpu)" in text, f"on a CPU nothing is dropped: {kept}, {text}"
    assert memory.activations == _bytes(data), (
        f"activations: estimate {memory.activations} bytes, the sampler copies {_bytes(data)}")
    assert memory.model == 4 * sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


# d_mlp and parameter count of each model the course names (Hugging Face configs; the online
# ones cannot be loaded here), and the notebook's hold-out share.
MODELS = {lm.OFFLINE_MODEL: (512, 788_736), lm.ONLINE_MODEL: (4096, 70_000_000),
          lm.ONLINE_MULTILAYER_MODEL: (2048, 70_426_624)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_full_fits_a_free_colab_t4_for_every_named_model(name):
    d_mlp, params = MODELS[name]
    S = sizes("full")
    rows = int(S.lm.tokens * 0.9 * 127 / 128)
    kept, memory, dropped = fit_sizes(d_mlp, S.lm.expansions, len(S.lm.l1_values), rows, 256, params, T4_BYTES)
    assert memory.total <= HEADROOM * T4_BYTES, f"{name}: {memory.describe()} exceeds the T4 plan"
    assert kept and kept[0] == min(S.lm.expansions) and 1.0 in kept, (
        f"{name}: at full the grid keeps {kept}; a grid without 1x cannot show the report's size comparison")
    everything = grid_memory(d_mlp, [int(e * d_mlp) for e in S.lm.expansions], len(S.lm.l1_values), rows, 256, params)
    if everything.total > HEADROOM * T4_BYTES:
        assert dropped, f"{name}: the whole grid needs {everything.describe()} yet nothing was dropped"


# The stacked SAE grids of notebooks 02, 03, 05 and 06 at full: (what, d_in, sizes in latents, stacked instances).
def _toy_grids(S):
    G, h = S.sae.gt_features, S.sae.gt_dim
    return [("02-03 diagnostic grid", h, [int(r * G) for r in S.sae.dict_ratios], len(S.grid.l1_values)),
            ("02 L1 grid", h, [int(r * G) for r in S.sae.dict_ratios], len(S.sae.l1_values)),
            ("05 k grid", h, [int(r * G) for r in S.beyond.sizes], len(S.beyond.ks)),
            ("05 suspects", h, [int(r * S.beyond.suspect_features) for r in S.beyond.suspect_sizes],
             len(S.beyond.suspect_l1_values)),
            ("06 toy grid", h, [int(r * S.choose.features) for r in S.choose.sizes], len(S.choose.ks) * S.choose.seeds)]


@pytest.mark.parametrize("index", range(5))
def test_full_toy_grids_fit_a_free_colab_t4(index):
    """The toy grids draw their samples on the device and hold no model: weights, gradients, Adam and one
    step of the largest size, plus the finished sizes (their dictionaries stay on the device until the end)."""
    what, d_in, Js, n = _toy_grids(sizes("full"))[index]
    memory = grid_memory(d_in, Js, n, 1, sizes("full").sae.batch)
    assert memory.total <= HEADROOM * T4_BYTES, f"notebook {what} at full: {memory.describe()} exceeds the T4 plan"


def test_a_grid_that_cannot_fit_says_what_to_do():
    with pytest.raises(ValueError, match="fewer tokens"):
        fit_sizes(4096, (1.0,), 6, 10**8, budget=T4_BYTES)
    with pytest.raises(ValueError, match="sizes is empty"):
        grid_memory(16, [], 2, 10)
    assert sae_parameters(16, 32, 2) == 2 * (2 * 16 * 32 + 32 + 16)
