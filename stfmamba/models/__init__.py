"""stfmamba.models: the STF-Mamba backbone, the per-frame baseline classifier, losses and model files."""
from stfmamba.models.frame import FrameClassifier
from stfmamba.models.stfmamba import STFMamba, build_model

__all__ = ["FrameClassifier", "STFMamba", "build_model"]
