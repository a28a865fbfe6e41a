"""FFIW-10K adapter (Face Forensics in the Wild, Zhou et al., CVPR 2021).

Layout under ``root`` (the release folder, e.g. ``FFIW10K-v1-release``)::

    source/<split>/<name>.mp4    real videos
    target/<split>/<name>.mp4    their manipulated versions (method ``FFIW``)

with ``<split>`` among ``train``, ``val``, ``test``. Cross-dataset evaluation reads the ``test``
split; a release without a ``test`` folder is evaluated on ``val`` (as most papers report), so
``val`` is mapped to ``test`` in that case. ``train`` rows keep their split.
"""
from __future__ import annotations

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter

FAKE_METHOD = "FFIW"


@register_adapter("ffiw")
class FFIWAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        self._require(self.root / "source", "FFIW source/ folder (real videos)")
        self._require(self.root / "target", "FFIW target/ folder (fake videos)")
        has_test = (self.root / "source" / "test").is_dir() or (self.root / "target" / "test").is_dir()
        rename = {"train": "train", "val": "val" if has_test else "test", "test": "test"}
        out = []
        for folder, label, method in (("source", 0, REAL), ("target", 1, FAKE_METHOD)):
            for split, ours in rename.items():
                out += [VideoRow(p.stem, p, label, method, ours)
                        for p in sorted((self.root / folder / split).glob("*.mp4"))]
        if not out:
            raise ConfigError(f"{self.root}: no videos under source/<split>/ or target/<split>/ "
                              "(split = train | val | test); check data.datasets.<name>.root")
        return out
