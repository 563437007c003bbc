"""Trainable methods (one module per method) and their registry.

``METHODS`` maps a method's name to its class; ``get_method(name)`` returns the class or raises
ValueError listing the known names. See :mod:`anomgan.models.base` for the interface.
"""
from .base import METHODS, Method, get_method, register
from .networks import Discriminator, Encoder, Generator

__all__ = ["METHODS", "Method", "get_method", "register", "Generator", "Discriminator",
           "Encoder"]
