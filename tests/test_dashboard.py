"""Feature dashboards, the prompt read-out, interventions, the cached SAE grid and the plotly
figures of notebook 04 (and the figures offered to notebooks 01 and 03)."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import lm
from helpers.figures import interactive as pf
from helpers.lm.dashboard import dashboards, latent_units, neuron_units
from helpers.figures.lm import DashboardView
from helpers.lm.intervene import ablate_hook, next_token_change, prompt_latents, steer_hook
from helpers.sae import SAE, SAEConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


@pytest.fixture(scope="module")
def data(model):
    """(post, tokens): hidden activations of 24 corpus windows of 32 tokens."""
    tokens = lm.corpus_token_windows(model, 24 * 32, seq_len=32)
    got = {}
    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(lm.mlp_hooks(0)["post"],
                                                                   lambda x, hook: got.setdefault("x", x))])
    return got["x"].reshape(-1, model.cfg.d_mlp).float().numpy(), tokens.numpy().astype(np.int32)


@pytest.fixture(scope="module")
def sae(model, data):
    """A random SAE whose latents fire on a few percent of tokens: each latent's threshold sits at
    the 97th percentile of its pre-activation on the test windows (so it follows the model's scale)."""
    s = SAE(SAEConfig(d_in=model.cfg.d_mlp, d_sae=64, decoder_bias=True, seed=3), device="cpu")
    g = torch.Generator().manual_seed(0)
    post, _ = data
    with torch.no_grad():
        s.W_enc.copy_(torch.randn(s.W_enc.shape, generator=g) / model.cfg.d_mlp ** 0.5)
        s.b_enc.zero_()
        pre = torch.as_tensor(post) @ s.W_enc[0]                                  # (rows, d_sae), no bias
        s.b_enc.copy_(-torch.quantile(pre, 0.97, dim=0)[None])
    return s


# --------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------
def test_dashboard_does_not_depend_on_the_chunk_size(sae, data):
    post, tokens = data
    rate = (sae.encode(torch.from_numpy(post))[0] > 0).float().mean(0)
    units = latent_units(sae, rate.argsort(descending=True)[[0, 5, 20]].tolist())     # dense, middling, rare
    a, b = dashboards(units, post, tokens, chunk_rows=37), dashboards(units, post, tokens, chunk_rows=10_000)
    for x, y in zip(a, b):
        assert x.density == pytest.approx(y.density) and x.max == pytest.approx(y.max)
        assert np.array_equal(x.hist_counts, y.hist_counts), "the histogram changed with the chunk size"
        assert [e.value for e in x.top] == pytest.approx([e.value for e in y.top]), "top examples changed with chunks"
        assert [[e.value for e in ex] for _, ex in x.bands] == [[e.value for e in ex] for _, ex in y.bands], \
            "the sampled quantile examples must not depend on the chunk size"
        assert x.token_r2 == pytest.approx(y.token_r2) and x.token_share == pytest.approx(y.token_share)


def test_dashboard_numbers_match_a_dense_computation(sae, data):
    post, tokens = data
    f = int((sae.encode(torch.from_numpy(post))[0] > 0).float().mean(0).argmax())
    d = dashboards(latent_units(sae, [f]), post, tokens, k=4, chunk_rows=50)[0]
    a = sae.encode(torch.from_numpy(post))[0, :, f].detach().numpy()
    a = a[np.arange(len(a)) % tokens.shape[1] != 0]                     # BOS rows are left out
    assert d.density == pytest.approx((a > 0).mean()), "density is the share of non-BOS tokens where it fires"
    assert d.max == pytest.approx(a.max(), rel=1e-5)
    assert d.hist_counts.sum() == (a > 0).sum(), "the histogram counts every positive activation once"
    assert [e.value for e in d.top] == pytest.approx(sorted(a, reverse=True)[:4], rel=1e-5)
    for e in d.top:
        assert e.window[e.at] == pytest.approx(e.value, rel=1e-5), "the window's peak token carries the value"
    pos = a[a > 0]
    width = pos.max() / 200                                               # one fine bin
    for (lo, hi), examples in d.bands:  # bands follow the empirical CDF: quantiles are actual values
        for e in examples:
            assert np.quantile(pos, lo, method="lower") - 2 * width <= e.value <= \
                np.quantile(pos, hi, method="higher") + 2 * width, \
                f"an example of band {lo}-{hi} has activation {e.value}, outside that quantile band"


def test_token_identity_of_a_pure_token_detector(data):
    post, tokens = data
    fake = np.zeros((post.shape[0], 4), np.float32)
    target = int(np.bincount(tokens[:, 1:].reshape(-1)).argmax())
    fake[:, 2] = 3.0 * (tokens.reshape(-1) == target)                     # fires on exactly one token, always 3
    d = dashboards(neuron_units([2], 4), fake, tokens)[0]
    assert d.token_share == pytest.approx(1.0), "all its activation sits on one token"
    assert d.token_r2 == pytest.approx(1.0), "token identity explains all of its variance"
    assert d.top_tokens[0][1] == pytest.approx(1.0)


def test_neuron_and_latent_dashboards_render(model, sae, data):
    post, tokens = data
    ds = dashboards(latent_units(sae, [5]), post, tokens, model=model)
    dn = dashboards(neuron_units([7], model.cfg.d_mlp), post, tokens, model=model)
    view = DashboardView([ds[0], dn[0]], model.tokenizer, columns=2, titles=["latent", "neuron"])
    page, text = view._repr_html_(), repr(view)
    assert "latent 5" in page and "neuron 7" in page and "<svg" in page
    assert "promotes:" in text and "[[" in text, "the text fallback marks the fired-on token and lists logits"
    assert len(dn[0].logits.promotes) == 6


# --------------------------------------------------------------------------------------
# The prompt read-out and interventions
# --------------------------------------------------------------------------------------
def test_prompt_latents_lists_the_strongest_latents_per_token(model, sae):
    units = latent_units(sae, range(sae.cfg.d_sae))
    rows = prompt_latents(model, units, "def f(x):\n    return x", k=3)
    x = lm.intervene.hidden_activations(model, lm.intervene.prompt_tokens(model, "def f(x):\n    return x"))
    a = sae.encode(x)[0, 1:].detach()
    assert len(rows) == a.shape[0], "one row per token, BOS left out"
    for r, acts in zip(rows, a):
        want = [v for v in acts.sort(descending=True).values[:3].tolist() if v > 0]
        assert r.values == pytest.approx(want, rel=1e-5), "values are the k largest positive activations, in order"


def _never_fires(model, sae, prompts):
    per = [sae.encode(lm.intervene.hidden_activations(model, lm.intervene.prompt_tokens(model, p)))[0, 1:]
           for p in prompts]                                               # (tokens, d_sae) per prompt
    a = torch.cat(per)
    silent = np.flatnonzero((a.max(0).values <= 0).numpy())
    assert silent.size, "the test needs a latent that is silent on the prompts"
    # In a one-layer model the MLP at a position only reaches that position's logits, and the
    # next-token read-out looks at the last one: take the latent strongest on a last token.
    last = torch.stack([x[-1] for x in per]).max(0).values
    assert last.max() > 0, "the test needs a latent that fires on the last token of a prompt"
    return int(silent[0]), int(last.argmax())


def test_ablating_a_silent_latent_changes_nothing_and_a_firing_one_does(model, sae):
    prompts = ["The function returns a list of", ">>> print(x)\n"]
    silent, fires = _never_fires(model, sae, prompts)
    units = latent_units(sae, range(sae.cfg.d_sae))
    for c in next_token_change(model, prompts, ablate_hook(units, silent)):
        assert torch.equal(c.logits_before, c.logits_after), "ablating a latent that never fires changed the logits"
        assert c.loss_before == c.loss_after
    changed = next_token_change(model, prompts, ablate_hook(units, fires))
    assert any(not torch.allclose(c.logits_before, c.logits_after) for c in changed), \
        "ablating a latent that fires on the last token must change that token's next-token logits"


def test_steering_with_zero_changes_nothing(model, sae):
    units = latent_units(sae, [3])
    for c in next_token_change(model, ["The function returns"], steer_hook(units, 3, 0.0)):
        assert torch.equal(c.logits_before, c.logits_after)


def test_steering_moves_logits_along_the_direct_logit_effect(model, sae):
    units = latent_units(sae, [3])
    direct = (lm.residual_effects(model, units.write) @ model.W_U)[0].detach()          # (vocab,)
    for c in next_token_change(model, ["The function returns a list of", "import os\n"], steer_hook(units, 3, 2.0)):
        delta = c.logits_after - c.logits_before
        cos = torch.nn.functional.cosine_similarity(delta - delta.mean(), direct - direct.mean(), dim=0)
        assert cos > 0.8, f"steering changed the logits in a direction with cosine {cos:.2f} to the direct effect"


def test_units_refuse_bad_indices(sae):
    with pytest.raises(ValueError, match="latents"):
        latent_units(sae, [sae.cfg.d_sae])
    with pytest.raises(ValueError, match="unit 5 is not"):
        steer_hook(latent_units(sae, [3]), 5, 1.0)


# --------------------------------------------------------------------------------------
# The cached grid and the latent table
# --------------------------------------------------------------------------------------
def test_sae_grid_is_stored_and_reopened(model, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    acts = lm.harvest(model, 2048, seq_len=32, progress=False)
    cfg = SAEConfig(d_in=model.cfg.d_mlp, d_sae=8, steps=30, decoder_bias=True, dead_window=10, batch_size=32)
    first = lm.sae_grid(acts, cfg, (0.5, 1), (0.3, 1.0), reference_size=64, holdout=0.1, progress=False)
    again = lm.sae_grid(acts, cfg, (0.5, 1), (0.3, 1.0), reference_size=64, holdout=0.1, progress=False)
    assert not first.from_cache and again.from_cache, "the second call must reopen the stored grid"
    x = torch.from_numpy(np.array(acts.acts["post"][:64]))
    for a, b in zip(first.saes, again.saes):
        assert a.cfg.n_instances == b.cfg.n_instances == 2
        assert torch.equal(a.encode(x), b.encode(x)), "a reloaded SAE must encode exactly as the trained one"
    assert np.array_equal(first.dead, again.dead)
    other = lm.sae_grid(acts, cfg, (0.5, 1), (0.3, 3.0), reference_size=64, holdout=0.1, progress=False)
    assert not other.from_cache, "other L1 values are another grid"


def test_latent_table_matches_the_whole_activation_array(model, sae, data):
    """Every column of the streamed table, against the same numbers read off the whole (rows, d_sae) array."""
    post, tokens = data
    sae = copy.deepcopy(sae)
    with torch.no_grad():
        sae.b_enc[:, [3, 40]] = -1e6                                                 # two latents that never fire
    t = lm.latent_table(model, sae, lm.latent_activations(sae.select(0), post, lazy=True), tokens, k=5)
    dense = lm.latent_activations(sae.select(0), post)                              # (rows, d_sae)
    alive = np.flatnonzero((dense > 0).any(0))
    assert len(alive) == dense.shape[1] - 2, f"only latents 3 and 40 should be dead, {dense.shape[1] - len(alive)} are"
    assert np.array_equal(t.latents, alive), f"the table lists latents {t.latents.tolist()}, the ones that fire are {alive.tolist()}"
    np.testing.assert_allclose(t.density, (dense[:, alive] > 0).mean(0), err_msg="density is not the share of rows where the latent fires")
    np.testing.assert_allclose(t.max, dense[:, alive].max(0), err_msg="max is not the latent's largest activation")
    flat = tokens.reshape(-1)
    for i, f in enumerate(alive):
        top = np.argsort(-dense[:, f], kind="stable")[:5]                            # its 5 strongest rows
        counts = np.bincount(flat[top[dense[top, f] > 0]])
        assert t.top_token_share[i] == pytest.approx(counts.max() / counts.sum()), (
            f"latent {f}: top-token share {t.top_token_share[i]:.3f}, but its commonest token holds "
            f"{counts.max()} of its {counts.sum()} strongest firing rows")
        commonest = {model.tokenizer.decode([int(x)]) for x in np.flatnonzero(counts == counts.max())}
        assert t.top_token[i] in commonest, f"latent {f}: top token {t.top_token[i]!r}, its commonest are {commonest}"
    D = sae.decoder_directions()[0].detach()
    for i in (0, len(alive) // 2, len(alive) - 1):                                   # its own decoder row, instance 0
        own = lm.logit_effects(model, lm.residual_effects(model, D[[alive[i]]]), k=1, tokens=tokens, min_count=5)
        assert t.promotes[i] == own[0].promotes[0].token, (
            f"latent {alive[i]} is listed as promoting {t.promotes[i]!r}; its decoder row promotes {own[0].promotes[0].token!r}")
    chunked = lm.latent_table(model, sae, dense, tokens, k=5, chunk_rows=100)        # a running top 5 over 8 chunks
    for name in ("latents", "density", "max", "top_token_share", "top_token", "promotes"):
        assert np.array_equal(np.asarray(getattr(chunked, name)), np.asarray(getattr(t, name))), (
            f"{name} changes when the rows stream in chunks of 100")


# --------------------------------------------------------------------------------------
# Plotly figures
# --------------------------------------------------------------------------------------
def _tiny_grid():
    from helpers.diagnostics import run_grid

    return run_grid(lambda n: torch.randn(n, 8).relu(), SAEConfig(d_in=8, d_sae=8, steps=30, dead_window=10,
                    batch_size=32), (0.5, 1, 2), (0.1, 1.0), reference_size=8, progress=False)


def test_grid_heatmaps_hover_every_number_of_a_cell():
    grid = _tiny_grid()
    fig = pf.grid_heatmaps(grid, metrics=("l0", "dead", "mmcs_larger"))
    data = fig.to_dict()["data"]
    assert [d["type"] for d in data] == ["heatmap"] * 3
    custom = np.asarray(fig.data[1].customdata, dtype=float)
    assert custom.shape[:2] == grid.shape
    assert custom[1, 0, 1] == grid.dead[1, 0], "the hover's second number is the cell's dead count"
    assert "MMCS" in data[0]["hovertemplate"] and "L0" in data[0]["hovertemplate"]
    with pytest.raises(ValueError, match="unknown"):
        pf.grid_heatmaps(grid, metrics=("loss",))


@pytest.mark.parametrize("name,n", [("octahedron", 6), ("trigonal bipyramid", 5), ("tetrahedron", 4)])
def test_tegum_polytope_draws_every_feature_and_its_hull(name, n):
    W = pf.ideal_polytope(name)
    assert W.shape == (n, 3) and np.allclose(np.linalg.norm(W, axis=1), 1)
    fig = pf.tegum_polytope(W)
    kinds = [d["type"] for d in fig.to_dict()["data"]]
    assert kinds == ["mesh3d", "scatter3d", "scatter3d"]
    points = fig.data[2]
    assert len(points.x) == n
    same = pf.tegum_polytope(torch.tensor(W.T))                    # (3, n), as a toy model stores W
    assert np.allclose(same.data[2].x, points.x)


def test_decoder_geometry_and_browser_figures_are_small():
    m = 40
    iu = np.triu_indices(m, 1)
    rng = np.random.default_rng(0)
    geo = lm.PairGeometry(np.arange(m), rng.random(len(iu[0])) * 3, rng.uniform(-1, 1, len(iu[0])),
                          rng.uniform(-1, 1, len(iu[0])))
    fig = pf.decoder_geometry(geo, max_points=300)
    assert len(fig.data[0].x) == 300
    b = pf.bundle(fig)
    assert set(b) == {pf.PLOTLY_MIME, "text/html", "text/plain"}
    assert len(b["text/html"]) < 200_000, "the HTML must load plotly.js from its CDN, not embed it"


def test_no_checked_notebook_cell_holds_an_interactive_figure():
    """nbval compares every output of a NBVAL_CHECK_OUTPUT cell: a plotly figure there would fail
    on any change of plotly's JSON, and is not a result to compare."""
    for path in sorted((REPO / "notebooks").rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            mimes = {k for o in cell.get("outputs", []) for k in o.get("data", {})}
            if "NBVAL_CHECK_OUTPUT" in src:
                assert pf.PLOTLY_MIME not in mimes and "pf.show(" not in src, \
                    f"{path.name}: a checked cell shows a plotly figure; move it to a cell of its own"
            for o in cell.get("outputs", []):
                page = "".join(o.get("data", {}).get("text/html", ""))
                assert len(page) < 1_000_000, f"{path.name}: an HTML output of {len(page):,} characters " \
                                              "(plotly.js embedded?): display figures with interactive.show"


def test_no_example_is_shown_in_two_quantile_bands(data):
    """A fine bin that straddles a band edge serves both bands, with different rows."""
    post, tokens = data
    fake = np.zeros((post.shape[0], 4), np.float32)
    rng = np.random.default_rng(0)
    fake[:, 1] = np.where(rng.random(post.shape[0]) < 0.6, 1.0, 2.0)    # 60% of the mass at one value: one fine bin
    d = dashboards(neuron_units([1], 4), fake, tokens, per_band=3)[0]
    shown = [(tuple(e.ids.tolist()), e.at, e.value) for _, examples in d.bands for e in examples]
    assert len(shown) == len(set(shown)), "an example appears in two quantile bands"
    assert all(len(examples) == 3 for _, examples in d.bands[:2]), "the shared bin still fills both bands"
