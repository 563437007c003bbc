"""Trainable methods (one module per method) and their registry.

``METHODS`` maps a method's name to its class; ``get_method(name)`` returns the class or raises
ValueError listing the known names. See :mod:`anomgan.models.base` for the interface.
"""
from .base import METHODS, Method, get_method, register
from .networks import Discriminator, Encoder, Generator

__all__ = ["METHODS", "Method", "get_method", "register", "Generator", "Discriminator",
           "Encoder"]

from . import noisy_gan  # noqa: E402,F401  (registers noisy-gan, anogan)
from .encoder import encoder_loss  # noqa: E402
from .noisy_gan import AnoGAN, NoisyGAN  # noqa: E402

__all__ += ["encoder_loss", "NoisyGAN", "AnoGAN"]
