"""anomgan: GAN-based visual anomaly detection for industrial inspection."""
from . import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__"]
