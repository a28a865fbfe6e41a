"""DFDC Preview adapter (DFDCP, Dolhansky et al. 2019).

Layout under ``root``::

    dataset.json                                   {"<relative path>": {"label": "real"|"fake", "set": "train"|"test", ...}}
    original_videos/<actor>/<clip>.mp4             reals
    method_A/<actor>/<actor>_A/<clip>.mp4          fakes of method A (likewise method_B)

Only entries with ``"set": "test"`` are returned (cross-dataset evaluation uses the test set),
all in the ``test`` split. A fake's method is the top folder of its path (``method_A`` /
``method_B``). The video id is the relative path without extension, ``/`` replaced by ``__``
(clip names repeat across actors). The identity is the actor folder (``<actor>``, the second part
of the path, reals and fakes alike); fakes carry no link to their real clip (group left empty).
"""
from __future__ import annotations

import json
from pathlib import Path

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter


@register_adapter("dfdcp")
class DFDCPAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        meta_path = self._require(self.root / "dataset.json", "DFDCP dataset.json")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{meta_path}: not valid JSON ({err})") from None
        out = []
        for rel_s, info in sorted(meta.items()):
            if not isinstance(info, dict) or info.get("label") not in ("real", "fake"):
                raise ConfigError(f"{meta_path}: entry {rel_s!r} needs \"label\": \"real\" or \"fake\"")
            if info.get("set") != "test":
                continue
            rel = Path(rel_s)
            label = int(info["label"] == "fake")
            vid = rel.with_suffix("").as_posix().replace("/", "__")
            actor = rel.parts[1] if len(rel.parts) > 2 else ""
            out.append(VideoRow(vid, self.root / rel, label, REAL if label == 0 else rel.parts[0], "test",
                                vid if label == 0 else "", actor))
        return out
