"""Celeb-DF v2 adapter (Li et al., CVPR 2020), test set only.

Layout under ``root`` (as distributed)::

    Celeb-real/id0_0000.mp4            real celebrity videos
    YouTube-real/00000.mp4             real YouTube videos
    Celeb-synthesis/id0_id1_0000.mp4   DeepFake videos
    List_of_testing_videos.txt         "<flag> <folder>/<file>.mp4" per line

In ``List_of_testing_videos.txt`` the flag **1 means REAL** and 0 means fake (the opposite of our
labels, 0 real / 1 fake); this adapter converts it. Every listed video is in the ``test`` split;
fakes get method ``Celeb-synthesis``. A listed file that is missing is still returned (the
preprocess manifest then records it as failed, so the gap is visible).

Groups and identities (the evaluation's cluster bootstrap): a Celeb-DF fake ``id<t>_id<s>_<clip>``
keeps the frames of the real ``id<t>_<clip>`` (the target) with the face of celebrity ``id<s>``, so
it is grouped with ``id<t>_<clip>`` and gets identity ``id<t>``; a Celeb-real ``id<t>_<clip>`` has
identity ``id<t>``; YouTube-real videos name no person (identity empty).
"""
from __future__ import annotations

from pathlib import Path

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter

LIST_FILE = "List_of_testing_videos.txt"
FAKE_METHOD = "Celeb-synthesis"


def _group_identity(stem: str, is_real: bool) -> tuple[str, str]:
    """``(group, identity)`` from a Celeb-DF file name (see the module docstring)."""
    parts = stem.split("_")
    if is_real:
        return stem, parts[0] if len(parts) == 2 and parts[0].startswith("id") else ""
    if len(parts) == 3 and parts[0].startswith("id") and parts[1].startswith("id"):
        return f"{parts[0]}_{parts[2]}", parts[0]
    return "", ""


@register_adapter("celebdf")
class CelebDFAdapter(DatasetAdapter):
    def rows(self) -> list[VideoRow]:
        listing = self._require(self.root / LIST_FILE, f"Celeb-DF v2 test list {LIST_FILE}")
        out = []
        for n, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in ("0", "1"):
                raise ConfigError(f"{listing}:{n}: expected '<1 real | 0 fake> <folder>/<file>.mp4', got {line!r}")
            is_real = parts[0] == "1"  # Celeb-DF convention: 1 = real
            rel = Path(parts[1])
            out.append(VideoRow(rel.stem, self.root / rel, 0 if is_real else 1,
                                REAL if is_real else FAKE_METHOD, "test", *_group_identity(rel.stem, is_real)))
        return out
