"""Language-model plumbing: loading (offline model, devices, clear errors), the activation cache
(keys, concurrency, damage, interruption), CE loss recovered with an SAE spliced in, held-out
evaluation, streamed latent statistics, and the linear read of a latent's output."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import lm
from helpers.sae import SAE, SAEConfig

from concurrency import run_twice_at_once  # tests/concurrency.py

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    return tmp_path


def _identity_sae(d, n_instances=1):
    """ReLU(x) - ReLU(-x) = x: a 2d-latent SAE that reconstructs any input exactly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, l1_coeffs=(0.0,) * n_instances), device="cpu")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1)[None])
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0)[None])
    return sae


def _random_sae(d, d_sae=96, seed=0):
    """A small SAE with random weights and a bias that leaves latents moderately sparse."""
    sae = SAE(SAEConfig(d_in=d, d_sae=d_sae, l1_coeffs=(0.1, 1.0), decoder_bias=True), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) / d ** 0.5)
        sae.b_enc.fill_(-0.3)
    return sae


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def test_missing_offline_checkpoint_says_how_to_rebuild(tmp_path, monkeypatch):
    from helpers import paths

    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.setattr(paths, "_repo_root", lambda: tmp_path)  # a clone whose data/ lacks the model
    (tmp_path / "data" / "tiny_lm").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="python scripts/build_tiny_lm.py"):
        lm.load_model(lm.OFFLINE_MODEL)


@pytest.mark.parametrize("exists", [False, True])
def test_a_wrong_course_data_says_to_unset_it_not_to_rebuild(tmp_path, monkeypatch, exists):
    wrong = tmp_path / "not-the-data"
    if exists:
        wrong.mkdir()
    monkeypatch.setenv("COURSE_DATA", str(wrong))
    with pytest.raises(FileNotFoundError) as err:
        lm.load_model(lm.OFFLINE_MODEL)
    msg = str(err.value)
    assert f"COURSE_DATA points at {wrong}" in msg and "unset COURSE_DATA" in msg, msg
    assert ("does not hold the offline model's files" if exists else "does not exist") in msg, msg
    assert "scripts/build_tiny_lm.py" not in msg, f"a wrong COURSE_DATA is not a reason to rebuild: {msg}"


