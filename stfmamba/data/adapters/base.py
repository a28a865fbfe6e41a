"""Dataset adapters: a dataset root folder -> rows ``(video_id, path, label, method, split)``.

Each adapter is registered by name (``@register_adapter("ffpp")``) and built from a
:class:`~stfmamba.config.DatasetConfig`; ``params.yaml`` picks it with ``data.datasets.<name>.adapter``.
Labels: 0 = real, 1 = fake (whatever the dataset's own convention). ``method`` is ``"real"`` for
real videos, otherwise the manipulation's name. ``split`` is ``train`` / ``val`` / ``test``
(datasets used only for testing put everything in ``test``).

Two optional fields say which videos are not independent of each other, for the cluster bootstrap
of the evaluation (:func:`stfmamba.evaluation.metrics.cluster_ids`):

* ``group`` — the *source video*: a real's own id, and for a fake the id of the real whose frames
  it is made from (FF++ ``<target>_<source>``: the target, whose face and scene are kept; the
  demo: the real of the same id). Empty: derived from the ids at evaluation time.
* ``identity`` — the person shown, where the dataset says it (the demo's ``identities.json``, a
  ``identity`` column of a CSV list, DFDCP's actor folder); a fake gets its target's person.
  Empty: unknown (FF++ has no identity labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stfmamba.config import ConfigError, DatasetConfig

REAL = "real"


@dataclass(frozen=True)
class VideoRow:
    video_id: str   # unique within the dataset (also names the npz)
    path: Path      # the video file
    label: int      # 0 real, 1 fake
    method: str     # "real" or the manipulation name
    split: str      # train | val | test
    group: str = ""      # source video (the real a fake is made from); "" = derive from the ids
    identity: str = ""   # person shown (the target's, for a fake); "" = unknown


class DatasetAdapter:
    """Base class: subclasses implement :meth:`rows`."""

    def __init__(self, cfg: DatasetConfig):
        self.cfg = cfg
        self.root = Path(cfg.root)

    def rows(self) -> list[VideoRow]:
        raise NotImplementedError

    def _require(self, path: Path, what: str) -> Path:
        """Return ``path`` or raise a ConfigError saying what was expected there."""
        if not path.exists():
            raise ConfigError(f"{path}: {what} not found (adapter '{self.cfg.adapter}', root '{self.cfg.root}'); "
                              "check data.datasets.<name>.root in params.yaml")
        return path


ADAPTERS: dict[str, type[DatasetAdapter]] = {}


def register_adapter(name: str) -> Callable[[type[DatasetAdapter]], type[DatasetAdapter]]:
    def deco(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
        ADAPTERS[name] = cls
        return cls
    return deco


def build_adapter(cfg: DatasetConfig) -> DatasetAdapter:
    """The adapter named by ``cfg.adapter`` (importing the adapter modules registers them)."""
    from stfmamba.data import adapters as _  # noqa: F401  (registers every adapter)
    if cfg.adapter not in ADAPTERS:
        raise ConfigError(f"adapter '{cfg.adapter}' is not registered (known: {sorted(ADAPTERS)})")
    return ADAPTERS[cfg.adapter](cfg)
