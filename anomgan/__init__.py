"""anomgan: GAN-based visual anomaly detection for industrial inspection."""
__version__ = "0.1.0"

from . import ops  # noqa: E402
from .api import detect, load, train  # noqa: E402
from .detector import Detector, ScoringConfig  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .scoring.result import DetectionResult  # noqa: E402

__all__ = ["Detector", "DetectionResult", "ScoringConfig", "detect", "evaluate", "load", "ops", "train",
           "__version__"]
