"""Plain CSV list adapter: ``path,label[,method][,split][,group][,identity]`` with paths relative to the CSV file.

For any dataset without a dedicated adapter (and the cross-dataset demo). ``label`` is 0 real /
1 fake; ``method`` defaults to ``real`` for label 0 and ``fake`` for label 1. Every row goes to the
``test`` split unless the CSV has a ``split`` column. ``video_id`` is the path relative to the CSV
without its extension, with ``/`` replaced by ``__`` (unique, and a valid file name).
Optional ``group`` (the source video a fake is made from, e.g. its real's ``path``; a real
defaults to its own id) and ``identity`` (the person shown) tell the evaluation's cluster bootstrap
which videos are not independent (:class:`~stfmamba.data.adapters.base.VideoRow`). A ``group``
that names a listed file (its ``path``) is turned into that file's ``video_id``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter


@register_adapter("csv")
class CSVListAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        path = self._require(self.root, "CSV list (path,label[,method])")
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        for col in ("path", "label"):
            if col not in df.columns:
                raise ConfigError(f"{path}: column '{col}' missing; expected a header path,label[,method][,split]")
        ids = {r["path"]: Path(r["path"]).with_suffix("").as_posix().replace("/", "__") for r in df.to_dict("records")}
        out = []
        for i, rec in enumerate(df.to_dict("records"), start=2):
            if rec["label"] not in ("0", "1"):
                raise ConfigError(f"{path}:{i}: label must be 0 (real) or 1 (fake), got {rec['label']!r}")
            label = int(rec["label"])
            method = REAL if label == 0 else (rec.get("method") or "fake")   # reals are always "real"
            rel = Path(rec["path"])
            vid = rel.with_suffix("").as_posix().replace("/", "__")
            split = rec.get("split") or "test"
            group = rec.get("group") or (vid if label == 0 else "")
            out.append(VideoRow(vid, path.parent / rel, label, method, split, ids.get(group, group),
                                rec.get("identity") or ""))
        return out
