"""Bad inputs and damaged files: each must end in an error that names what was wrong and what to do,
or in a cache that repairs itself, never in a raw library error, a silent wrong answer or a hang."""
import json
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import lm
from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.diagnostics import GridResult, suggest_hyperparameters
from helpers.lm.grid_cache import CACHE_AREA
from helpers.lm.harvest import Activations
from helpers.metrics import mmcs
from helpers.store import CacheWarning, cache_lock, cached, read_npz, write_npz
from helpers.sae import SAE, SAEConfig, load_sae, save_sae


def test_suggestions_on_a_two_size_grid_with_a_diverged_size_never_pick_it():
    """The 0.5x size diverged: MMCS with larger had nothing to compare, said 'one size only' on a
    two-size grid and, with the combined choice, pointed at a diverged cell."""
    nan = np.full(3, np.nan)
    grid = GridResult(
        d_sae_values=np.array([8, 16]), l1_values=np.array([0.1, 0.3, 1.0]),
        recon_loss=np.array([nan, [0.08, 0.15, 0.3]]), l1_loss=np.array([nan, [0.1, 0.2, 0.3]]),
        l0=np.array([nan, [3.0, 3.0, 3.0]]), dead=np.array([nan, [0.0, 0.0, 0.0]]),
        mmcs_ground_truth=np.full((2, 3), np.nan), mmcs_larger=np.full((2, 3), np.nan), reference_size=16,
        diverged=np.array([[True] * 3, [False] * 3]))
    sug = suggest_hyperparameters(grid)
    for s in sug:
        assert s.d_sae == 16, f"{s.method} suggests the 0.5x size, which diverged:\n{sug.describe(16)}"
        assert "diverged" in s.reason, f"{s.method}'s reason must say that diverged cells were left out: {s.reason}"
    assert "one size only" not in sug.mmcs_larger.reason and "one size only" not in sug.agreed.reason, (
        f"the grid has two sizes; the reason must say why nothing could be compared:\n{sug.describe(16)}")
    assert "picked none" in sug.agreed.reason, f"the combined choice must not claim MMCS picked its size: {sug.agreed.reason}"


def _fake_activations(folder: Path, d: int = 8) -> Activations:
    """A harvest's worth of random activations, without a language model."""
    gen = torch.Generator().manual_seed(0)
    post = torch.randn(64 * 16, d, generator=gen).relu().numpy()
    return Activations(np.zeros((64, 16), dtype=np.int32), {"post": post}, folder, False, 0.0)


