"""Saving and loading SAEs in the layout SAELens 6 reads: a folder with ``cfg.json`` and
``sae_weights.safetensors``, one folder per SAE, weights in SAELens' orientation (W_enc
(d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,), plus ``threshold`` (d_sae,)
for a JumpReLU). A reader can load our dictionaries with ``sae_lens.SAE.load_from_disk`` and
we load theirs, for the settings we implement; anything else is refused by name.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from helpers.device import check_int
from helpers.paths import atomic_write
from helpers.sae.config import SAEConfig
from helpers.sae.model import SAE
from helpers.sae.registry import SAE_CLASSES

SAE_LENS_VERSION = "6.54.12"
"""The SAELens version whose file layout ``save_sae`` writes (recorded in cfg.json)."""

WEIGHTS_FILE, CFG_FILE = "sae_weights.safetensors", "cfg.json"

# Each class says how it is stored (``saved_as``, ``file_extras``) and read back (``file_shapes``,
# ``config_from_file``, ``load_extras_``): a file's "architecture" names the registered class.


def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None, hook_name: str | None = None) -> list[Path]:
    """Save each instance to its own folder (``cfg.json`` + ``sae_weights.safetensors``).

    A one-instance SAE saves into ``folder`` itself; a stack into
    ``folder/instance_XX_l1_<alpha>/``. ``hook_name`` (e.g. ``blocks.0.mlp.hook_post``) goes
    into ``metadata.hook_name``, where SAELens looks for the activations the SAE reads;
    ``extra`` adds other metadata. ``apply_b_dec_to_input`` says whether our encoder subtracts
    b_dec (``decoder_bias``): SAELens defaults it to true, and a wrong value would shift every
    latent's input by b_dec.
    """
    folder, cfg = Path(folder), sae.cfg
    meta_extra = {**(extra or {}), **({"hook_name": hook_name} if hook_name is not None else {})}
    paths = []
    with torch.no_grad():
        W_dec = sae.decoder_directions().detach().float().cpu()
        for i, alpha in enumerate(cfg.l1_coeffs):
            out = folder if cfg.n_instances == 1 else folder / f"instance_{i:02d}_l1_{alpha:.4g}"
            out.mkdir(parents=True, exist_ok=True)
            tensors = {
                "W_enc": sae.W_enc[i].detach().float().cpu().contiguous(),
                "b_enc": sae.b_enc[i].detach().float().cpu().contiguous(),
                "W_dec": W_dec[i].contiguous(),
                "b_dec": sae.b_dec[i].detach().float().cpu().contiguous(),
            }
            meta = {"architecture": sae.saved_as, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32",
                    "device": "cpu", "apply_b_dec_to_input": cfg.decoder_bias,
                    "normalize_activations": "none", "reshape_activations": "none"}
            extra_tensors, extra_meta = sae.file_extras(i)
            tensors.update(extra_tensors)
            meta.update(extra_meta)
            meta["metadata"] = {"sae_lens_version": SAE_LENS_VERSION, **meta_extra}
            meta["course"] = {**asdict(cfg), "l1_coeffs": [alpha], "seed": cfg.seed + i}  # nested configs: dicts or null
            with atomic_write(out / WEIGHTS_FILE) as tmp:
                save_file(tensors, str(tmp))
            with atomic_write(out / CFG_FILE) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
            paths.append(out)
    # What an earlier save of another stack left in this folder would be read as part of this one.
    for old in folder.glob("instance_*"):
        if old.is_dir() and old not in paths:
            shutil.rmtree(old)
    if cfg.n_instances > 1:
        (folder / CFG_FILE).unlink(missing_ok=True)
        (folder / WEIGHTS_FILE).unlink(missing_ok=True)
    return paths


def load_sae(folder: str | Path, device: str | torch.device | None = None) -> SAE:
    """Load one saved SAE (ours, or an SAELens ``standard``/``topk``/``jumprelu``/``batchtopk``
    SAE) as a one-instance SAE of the matching class. A file that cannot be read, or whose
    ``cfg.json`` holds a value of the wrong type, is a ValueError naming the file."""
    folder = Path(folder)
    meta, tensors = _read(folder)
    try:
        return _from_file(folder, meta, tensors, device)
    except (TypeError, KeyError, AttributeError) as err:  # valid JSON, but a value of the wrong type or shape
        raise ValueError(f"{folder / CFG_FILE} holds a value of the wrong type ({type(err).__name__}: {err}): "
                         "save the SAE again with save_sae, or correct the file") from err


def _from_file(folder: Path, meta: dict, tensors: dict[str, torch.Tensor], device) -> SAE:
    """``load_sae`` once the files are read."""
    arch = meta.get("architecture", "standard")
    course = meta.get("course", {})
    cls = SAE_CLASSES.get(arch)
    if cls is None:
        raise ValueError(f"{folder}: architecture {arch!r} is not one we implement ({', '.join(SAE_CLASSES)})")
    for setting in ("normalize_activations", "reshape_activations"):
        if meta.get(setting, "none") not in ("none", None):
            raise ValueError(f"{folder}: {setting}={meta[setting]!r} is not implemented here (only 'none'); "
                             "fold the normalisation into the weights first (SAELens: fold_activation_norm_scaling_factor)")
    d_in, d_sae = meta["d_in"], meta["d_sae"]
    for name in ("d_in", "d_sae"):
        check_int(name, meta[name], 1)  # "4" or 4.5 is a TypeError, which load_sae reports as a damaged file
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
                **cls.file_shapes(d_sae)}
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise ValueError(f"{folder}: {name} should have shape {shape} from cfg.json, got {got}")
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise ValueError(f"{folder}: weights {unknown} belong to a setting not implemented here")
    t = {name: tensors[name].float() for name in expected}

    # Our decoder uses unit rows. A file whose rows are not unit (most SAELens SAEs) gives the
    # same SAE once each row's norm moves into its latent: c_j ||W_j|| = f(pre_j ||W_j||) for
    # ReLU and JumpReLU (threshold scaled too). TopK picks the k largest pre-activations, so
    # folding is exact only if the file's TopK already ranks pre x ||W_j||.
    norms = t["W_dec"].norm(dim=-1)  # (d_sae,)
    rescaled = bool(meta.get("rescale_acts_by_decoder_norm", False))
    if not cls.exact_norm_fold and not rescaled and (norms - 1).abs().max() > 1e-4:
        raise ValueError(f"{folder}: rescale_acts_by_decoder_norm=false with decoder rows of non-unit norm: "
                         "this TopK ranks latents differently from ours (unit rows), so it is not implemented")
    if (norms - 1).abs().max() > 1e-4:
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
        if "threshold" in t:
            t["threshold"] = t["threshold"] * norms

    # Our encoder subtracts b_dec iff decoder_bias; the decoder always adds it. A file with
    # apply_b_dec_to_input=false and a non-zero b_dec is therefore still the same SAE here:
    # b_dec becomes a fixed output offset (decoder_bias=False keeps it out of training).
    apply = bool(meta.get("apply_b_dec_to_input", True))
    # Keys with no field here are dropped: an older file's flat resample_* and jumprelu_* settings
    # (now ``resample`` and ``variant``) steer training only, never what the weights compute.
    fields = {k: v for k, v in course.items() if k in SAEConfig.__dataclass_fields__}
    if fields.get("architecture", arch) != arch:  # saved as another class (a BatchTopK as a JumpReLU):
        fields.pop("variant", None)               # its own settings are not the file's class's
    decoder_bias = apply and (bool(t["b_dec"].abs().max() > 0) or bool(fields.get("decoder_bias", False)))
    if fields.get("decoder_bias", decoder_bias) != decoder_bias:
        raise ValueError(f"{folder}: apply_b_dec_to_input={apply} contradicts the saved course config "
                         f"(decoder_bias={fields['decoder_bias']}); the file was edited by hand?")
    # The file's architecture wins over the course block: a saved BatchTopK comes back as the
    # JumpReLU it was saved as.
    fields.update(d_in=d_in, d_sae=d_sae, decoder_bias=decoder_bias, architecture=arch)
    fields = cls.config_from_file(meta, fields)
    if not cls.takes_auxk:  # a training loss (the course block's "auxk", a dict): a saved BatchTopK loads as a JumpReLU
        fields.pop("auxk", None)
    fields.setdefault("l1_coeffs", (0.0,))
    fields["l1_coeffs"] = tuple(fields["l1_coeffs"])[:1]
    sae = SAE(SAEConfig(**fields), device=device)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(t[name][None])
        sae.load_extras_(t)
    return sae


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if not (folder / CFG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        subs = sorted(p.name for p in folder.glob("instance_*")) if folder.is_dir() else []
        hint = f" It holds instance folders ({', '.join(subs[:3])}...): load one of those." if subs else ""
        raise FileNotFoundError(f"No saved SAE at {folder}: expected {CFG_FILE} and {WEIGHTS_FILE} there "
                                f"(train one and call save_sae first).{hint}")
    try:
        meta = json.loads((folder / CFG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CFG_FILE} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or not {"d_in", "d_sae"} <= meta.keys():
        raise ValueError(f"{folder / CFG_FILE} must be a JSON object with d_in and d_sae (an SAELens cfg.json)")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    return meta, tensors
