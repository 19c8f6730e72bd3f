"""Sparse autoencoders, many at once: ``SAEConfig`` and its ``AuxKConfig`` (config), ``SAE`` and
its variants (model, variants), ``train_sae`` (train), ``save_sae``/``load_sae`` in SAELens' layout (io)."""
from helpers.optim import NonFiniteLossError
from helpers.sae.config import AuxKConfig, SAEConfig
from helpers.sae.io import SAE_LENS_VERSION, load_sae, save_sae
from helpers.sae.model import SAE, ForwardOutput
from helpers.sae.registry import SAE_CLASSES, register_sae_class, sae_class
from helpers.sae.train import TrainLog, train_sae
from helpers.sae.variants import BatchTopKSAE, JumpReLUSAE, TopKSAE

__all__ = ["SAE_CLASSES", "register_sae_class", "sae_class", "SAEConfig", "AuxKConfig", "SAE", "ForwardOutput",
           "TopKSAE", "BatchTopKSAE", "JumpReLUSAE",
           "TrainLog", "train_sae", "save_sae", "load_sae", "SAE_LENS_VERSION", "NonFiniteLossError"]
