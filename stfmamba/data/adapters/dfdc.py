"""DFDC adapter (Deepfake Detection Challenge, Dolhansky et al. 2020), public test set.

Layout under ``root``::

    labels.csv          filename,label   (label 1 = fake, 0 = real)
    <filename>          the videos, next to labels.csv (or in a ``videos/`` sub-folder)

Every row is in the ``test`` split; fakes get method ``DFDC`` (the set mixes several unnamed
methods). The video id is the file name without extension.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter

FAKE_METHOD = "DFDC"


@register_adapter("dfdc")
class DFDCAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        labels = self._require(self.root / "labels.csv", "DFDC labels.csv (filename,label)")
        df = pd.read_csv(labels, dtype=str, keep_default_na=False)
        if not {"filename", "label"} <= set(df.columns):
            raise ConfigError(f"{labels}: expected columns filename,label, got {list(df.columns)}")
        video_dir = self.root / "videos" if (self.root / "videos").is_dir() else self.root
        out = []
        for i, rec in enumerate(df.to_dict("records"), start=2):
            lab = rec["label"].strip()
            if lab not in ("0", "1", "0.0", "1.0"):
                raise ConfigError(f"{labels}:{i}: label must be 0 (real) or 1 (fake), got {rec['label']!r}")
            label = int(float(lab))
            name = Path(rec["filename"])
            out.append(VideoRow(name.stem, video_dir / name, label, REAL if label == 0 else FAKE_METHOD, "test"))
        return out
