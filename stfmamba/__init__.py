"""STF-Mamba: video deepfake detection (Video-SBI, 3D wavelets, Mamba / Hydra, attention)."""
__version__ = "0.8.0"
