"""stfmamba.models: the STF-Mamba backbone, its blocks, losses and model files."""
from stfmamba.models.stfmamba import STFMamba, build_model

__all__ = ["STFMamba", "build_model"]
