"""FaceForensics++ layout adapter (also reads the demo dataset, which uses the same layout).

Layout under ``root``::

    original_sequences/youtube/<compression>/videos/<id>.mp4
    manipulated_sequences/<Method>/<compression>/videos/<fake_id>.mp4

Splits come from ``<splits>/{train,val,test}.json``. Two formats, told apart by the content:

* FF++'s official lists of ``[target, source]`` pairs: the reals are both ids of every pair and
  the fakes are ``<target>_<source>`` and ``<source>_<target>`` of every method;
* a plain list of ids (the demo): the reals are the ids and each method's fake of a real has the
  real's id.

Reals are always listed (a missing file becomes a failed manifest row, so the gap is visible);
fakes are listed when their file exists (the demo has no fakes of its train reals, and FF++
training uses reals only).

Groups (source videos, :class:`~stfmamba.data.adapters.base.VideoRow`): a real is its own group; an
FF++ fake ``<target>_<source>`` belongs to ``<target>`` — FF++ keeps the target video's frames,
scene and head motion and pastes the source's face (or expression) onto them, so the fake is made of
the target real's frames; a demo fake has its real's id and belongs to it. Identities: FF++ has none;
an optional ``identities.json`` in the splits folder (``{"<real id>": "<person>"}``, the demo's)
gives each real its person, and each fake its group's person.
"""
from __future__ import annotations

import json
from pathlib import Path

from stfmamba.config import ConfigError
from stfmamba.data.adapters.base import REAL, DatasetAdapter, VideoRow, register_adapter

SPLITS = ("train", "val", "test")
IDENTITIES = "identities.json"   # optional, in the splits folder: {"<real id>": "<person>"}


def read_identities(path: Path) -> dict[str, str]:
    """``{real id: person}`` of an optional identities file; ``{}`` when absent."""
    if not path.is_file():
        return {}
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); expected {{\"<real id>\": \"<person>\"}}") from None
    if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
        raise ConfigError(f"{path}: expected a JSON object {{\"<real id>\": \"<person>\"}}")
    return {str(k): v for k, v in items.items()}


def fake_group(fake_id: str, reals: set[str]) -> str:
    """The real a fake is made from: its own id when a real has it (the demo), else the target of
    ``<target>_<source>`` (FF++), else the fake itself."""
    if fake_id in reals:
        return fake_id
    target = fake_id.split("_", 1)[0]
    return target if target in reals else fake_id


def read_split(path: Path) -> tuple[list[str], list[str]]:
    """``(real_ids, fake_ids)`` of one split file (pairs format or plain id list)."""
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); expected a list of ids or of [target, source] pairs") from None
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a JSON list of ids or of [target, source] pairs")
    if all(isinstance(x, list) and len(x) == 2 for x in items):
        reals = list(dict.fromkeys(str(v) for pair in items for v in pair))
        fakes = list(dict.fromkeys(f for t, s in items for f in (f"{t}_{s}", f"{s}_{t}")))
        return reals, fakes
    if all(isinstance(x, str) for x in items):
        return list(dict.fromkeys(items)), list(dict.fromkeys(items))
    raise ConfigError(f"{path}: mixes ids and pairs; expected a list of ids or of [target, source] pairs")


@register_adapter("ffpp")
class FFPPAdapter(DatasetAdapter):
    """FF++ (raw / c23 / c40) and the FF++-layout demo."""

    def rows(self) -> list[VideoRow]:
        if not self.cfg.splits:
            raise ConfigError(f"adapter 'ffpp' (root '{self.cfg.root}') needs data.datasets.<name>.splits "
                              "(a folder with train.json, val.json, test.json)")
        self._require(self.root, "dataset root folder")
        split_dir = self._require(Path(self.cfg.splits), "splits folder")
        c = self.cfg.compression
        real_dir = self.root / "original_sequences" / "youtube" / c / "videos"
        self._require(real_dir, "folder of real videos")
        who = read_identities(split_dir / IDENTITIES)
        out: list[VideoRow] = []
        for split in SPLITS:
            reals, fakes = read_split(self._require(split_dir / f"{split}.json", f"split file {split}.json"))
            out += [VideoRow(v, real_dir / f"{v}.mp4", 0, REAL, split, v, who.get(v, "")) for v in reals]
            known = set(reals)
            for method in self.cfg.methods:
                fake_dir = self.root / "manipulated_sequences" / method / c / "videos"
                for f in fakes:
                    if (fake_dir / f"{f}.mp4").is_file():
                        g = fake_group(f, known)
                        out.append(VideoRow(f, fake_dir / f"{f}.mp4", 1, method, split, g, who.get(g, "")))
        return out
