"""Trainable methods (one module per method) and their registry.

``METHODS`` maps a method's name to its class; ``get_method(name)`` returns the class or raises
ValueError listing the known names. See :mod:`anomgan.models.base` for the interface.
"""
from .base import METHODS, Method, get_method, register
from .networks import Discriminator, Encoder, Generator
from .encoder import encoder_loss, izif_residual
from .progressive import ProgressiveDiscriminator, ProgressiveGenerator, ProgressiveSchedule
from .noisy_gan import AnoGAN, NoisyGAN
from .ganomaly import GANomaly
from .dual_disc import DualDiscriminatorGAN

__all__ = ["METHODS", "Method", "get_method", "register", "Generator", "Discriminator",
           "Encoder", "encoder_loss", "izif_residual", "ProgressiveGenerator",
           "ProgressiveDiscriminator", "ProgressiveSchedule", "NoisyGAN", "AnoGAN", "GANomaly",
           "DualDiscriminatorGAN"]
