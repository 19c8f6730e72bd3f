"""Which class ``SAE(cfg)`` builds for each ``cfg.architecture``: one line per variant,
``@register_sae_class`` on its class. Kept apart from the model so that the config can check
an architecture name without importing the model (the package imports every built-in
variant, so they are registered before any config is made)."""
from __future__ import annotations

SAE_CLASSES: dict[str, type] = {}
"""The class ``SAE(cfg)`` builds for each ``cfg.architecture``, filled by ``register_sae_class``."""


def register_sae_class(cls: type) -> type:
    """Make ``SAE(cfg)`` build ``cls`` when ``cfg.architecture == cls.architecture`` (usable as a
    decorator). A name registers once: a subclass defined elsewhere (an experiment's variant of
    TopK, say) is built by calling it, and cannot silently replace what ``SAE(cfg)`` builds."""
    name = cls.architecture
    if SAE_CLASSES.get(name, cls) is not cls:
        raise ValueError(f"architecture {name!r} is already registered to {SAE_CLASSES[name].__qualname__}; "
                         f"give {cls.__qualname__} an architecture name of its own, or build it directly")
    SAE_CLASSES[name] = cls
    return cls


def sae_class(architecture: str) -> type:
    """The registered class for ``architecture`` (a clear error for an unknown one)."""
    if architecture not in SAE_CLASSES:
        raise ValueError(f"architecture must be one of {sorted(SAE_CLASSES)}, got {architecture!r}")
    return SAE_CLASSES[architecture]
