"""Training: the Phase A / Phase B Video-SBI trainer, optimizer/schedule, resume checkpoints, budget, DDP."""
from stfmamba.training.budget import BudgetTracker
from stfmamba.training.trainer import PHASES, TrainingDiverged, TrainPaths, train

__all__ = ["BudgetTracker", "PHASES", "TrainingDiverged", "TrainPaths", "train"]
