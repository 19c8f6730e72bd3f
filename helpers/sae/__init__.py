"""Sparse autoencoders, many at once: ``SAEConfig`` and its ``AuxKConfig`` and ``ResampleConfig`` (config),
``SAE`` and its variants (model, variants; ``JumpReLUConfig``), ``train_sae`` (train), ``save_sae``/``load_sae``
in SAELens' layout (io)."""
from helpers.optim import NonFiniteLossError
from helpers.sae.config import AuxKConfig, ResampleConfig, SAEConfig
from helpers.sae.io import SAE_LENS_VERSION, load_sae, save_sae
from helpers.sae.model import SAE, ForwardOutput
from helpers.sae.registry import SAE_CLASSES, register_sae_class, sae_class
from helpers.sae.train import TrainLog, train_sae
from helpers.sae.variants import BatchTopKSAE, JumpReLUConfig, JumpReLUSAE, TopKSAE

__all__ = ["SAE_CLASSES", "register_sae_class", "sae_class", "SAEConfig", "AuxKConfig", "ResampleConfig", "SAE",
           "ForwardOutput", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "JumpReLUConfig",
           "TrainLog", "train_sae", "save_sae", "load_sae", "SAE_LENS_VERSION", "NonFiniteLossError"]
