"""DeepFakeDetection (DFD, Google/Jigsaw 2019) adapter, as distributed inside FaceForensics++.

Layout under ``root`` (the FF++ download with ``-d DeepFakeDetection_original`` and
``-d DeepFakeDetection``)::

    original_sequences/actors/<compression>/videos/01__exit_phone_room.mp4
    manipulated_sequences/DeepFakeDetection/<compression>/videos/01_02__exit_phone_room__YVGY8LOK.mp4

``compression`` comes from ``data.datasets.<name>.compression``. Every video is in the ``test``
split; fakes get method ``DeepFakeDetection``.
"""
from __future__ import annotations

from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter

FAKE_METHOD = "DeepFakeDetection"


@register_adapter("dfd")
class DFDAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        c = self.cfg.compression
        real_dir = self._require(self.root / "original_sequences" / "actors" / c / "videos", "DFD real videos folder")
        fake_dir = self._require(self.root / "manipulated_sequences" / FAKE_METHOD / c / "videos",
                                 "DFD manipulated videos folder")
        out = [VideoRow(p.stem, p, 0, REAL, "test") for p in sorted(real_dir.glob("*.mp4"))]
        out += [VideoRow(p.stem, p, 1, FAKE_METHOD, "test") for p in sorted(fake_dir.glob("*.mp4"))]
        return out