def test_unknown_model_name_is_a_clear_error_naming_the_offline_model():
    with pytest.raises(ValueError, match="Could not load model") as err:
        lm.load_model("no-such-org/no-such-model-for-this-course", offline=True)
    assert lm.OFFLINE_MODEL in str(err.value) and "offline=True" in str(err.value), str(err.value)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rn` (a network namespace without a network)")
def test_hub_model_without_a_network_fails_fast_and_names_the_way_out(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    # The libraries load_model imports on first use are imported before the clock starts (they
    # take up to 13 s on a loaded 2-core machine): what is timed is the attempt to reach the hub.
    code = ("import time\nfrom helpers import lm\nimport transformers, transformer_lens.model_bridge\n"
            "t0 = time.perf_counter()\ntry:\n"
            "    lm.load_model('EleutherAI/pythia-70m')\nfinally:\n"
            "    print(f'load_model took {time.perf_counter() - t0:.2f} s', flush=True)\n")
    run = subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert run.returncode != 0, "loading a hub model with no network must fail"
    last = run.stderr.strip().splitlines()[-1]
    assert "ValueError" in last and lm.OFFLINE_MODEL in last and "offline" in last, f"unhelpful error: {last}"
    assert "no network" in last, f"the error should say the network is missing: {last}"
    seconds = float(run.stdout.split("load_model took ")[1].split()[0])
    # huggingface_hub alone retries an unresolvable host for about 25 s before it gives up
    assert seconds < 15, f"with no network load_model should give up without the hub's retries, took {seconds:.1f} s"


def test_offline_model_is_a_one_layer_gpt2_with_mlp_hooks(model):
    assert model.cfg.n_layers == 1 and model.cfg.d_mlp == 4 * model.cfg.d_model, (
        f"expected the shipped 1-layer GPT-2 with a 4x MLP, got {model.cfg.n_layers} layers, d_mlp {model.cfg.d_mlp}")
    names = set(model.hook_dict)
    for hook in lm.mlp_hooks(0).values():
        assert hook in names, f"TransformerBridge has no hook {hook}; MLP hooks found: {[n for n in names if 'mlp' in n]}"
    toks = lm.corpus_token_windows(model, 512, seq_len=64)
    with torch.no_grad():
        loss = float(model(toks[:4], return_type="loss"))
    assert loss < 6.0, f"the trained model should predict its corpus far better than chance (ln 4096 = 8.3), got {loss:.2f}"


def test_load_model_puts_every_weight_on_the_requested_device():
    """boot_transformers leaves a pre-loaded model where it is; load_model must move all of it."""
    meta = lm.load_model(lm.OFFLINE_MODEL, device="meta")
    for where, module in (("bridge", meta), ("original_model", meta.original_model)):
        off = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != "meta"]
        assert not off, f"{where}: {len(off)} tensors not moved to the requested device, e.g. {off[:3]}"
    assert meta.cfg.device == "meta" and lm.model_device(meta).type == "meta", meta.cfg.device


def test_load_model_refuses_an_unknown_device_before_loading():
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device: use 'cpu', 'cuda'.*leave it None"):
        lm.load_model(lm.OFFLINE_MODEL, device="gpu")


# --------------------------------------------------------------------------------------
# The activation cache
# --------------------------------------------------------------------------------------
def test_harvest_shapes_cache_reuse_and_invalidation(model, cache):
    first = lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    assert not first.from_cache
    assert first.tokens.shape == (16, 64) and (first.tokens[:, 0] == model.tokenizer.bos_token_id).all()
    assert first.acts["post"].shape == (1024, model.cfg.d_mlp) and first.acts["out"].shape == (1024, model.cfg.d_model)
    got = {}  # the cached rows are the model's own activations for those tokens
    model.run_with_hooks(torch.as_tensor(first.tokens[:1], dtype=torch.long), return_type=None,
                         fwd_hooks=[(lm.mlp_hooks(0)["post"], lambda x, hook: got.setdefault("p", x.detach()))])
    assert np.allclose(first.acts["post"][:64], got["p"][0].numpy(), atol=1e-5), "cached activations differ from a fresh forward"
    again = lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    assert again.from_cache and again.folder == first.folder, "the same request should reuse the cache"
    assert isinstance(again.acts["post"], np.memmap), "cached activations should be memory-mapped, not read into RAM"
    other = lm.harvest(model, 2048, seq_len=64, batch_size=4, progress=False)
    assert not other.from_cache and other.folder != first.folder, "a different token budget is a different cache entry"
    post_only = lm.harvest(model, 1024, kinds=("post",), seq_len=64, batch_size=4, progress=False)
    assert not post_only.from_cache and post_only.folder != first.folder, "different hooks are a different cache entry"
    assert not list(cache.rglob("*.partial*")), "a finished harvest must not leave a partial folder"


def test_a_harvests_fixed_stream_draws_the_same_rows_and_puts_the_training_stream_back(model, cache):
    from helpers.beyond.choosing import HarvestData
    acts = lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    data, other = HarvestData(acts), HarvestData(acts)
    other.sample(100)                                        # drawn before: must not matter inside the block
    with data.fixed_stream("x"):
        a = data.sample(8)
    with other.fixed_stream("x"):
        b = other.sample(8)
    assert torch.equal(a, b), "a fixed stream must give the same rows whatever was drawn before"
    with data.fixed_stream("y"):
        assert not torch.equal(data.sample(8), a), "another stream name must give other rows"
    assert torch.equal(data.sample(8), HarvestData(acts).sample(8)), (
        "after the block the training stream must continue where it was (here: at its start)")


def test_a_harvest_that_would_fill_the_disk_refuses_before_writing(model, cache, monkeypatch):
    harvest_module = sys.modules["helpers.lm.harvest"]  # helpers.lm.harvest is also the function's name
    full = types.SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(harvest_module.shutil, "disk_usage", lambda path: full)
    with pytest.raises(OSError) as err:
        lm.harvest(model, 1024, seq_len=64, batch_size=4, progress=False)
    msg = str(err.value)
    assert "GB" in msg and str(cache / "activations") in msg, msg
    assert "COURSE_CACHE" in msg and "TUTORIAL_SCALE" in msg and "free" in msg, msg
    assert not list((cache / "activations").iterdir()), "a refused harvest must leave nothing behind"


def test_cache_key_follows_the_weights_not_the_name(model, cache):
    before = lm.cache_folder(model, 0, ("post",), 1024, 64)
    w = model.original_model.transformer.h[0].mlp.c_fc.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w[0, 0] += 1e-3  # same name, slightly different model
        changed = lm.cache_folder(model, 0, ("post",), 1024, 64)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert changed != before, "a model with other weights under the same name must not reuse the cache"
    assert lm.cache_folder(model, 0, ("post",), 1024, 64) == before, "the key must be stable for the same weights"


def _harvest_in_process(cache_path, barrier, results):
    os.environ["COURSE_CACHE"] = cache_path
    torch.set_num_threads(1)
    from helpers import lm as lm_

    m = lm_.load_model(lm_.OFFLINE_MODEL, device="cpu")
    barrier.wait(timeout=300)  # start both harvests at the same moment
    try:
        a = lm_.harvest(m, 64 * 48, kinds=("post",), seq_len=64, batch_size=1, progress=False)
        results.put(("ok", str(a.folder), float(np.asarray(a.acts["post"]).sum(dtype=np.float64))))
    except Exception as err:  # reported to the test, which names it
        results.put(("error", f"{type(err).__name__}: {err}", 0.0))


def test_two_simultaneous_harvests_of_one_request_both_succeed(model, cache):
    got = run_twice_at_once(_harvest_in_process, str(cache))
    assert all(g[0] == "ok" for g in got), f"a concurrent harvest failed: {got}"
    assert got[0][1] == got[1][1] and got[0][2] == got[1][2], f"both must end with the same cache: {got}"
    assert not list(cache.rglob("*.partial*")), "no partial folder may be left behind"
    ref = lm.harvest(model, 64 * 48, kinds=("post",), seq_len=64, batch_size=1, progress=False)
    assert ref.from_cache and float(np.asarray(ref.acts["post"]).sum(dtype=np.float64)) == got[0][2]


def _slow_harvest(cache_path, n_seq, messages):
    os.environ["COURSE_CACHE"] = cache_path
    torch.set_num_threads(1)
    from helpers import lm as lm_

    m = lm_.load_model(lm_.OFFLINE_MODEL, device="cpu")
    messages.put(("loaded", os.getpid()))
    a = lm_.harvest(m, 64 * n_seq, kinds=("post",), seq_len=64, batch_size=1, progress=False)
    messages.put(("done", str(a.folder)))


def test_a_harvest_killed_midway_hands_over_to_the_run_waiting_for_it(model, cache):
    """Two runs of one request: the second waits on the first's lock; killing the first
    midway releases it, and the second harvests the whole request into a clean folder."""
    ctx = multiprocessing.get_context("spawn")
    qa, qb = ctx.Queue(), ctx.Queue()
    first = ctx.Process(target=_slow_harvest, args=(str(cache), 3000, qa))
    first.start()
    qa.get(timeout=300)
    second = ctx.Process(target=_slow_harvest, args=(str(cache), 3000, qb))
    second.start()
    try:
        qb.get(timeout=300)  # the second run is loaded and asks for the same request
        deadline = time.time() + 300
        while time.time() < deadline:  # until the first run is writing rows
            writing = [p for p in (cache / "activations").glob("*.partial*") if (p / "post.npy").exists()]
            if writing or not first.is_alive():
                break
            time.sleep(0.05)
        assert len(writing) == 1, f"expected one partial folder (the second run waits on the lock), saw {writing}"
        first.kill()
        first.join()
        done = qb.get(timeout=600)
    finally:
        for p in (first, second):
            p.kill()
            p.join()
    assert done[0] == "done", done
    acts = lm.harvest(model, 64 * 3000, kinds=("post",), seq_len=64, batch_size=64, progress=False)
    assert acts.from_cache and str(acts.folder) == done[1], "the second run's cache should be the one reused"
    assert not list(cache.rglob("*.partial*")), "the killed run's partial folder should be cleaned up"
    got = {}
    model.run_with_hooks(torch.as_tensor(acts.tokens[:2], dtype=torch.long), return_type=None,
                         fwd_hooks=[(lm.mlp_hooks(0)["post"], lambda x, hook: got.setdefault("p", x.detach()))])
    assert np.allclose(acts.acts["post"][:128], got["p"].reshape(128, -1).numpy(), atol=1e-5), (
        "the rows written after the first run was killed do not match the model")


def _truncate(folder):
    path = folder / "post.npy"
    os.truncate(path, path.stat().st_size // 2)


def _wrong_dtype(folder):
    np.save(folder / "post.npy", np.load(folder / "post.npy").astype(np.float64))


def _half_rows(folder):
    arr = np.load(folder / "post.npy")
    np.save(folder / "post.npy", arr[: len(arr) // 2])


def _broken_meta(folder):
    (folder / "meta.json").write_text('{"version": 2, "n_seq": ')


def _meta_of_the_wrong_shape(folder):  # valid JSON, but a file entry without its size
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["post.npy"] = {"shape": meta["files"]["post.npy"]["shape"]}
    (folder / "meta.json").write_text(json.dumps(meta))


def _changed_tokens(folder):
    t = np.load(folder / "tokens.npy")
    t[3, 5] += 1
    np.save(folder / "tokens.npy", t)


@pytest.mark.parametrize("damage", [_truncate, _wrong_dtype, _half_rows, _broken_meta, _meta_of_the_wrong_shape,
                                    _changed_tokens],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_cache_is_reported_and_rebuilt(model, cache, damage):
    first = lm.harvest(model, 512, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    expected = np.array(first.acts["post"])
    folder = first.folder
    del first
    damage(folder)
    assert lm.cache_problem(folder) is not None, "the damage should be detected"
    with pytest.warns(UserWarning, match=folder.name):
        again = lm.harvest(model, 512, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    assert not again.from_cache, "a damaged cache must be harvested again, not reused"
    assert np.array_equal(np.asarray(again.acts["post"]), expected), "the rebuilt cache should hold the right rows"
    assert lm.cache_problem(again.folder) is None and json.loads((again.folder / "meta.json").read_text())


KILL_SCRIPT = """
import os, torch
torch.set_num_threads(1)
from helpers import lm
m = lm.load_model(lm.OFFLINE_MODEL, device="cpu")
lm.harvest(m, 64 * 600, kinds=("post",), seq_len=64, batch_size=1, progress=False)
"""


def test_harvest_killed_midway_then_rerun_gives_a_complete_cache(model, cache):
    env = {**os.environ, "COURSE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT], env=env, cwd=REPO)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any((p / "post.npy").exists() for p in (cache / "activations").glob("*.partial*")):
                time.sleep(0.5)  # some rows written, most not
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the harvest ended before it could be interrupted: raise its budget"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert list((cache / "activations").glob("*.partial*")), "the killed harvest should have left its partial folder"
    acts = lm.harvest(model, 64 * 600, kinds=("post",), seq_len=64, batch_size=64, progress=False)
    assert not acts.from_cache, "an interrupted harvest must not be mistaken for a finished one"
    assert not list(cache.rglob("*.partial*")), "the dead run's partial folder should be cleaned up"
    got = {}
    last = torch.as_tensor(acts.tokens[-1:], dtype=torch.long)
    model.run_with_hooks(last, return_type=None,
                         fwd_hooks=[(lm.mlp_hooks(0)["post"], lambda x, hook: got.setdefault("p", x.detach()))])
    assert np.allclose(acts.acts["post"][-64:], got["p"][0].numpy(), atol=1e-5), "the rerun's last rows are wrong"


# --------------------------------------------------------------------------------------
# Argument checks: before any work, naming the argument
# --------------------------------------------------------------------------------------
def test_arguments_are_checked_before_any_work(model, cache):
    toks = np.asarray(lm.corpus_token_windows(model, 128, seq_len=64))
    sae = _identity_sae(model.cfg.d_mlp)
    small = SAE(SAEConfig(d_in=8, d_sae=16), device="cpu")
    bad = [
        (lambda: lm.harvest(model, 0), "n_tokens"),
        (lambda: lm.harvest(model, 1024, batch_size=0), "batch_size"),
        (lambda: lm.harvest(model, 1024, kinds=("resid",)), "kinds"),
        (lambda: lm.harvest(model, 1024, kinds=()), "kinds"),
        (lambda: lm.harvest(model, 1024, layer=3), "layer"),
        (lambda: lm.harvest(model, 1024.0), "n_tokens"),
        (lambda: lm.harvest(model, 1024, seq_len=10_000), "seq_len"),
        (lambda: lm.ce_with_sae(model, toks.astype(np.float32), sae), "tokens"),
        (lambda: lm.ce_with_sae(model, toks[0], sae), "tokens"),
        (lambda: lm.ce_with_sae(model, [[1, 2]], sae), "tokens"),
        (lambda: lm.ce_with_sae(model, torch.as_tensor(toks) + 10**6, sae), "tokens"),
        (lambda: lm.ce_with_sae(model, toks, small), "sae"),
        (lambda: lm.ce_with_sae(model, toks, sae, instance=1), "instance"),
        (lambda: lm.ce_with_sae(model, toks, sae, batch_size=-1), "batch_size"),
        (lambda: lm.ce_with_sae(model, toks, sae, baselines=(1.0, 2.0)), "baselines"),
        (lambda: lm.evaluate_saes(model, sae, "acts"), "acts"),
        (lambda: lm.top_contexts(np.zeros(5), toks), "latent_acts"),
        (lambda: lm.top_contexts(np.zeros(toks.size), toks.astype(float)), "tokens"),
        (lambda: lm.top_contexts(np.zeros(toks.size), toks, k=0), "k"),
        (lambda: lm.logit_effects(model, torch.zeros(2, 7)), "residual"),
        (lambda: lm.logit_effects(model, torch.zeros(2, model.cfg.d_model), min_count=2), "min_count"),
    ]
    for call, name in bad:
        with pytest.raises((ValueError, TypeError), match=name):
            call()
    assert not list((cache / "activations").glob("*")), "a refused call must not start a harvest"


def test_evaluate_saes_checks_its_own_arguments(model, cache):
    acts = lm.harvest(model, 512, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    sae = _identity_sae(model.cfg.d_mlp)
    for kwargs, name in [({"n_rows": 0}, "n_rows"), ({"n_seq": -1}, "n_seq"), ({"holdout": 1.5}, "holdout"),
                         ({"dense_threshold": 2.0}, "dense_threshold"), ({"layer": 1}, "layer"),
                         ({"chunk_rows": 0}, "chunk_rows")]:
        with pytest.raises((ValueError, TypeError), match=name):
            lm.evaluate_saes(model, sae, acts, **kwargs)
    with pytest.raises(ValueError, match="sae"):
        lm.evaluate_saes(model, SAE(SAEConfig(d_in=8, d_sae=16), device="cpu"), acts)


# --------------------------------------------------------------------------------------
# CE loss recovered, devices, evaluation
# --------------------------------------------------------------------------------------
def test_ce_recovered_is_one_for_a_perfect_sae_and_zero_for_a_silent_one(model):
    toks = lm.corpus_token_windows(model, 256, seq_len=64)
    sae = _identity_sae(model.cfg.d_mlp)
    perfect = lm.ce_with_sae(model, toks, sae)
    assert perfect.zero_ablated > perfect.clean, "deleting the MLP should raise the loss"
    assert perfect.recovered == pytest.approx(1.0, abs=1e-4), f"a perfect reconstruction recovers all the loss: {perfect}"
    assert lm.ce_with_sae(model, toks.numpy(), sae).with_sae == pytest.approx(perfect.with_sae), "numpy tokens work too"
    with torch.no_grad():
        sae.b_enc.fill_(-1e4)  # no latent ever fires: the reconstruction is 0, like zero-ablation
    silent = lm.ce_with_sae(model, toks, sae)
    assert silent.recovered == pytest.approx(0.0, abs=1e-4), f"an SAE that outputs zeros recovers nothing: {silent}"


class _SAEOnAnotherDevice:
    """Stands for an SAE on the GPU while the model is on the CPU: it reports the meta device,
    records where its inputs arrive, and reconstructs zeros (so CE recovered must be ~0)."""

    def __init__(self, d):
        self.cfg = SAEConfig(d_in=d, d_sae=2 * d)
        self.device = torch.device("meta")
        self.seen = []

    def encode(self, x):
        self.seen.append(("encode", x.device.type, x.dtype))
        return torch.zeros(1, x.shape[0], self.cfg.d_sae, device=x.device)

    def decode(self, c):
        self.seen.append(("decode", c.device.type, c.dtype))
        return torch.zeros(1, c.shape[1], self.cfg.d_in)  # what .to(model device) brings back


def test_splice_moves_activations_to_the_sae_device_and_back(model):
    toks = lm.corpus_token_windows(model, 128, seq_len=64)
    other = _SAEOnAnotherDevice(model.cfg.d_mlp)
    res = lm.ce_with_sae(model, toks, other)
    assert other.seen and all(dev == "meta" for _, dev, _ in other.seen), (
        f"the SAE must receive activations on its own device, got {other.seen}")
    assert all(dt == torch.float32 for _, _, dt in other.seen), "the SAE reads float32 whatever the model's dtype"
    assert res.recovered == pytest.approx(0.0, abs=1e-4), f"the zero reconstruction must reach the model: {res}"


def test_residual_effects_are_the_mlp_output_matrix(model):
    W_out = model.original_model.transformer.h[0].mlp.c_proj.weight  # GPT-2 Conv1D: (d_mlp, d_model)
    v = torch.randn(5, model.cfg.d_mlp, generator=torch.Generator().manual_seed(0))
    got = lm.residual_effects(model, v)
    assert torch.allclose(got, v @ W_out.detach(), atol=1e-4), "residual_effects should equal v @ W_out"


def _hand_counts(x):
    pos, neg = (x > 0), (x < 0)  # the identity SAE: latent i fires on x_i > 0, latent d+i on x_i < 0
    return ((pos | neg).sum(1).mean(), int((~pos.any(0)).sum() + (~neg.any(0)).sum()),
            int((pos.mean(0) > 0.1).sum() + (neg.mean(0) > 0.1).sum()))


def test_evaluate_saes_counts_match_a_hand_computation(model, cache):
    acts = lm.harvest(model, 1024, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    sae = _identity_sae(model.cfg.d_mlp)
    (ev,) = lm.evaluate_saes(model, sae, acts, n_rows=512, n_seq=4)
    rows = np.arange(1024 - 512, 1024)
    l0, dead, dense = _hand_counts(np.asarray(acts.acts["post"][rows[rows % 64 != 0]]))
    assert ev.l0 == pytest.approx(l0, rel=1e-5), f"L0 should count nonzero coordinates: {ev.l0} vs {l0}"
    assert ev.dead == dead, "dead = latents that never fire"
    assert ev.dense == dense, "dense = latents on > 10% of tokens"
    assert ev.fvu < 1e-8, f"an exact reconstruction leaves no variance unexplained: {ev.fvu}"
    assert ev.ce.recovered == pytest.approx(1.0, abs=1e-4)
    (chunked,) = lm.evaluate_saes(model, sae, acts, n_rows=512, n_seq=4, chunk_rows=7)
    assert chunked._replace(fvu=0.0) == ev._replace(fvu=0.0) and chunked.fvu == pytest.approx(ev.fvu, abs=1e-9), (
        "evaluating 7 rows at a time must give the same numbers")


def test_held_out_windows_are_never_sampled_and_are_what_evaluation_reads(model, cache):
    acts = lm.harvest(model, 1024, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    start = acts.held_out_start(0.25)
    assert start == 12 * 64 and acts.held_out_tokens(0.25).shape == (4, 64), (start, acts.held_out_tokens(0.25).shape)
    post = np.asarray(acts.acts["post"])
    held = {r.tobytes() for r in post[start:]} - {r.tobytes() for r in post[:start]}
    draws = acts.sampler("post", device="cpu", holdout=0.25)(4000).numpy()
    leaked = sum(r.tobytes() in held for r in draws)
    assert leaked == 0, f"{leaked} of 4000 training draws came from the held-out windows"
    sae = _identity_sae(model.cfg.d_mlp)
    (ev,) = lm.evaluate_saes(model, sae, acts, n_seq=2, holdout=0.25)
    rows = np.arange(start, 1024)
    l0, dead, dense = _hand_counts(post[rows[rows % 64 != 0]])
    assert (ev.l0, ev.dead, ev.dense) == (pytest.approx(l0, rel=1e-5), dead, dense), "metrics must use held-out rows"
    base = lm.ce_baselines(model, acts.held_out_tokens(0.25)[:2])
    assert ev.ce.clean == pytest.approx(base.clean, rel=1e-6), "CE must be measured on the held-out windows"


# --------------------------------------------------------------------------------------
# Streamed latent statistics: the same numbers whatever the chunk
# --------------------------------------------------------------------------------------
def test_streamed_latent_statistics_equal_the_dense_computation(model, cache, monkeypatch):
    acts = lm.harvest(model, 2048, kinds=("post",), seq_len=64, batch_size=8, progress=False)
    post = acts.acts["post"]
    sae = _random_sae(model.cfg.d_mlp)
    lazy = lm.latent_activations(sae, post, instance=1, lazy=True)
    dense = np.asarray(lazy)
    with torch.no_grad():
        ref = sae.encode(torch.from_numpy(np.array(post)))[1].numpy()   # one pass, no chunks
    assert np.allclose(dense, ref, atol=1e-5), "the chunked latent matrix differs from a single encode"
    freq = (ref > 0).mean(0)
    assert 0 < freq.mean() < 0.5, f"the test SAE should be sparse but alive, mean density {freq.mean():.3f}"
    for lat, chunk in ((dense, None), (dense, 7), (lazy, 7), (lazy, 1000)):
        st = lm.latent_stats(lat, chunk_rows=chunk)
        assert np.allclose(st.freq, freq) and np.allclose(st.max, ref.max(0), atol=1e-5), f"latent_stats, chunk {chunk}"
        assert np.allclose(st.mean, ref.mean(0), atol=1e-5), f"latent_stats mean, chunk {chunk}"
    f = int(np.argmax(freq))
    order = np.argsort(-ref[:, f], kind="stable")[:5]
    rows, values = lm.top_rows(lazy, [f], 5, chunk_rows=7)
    assert np.array_equal(rows[:, 0], order) and np.allclose(values[:, 0], ref[order, f], atol=1e-5), "top_rows"
    ctx = lm.top_contexts(lazy[:, f], acts.tokens, k=5)
    assert [c[2] for c in ctx] == pytest.approx(list(ref[order, f]), abs=1e-5), "top_contexts on a streamed column"
    picks = [lm.pick_latents(lat, acts.tokens, n=4, min_freq=0.01, max_freq=0.3, chunk_rows=c)
             for lat, c in ((dense, None), (dense, 5), (lazy, 13))]
    assert all(np.array_equal(p, picks[0]) for p in picks), f"pick_latents depends on the chunk: {picks}"
    top = np.flatnonzero(freq > 0)[:40]
    on = (ref[:, top] > 0).astype(np.float64)
    p = on.mean(0)
    lift = (on.T @ on / len(on)) / np.outer(p, p)
    assert np.allclose(lm.co_occurrence_lift(lazy, top, chunk_rows=11), lift), "co-occurrence lift, chunked"
    geo = lm.pair_geometry(model, sae, lazy, n_latents=30, instance=1, chunk_rows=9)
    geo_dense = lm.pair_geometry(model, sae, dense, n_latents=30, instance=1)
    assert np.array_equal(geo.latents, geo_dense.latents) and np.allclose(geo.lift, geo_dense.lift), "pair_geometry"
    # The default chunk follows CHUNK_ELEMENTS: a small budget means small chunks, not one big array.
    monkeypatch.setattr(lm.features, "CHUNK_ELEMENTS", 96 * 2 * 50)
    seen = []
    chunks = lm.LatentActs.chunks

    def spy(self, chunk_rows=None):
        for s, c in chunks(self, chunk_rows):
            seen.append(c.shape[0])
            yield s, c

    monkeypatch.setattr(lm.LatentActs, "chunks", spy)
    small = lm.LatentActs(sae, post, instance=1)
    st = lm.latent_stats(small)
    assert max(seen) <= 50 and np.allclose(st.freq, freq), f"chunks of {max(seen)} rows exceed the budget of 50"


# --------------------------------------------------------------------------------------
# Logit effects and geometry
# --------------------------------------------------------------------------------------
def test_logit_effects_rank_only_tokens_seen_often_enough_and_return_their_logits(model):
    d = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    seen = np.array([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] * 3 + [20, 21]])  # 20, 21 seen once
    raw = lm.logit_effects(model, d, k=4)
    masked = lm.logit_effects(model, d, k=4, tokens=seen, min_count=2)
    W_U = model.W_U if hasattr(model, "W_U") else model.unembed.W_U
    logits = d @ W_U.detach()
    allowed = {model.tokenizer.decode([t]) for t in range(5, 17)}
    for i, (up, down) in enumerate(masked):  # still unpacks as (promotes, suppresses)
        assert {t.token for t in up + down} <= allowed, f"tokens seen < 2 times were ranked: {up + down}"
        ids = torch.arange(5, 17)
        best = logits[i, ids].topk(4).values
        assert [t.logit for t in up] == pytest.approx(best.tolist(), abs=1e-4), "promoted logits, largest first"
        assert [t.logit for t in down] == pytest.approx((-(-logits[i, ids]).topk(4).values).tolist(), abs=1e-4)
    assert any({t.token for t in r.promotes} - allowed for r in raw), "without min_count, unseen tokens compete"


def test_geometry_table_sorts_pairs_into_the_four_cells():
    geo = lm.PairGeometry(latents=np.arange(4), lift=np.array([0.0, 0.0, 2.0, 2.0, 0.5]),
                          output_cos=np.array([0.9, 0.1, 0.9, 0.1, 0.2]),
                          decoder_cos=np.array([-0.5, -0.3, 0.6, 0.0, -0.1]))
    table = lm.geometry_table(geo, similar_quantile=0.7)  # the two 0.9 pairs are "similar"
    assert table[True, False] == (pytest.approx(-0.5), 1) and table[True, True] == (pytest.approx(0.6), 1)
    assert table[False, True] == (pytest.approx(0.0), 1), "co-occurring, different output: the 4th pair"
    assert table[False, False] == (pytest.approx(-0.2), 2), "never together, different output: pairs 2 and 5"


def test_the_one_layer_online_model_family_loads_through_the_bridge_offline(tmp_path):
    """``lm.ONLINE_MODEL`` is a one-layer GPT-Neo (TinyStories-1Layer-21M). Without a network,
    build a tiny random GPT-Neo of the same architecture in a folder and load it the way the
    hub model is loaded: the MLP hooks the course reads must exist and have the MLP's width."""
    from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM

    from helpers.lm.offline import model_dir

    assert lm.ONLINE_MODEL == "roneneldan/TinyStories-1Layer-21M" and lm.ONLINE_MULTILAYER_MODEL.endswith("pythia-70m")
    tok = AutoTokenizer.from_pretrained(str(model_dir()))
    cfg = GPTNeoConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=4, intermediate_size=96,
                       max_position_embeddings=64, attention_types=[[["global"], 1]], window_size=16)
    torch.manual_seed(0)
    GPTNeoForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = lm.load_model(str(tmp_path), device="cpu", offline=True)
    tokens = torch.tensor([tok.encode("def f(x):\n    return x")])
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in lm.mlp_hooks(0).values())
    post, out = cache[lm.mlp_hooks(0)["post"]], cache[lm.mlp_hooks(0)["out"]]
    assert post.shape == (1, tokens.shape[1], 96), f"MLP post-activations should be (1, tokens, d_mlp=96), got {tuple(post.shape)}"
    assert out.shape == (1, tokens.shape[1], 32), f"MLP output should be (1, tokens, d_model=32), got {tuple(out.shape)}"


def test_pick_latents_never_picks_a_latent_twice_even_when_every_latent_is_dense():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (40, 16)).astype(np.int32)
    for density in (0.5, 0.01):  # all latents outside the default frequency range / inside it
        lat = (rng.random((640, 12)) < density) * rng.random((640, 12)).astype(np.float32)
        picks = lm.pick_latents(lat, tokens, n=4)
        assert len(picks) == 4 and len(set(picks.tolist())) == 4, f"pick_latents repeated a latent: {picks}"


def test_a_hub_that_accepts_and_never_answers_fails_in_bounded_time(tmp_path, monkeypatch):
    """A network that accepts connections and never answers (a captive portal, a dead proxy):
    huggingface_hub's session has no overall timeout, so load_model must give up by itself."""
    import socket
    import threading
    import time

    import helpers.lm.loading as loading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "HUB_PROBE_SECONDS", 1.0)
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError) as err:
            lm.load_model("no-such-org/silent-hub-model")
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    seconds = time.perf_counter() - t0
    assert held, "the probe never connected to the silent server: the test did not test anything"
    assert seconds < 15, f"load_model waited {seconds:.1f} s on a hub that never answers; it should give up"
    assert lm.OFFLINE_MODEL in str(err.value) and "accepted no request" in str(err.value), str(err.value)


def test_load_model_gives_float32_weights(tmp_path):
    """A checkpoint stored in fp16 (as Pythia's are) is loaded in float32, the dtype of every SAE."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from helpers.lm.offline import model_dir

    tok = AutoTokenizer.from_pretrained(str(model_dir()))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok))).half().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = lm.load_model(str(tmp_path), device="cpu", offline=True)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.float32}, f"load_model kept {dtypes}: cast the Hugging Face model to float32 once, at load"


def test_kl_to_clean_is_zero_for_a_perfect_sae_and_matches_a_hand_computation(model):
    toks = lm.corpus_token_windows(model, 256, seq_len=64)
    assert lm.kl_with_sae(model, toks, _identity_sae(model.cfg.d_mlp)) == pytest.approx(0.0, abs=1e-6), \
        "a perfect reconstruction leaves the next-token distribution unchanged"
    hook = lm.mlp_hooks(0)["post"]

    def zero(x, hook):
        y = x.clone()
        y[:, 1:] = 0
        return y

    kl = lm.kl_to_clean(model, toks, [(hook, zero)], batch_size=3)
    with torch.no_grad():
        p = torch.log_softmax(model(toks, return_type="logits")[:, :-1].double(), -1)
        q = torch.log_softmax(model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(hook, zero)])[:, :-1].double(), -1)
    assert kl == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-6), "KL(clean || hooked), mean over tokens"
    assert kl > 1.0, "zeroing the MLP moves the predictions a lot"


def test_activation_row_null_makes_its_own_co_occurrence(model):
    toks = lm.corpus_token_windows(model, 64 * 32, seq_len=32)
    got = {}
    with torch.no_grad():
        model.run_with_hooks(toks, return_type=None, fwd_hooks=[(lm.mlp_hooks(0)["post"], lambda x, hook: got.setdefault("x", x))])
    post = got["x"].reshape(-1, model.cfg.d_mlp).numpy()
    geo = lm.activation_row_geometry(model, post, 32, n_latents=20, top=0.1, n_rows=1000, seed=0)
    assert len(geo.lift) == 20 * 19 // 2 and np.all(np.abs(geo.decoder_cos) <= 1 + 1e-5)
    assert np.isfinite(geo.lift).all() and (geo.lift > 1).any() and (geo.lift < 1).any(), "its own firing, not the SAE's"
    again = lm.activation_row_geometry(model, post, 32, n_latents=20, top=0.1, n_rows=1000, seed=0)
    assert np.array_equal(geo.decoder_cos, again.decoder_cos), "the same seed gives the same null"
    mm = lm.activation_row_mmcs(post, 32, [16, 32, 64], n_rows=1000)
    assert np.isnan(mm[-1]) and np.all((mm[:-1] > 0) & (mm[:-1] <= 1))