def test_a_cached_lm_grid_with_a_wrongly_typed_cfg_json_is_trained_again(tmp_path, monkeypatch):
    """A cfg.json that is valid JSON with values of the wrong type raised TypeError on every rerun."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    acts = _fake_activations(tmp_path / "fake-acts")
    base = SAEConfig(d_in=8, d_sae=8, steps=30, dead_window=10, batch_size=32, log_every=10)
    first = lm.sae_grid(acts, base, (0.5, 1), (0.3, 1.0), reference_size=8, progress=False)
    (cfg_file,) = (tmp_path / CACHE_AREA).glob("*/size0/instance_00_*/cfg.json")
    meta = json.loads(cfg_file.read_text())
    meta["course"]["lr"] = "fast"
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cfg.json holds a value of the wrong type .*lr must be a number"):
        load_sae(cfg_file.parent)
    with pytest.warns(UserWarning, match="unreadable"):
        again = lm.sae_grid(acts, base, (0.5, 1), (0.3, 1.0), reference_size=8, progress=False)
    assert not again.from_cache, "a damaged stored grid must be trained again, not reused"
    assert np.array_equal(again.dead, first.dead), "the grid trained again must give the first run's numbers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lm.sae_grid(acts, base, (0.5, 1), (0.3, 1.0), reference_size=8, progress=False).from_cache, (
            "the grid stored again must reopen without a warning")


def test_sae_config_refuses_values_of_the_wrong_type_by_name():
    """A string or bool where a number belongs raised 'must be real number, not str' (or was kept)."""
    flat = [("lr", "fast"), ("lr", True), ("input_noise_std", "none"), ("l1_coeffs", "a"), ("decoder_bias", "no"),
            ("d_sae", True)]
    nested = [("resample.until", "end", dict(resample={"every": 5, "until": "end"})),  # a nested config's field
              ("JumpReLUConfig.bandwidth", None, dict(architecture="jumprelu", variant={"bandwidth": None}))]
    for field, value, kwargs in [(field, value, {field: value}) for field, value in flat] + nested:
        with pytest.raises(TypeError, match=rf"{field} must be .*got {value!r}") as err:
            SAEConfig(**{"d_in": 8, "d_sae": 16, **kwargs})
        assert "pass" in str(err.value), f"the error for {field}={value!r} must say what to pass: {err.value}"
    with pytest.raises(TypeError, match=r"k must be a number, got 'five'"):
        SAEConfig(d_in=8, d_sae=16, architecture="topk", k="five")
    assert SAEConfig(d_in=8, d_sae=16, lr=np.float32(1e-3), k=None).lr == np.float32(1e-3), "numpy numbers are numbers"


def test_ground_truth_data_refuses_wrong_types_and_counts_by_name():
    """sample(-1) raised 'Trying to create tensor with negative dimension -2'; correlated='no' was taken as True."""
    with pytest.raises(TypeError, match="correlated must be True or False, got 'no'"):
        GroundTruthConfig(correlated="no")
    with pytest.raises(ValueError, match="noise_std must be a finite non-negative number, got True"):
        GroundTruthConfig(noise_std=True)
    data = GroundTruthData(GroundTruthConfig(n_features=16, d=8, mean_active=2), device="cpu")
    for sample in (data.sample, data.sample_coefficients, data.sample_with_coefficients):
        with pytest.raises(ValueError, match="n must be a non-negative integer .*got -1"):
            sample(-1)
        with pytest.raises(TypeError, match=r"n must be an int, got 2.5 \(float\): pass a whole number"):
            sample(2.5)
    assert data.sample(0).shape == (0, 8), "zero samples is an empty batch, not an error"


def test_sae_forward_refuses_activations_of_another_dtype():
    """float64 input ran in training (and failed deep in baddbmm without grad); int input trained silently."""
    sae = SAE(SAEConfig(d_in=8, d_sae=16), device="cpu")
    for x in (torch.randn(4, 8, dtype=torch.float64), torch.ones(4, 8, dtype=torch.int64), np.ones((4, 8), np.float32)):
        for grad in (True, False):
            with torch.set_grad_enabled(grad), pytest.raises(TypeError, match=r"x \(the activations\) must be a torch.float32"):
                sae(x)
        with pytest.raises(TypeError, match=r"convert it with"):
            sae.encode(x)
    assert sae(torch.randn(4, 8)).x_hat.shape == (1, 4, 8), "float32 activations still work"


def test_mmcs_refuses_other_dtypes_and_shapes_with_what_to_do():
    """float64 against float32 raised 'expected m1 and m2 to have the same dtype'; ints, numpy or a
    single vector raised library errors about norms, attributes or dimensions."""
    ref = torch.randn(3, 8)
    with pytest.raises(TypeError, match="learned is torch.float64 but reference is torch.float32.*float"):
        mmcs(torch.randn(4, 8, dtype=torch.float64), ref)
    with pytest.raises(TypeError, match="learned must be a floating-point tensor.*torch.int64"):
        mmcs(torch.ones(4, 8, dtype=torch.int64), ref)
    with pytest.raises(TypeError, match="reference must be a floating-point tensor.*ndarray"):
        mmcs(torch.randn(4, 8), ref.numpy())
    with pytest.raises(ValueError, match=r"learned must hold one feature per row.*\(8,\).*x\[None\]"):
        mmcs(torch.randn(8), ref)
    assert float(mmcs(ref, ref)) == pytest.approx(1.0), "a dictionary matches itself"


def test_save_sae_leaves_no_instances_of_an_earlier_save_behind(tmp_path):
    """Saving a 2-instance stack over a 3-instance one kept the third (and the other alphas'
    folders): a reader listing instance_* folders would load a stack that was never saved."""
    folder = tmp_path / "sae"
    save_sae(SAE(SAEConfig(d_in=4, d_sae=8, l1_coeffs=(0.1, 0.2, 0.3)), device="cpu"), folder)
    paths = save_sae(SAE(SAEConfig(d_in=4, d_sae=8, l1_coeffs=(0.5, 0.6)), device="cpu"), folder)
    assert sorted(folder.iterdir()) == sorted(paths), (
        f"only the two new instances may remain, found {sorted(p.name for p in folder.iterdir())}")
    save_sae(SAE(SAEConfig(d_in=4, d_sae=8, l1_coeffs=(0.7,)), device="cpu"), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"], (
        f"a one-instance save must leave no instance folders, found {sorted(p.name for p in folder.iterdir())}")
    assert load_sae(folder).cfg.l1_coeffs == (0.7,)
    save_sae(SAE(SAEConfig(d_in=4, d_sae=8, l1_coeffs=(0.1, 0.2)), device="cpu"), folder)
    with pytest.raises(FileNotFoundError, match="instance folders"):
        load_sae(folder)  # the one-instance files of the save before are gone too


def test_cache_lock_holds_where_fcntl_cannot_be_imported(tmp_path, monkeypatch, capsys):
    """Without fcntl (as on Windows) the lock did nothing: two processes trained the same entry."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` now raises ImportError
    entry, order = tmp_path / "entry", []

    def second():
        with cache_lock(entry):
            order.append("second")

    with cache_lock(entry):
        other = threading.Thread(target=second)
        other.start()
        other.join(timeout=1.0)
        order.append("first done")
    other.join(timeout=60)
    assert order == ["first done", "second"], f"the second holder entered while the first held the lock: {order}"
    assert "Waiting for another process that is computing entry" in capsys.readouterr().err, (
        "a caller that has to wait must be told why")


