"""Dataset adapters; importing this package registers all of them (see ``base``)."""
import importlib
import pkgutil

from stfmamba.data.adapters.base import ADAPTERS, REAL, DatasetAdapter, VideoRow, build_adapter, register_adapter

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ADAPTERS", "REAL", "DatasetAdapter", "VideoRow", "build_adapter", "register_adapter"]
