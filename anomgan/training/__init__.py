"""Training: :func:`fit` (the loop), its checkpoints and multi-process support."""
from .loop import (CHECKPOINT_NAME, FitResult, NonFiniteLossError, TrainingInterrupted, fit, load_checkpoint,
                   stage_budgets)

__all__ = ["fit", "FitResult", "NonFiniteLossError", "TrainingInterrupted", "load_checkpoint", "stage_budgets",
           "CHECKPOINT_NAME"]