def _store_parts(n: int):
    """A counted ``compute`` of np.arange(n) and a ``save`` to one checked npz, for the store's tests."""
    calls = []

    def compute():
        calls.append(1)
        return np.arange(float(n))

    def save(x, folder):
        return {"files": {"x.npz": write_npz(folder / "x.npz", {"x": x}, compressed=False)}}

    return calls, compute, save


@pytest.mark.parametrize("damage", ["cut short", "broken entry.json"])
def test_the_cache_store_recomputes_a_damaged_entry_once_and_then_loads_it(tmp_path, monkeypatch, damage):
    """The one store every cache goes through: a damaged entry is reported, computed again and
    saved again; the next call loads it without computing; another config is another entry."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls, compute, save = _store_parts(6)

    def load(folder, entry):
        return read_npz(folder, "x.npz", entry["files"]["x.npz"])["x"]

    def ask(code="v1"):
        return cached("test-area", "store", {"n": 6, "code": code}, compute, save, load)

    first = ask()
    (folder,) = (tmp_path / "test-area").iterdir()
    assert folder.name.startswith("store-") and sorted(p.name for p in folder.iterdir()) == ["entry.json", "x.npz"]
    if damage == "cut short":
        (folder / "x.npz").write_bytes((folder / "x.npz").read_bytes()[:40])
    else:
        (folder / "entry.json").write_text('{"config": {"n": 6')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ask()
    said = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and folder.name in said[0] and "damaged" in said[0], said
    assert len(calls) == 2 and np.array_equal(first, again), "the damaged entry must be computed again, once"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        loaded = ask()
    assert len(calls) == 2 and np.array_equal(loaded, first), "the repaired entry must load without computing"
    ask(code="v2")
    assert len(calls) == 3, "another code hash is another entry, never the old one"


def test_a_load_that_fails_on_intact_files_propagates_and_keeps_the_entry(tmp_path, monkeypatch):
    """Files that match their checksums but fail to load point at a bug (or, on a GPU, at memory):
    the store must raise it, not delete a good entry and recompute it on every call."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls, compute, save = _store_parts(4)

    def buggy_load(folder, entry):
        return read_npz(folder, "x.npz", entry["files"]["x.npz"])["no such array"]

    cached("test-area", "bug", {"n": 4}, compute, save, buggy_load)
    for _ in range(2):
        with pytest.raises(KeyError, match="no such array"):
            cached("test-area", "bug", {"n": 4}, compute, save, buggy_load)
    assert len(calls) == 1, "a load bug must not make the store compute again"
    assert any((tmp_path / "test-area").glob("bug-*/entry.json")), "the intact entry must stay"


def test_an_lm_grid_of_a_model_loaded_from_a_local_folder_is_cached(tmp_path, monkeypatch):
    """load_model("./gpt2") names its harvest "._gpt2"-like; the grid's cache name must still be valid."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    acts = _fake_activations(tmp_path / "._home_me_gpt2")
    base = SAEConfig(d_in=8, d_sae=8, steps=20, dead_window=10, batch_size=32, log_every=10)
    lm.sae_grid(acts, base, (1,), (0.3,), reference_size=8, progress=False)
    assert lm.sae_grid(acts, base, (1,), (0.3,), reference_size=8, progress=False).from_cache
