"""Resume files: plain (``weights_only``) loading, and which config changes discard a resume."""
from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stfmamba.training import TrainPaths, train
from stfmamba.training.state import (RESUME_FORMAT, ResumeFormatError, config_changes, ignored_keys, load_resume,
                                     rng_state, set_rng_state)

from trainkit import tiny_params

LOGGER = "stfmamba.training.trainer"


def _run(params, out: Path):
    paths = TrainPaths.for_phase(params, "a", out / "models", out / "metrics", out / "live")
    return train(params, "a", paths), paths


@pytest.fixture(scope="module")
def finished(tiny_dataset, tmp_path_factory) -> tuple[Path, int]:
    """A finished one-epoch Phase A run: (its folder, its step count); tests copy its checkpoint."""
    out = tmp_path_factory.mktemp("finished")
    m, _ = _run(tiny_params(tiny_dataset, checkpoint_dir=str(out / "ckpt"), clips_per_video=1, epochs_phase_a=1), out)
    return out, m["steps"]


def _copy(finished: tuple[Path, int], tmp_path: Path) -> Path:
    shutil.copytree(finished[0] / "ckpt", tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_rng_state_round_trip_is_plain():
    random.gauss(0, 1)
    np.random.randn()                      # a cached gaussian in both generators
    state = rng_state()
    want = (random.gauss(0, 1), random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    got = (random.gauss(0, 1), random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    assert want[:4] == got[:4] and torch.equal(want[4], got[4])
    flat = [state["python"]["key"], state["numpy"]["key"], state["torch"]]
    assert all(isinstance(t, torch.Tensor) for t in flat)


def test_config_changes_names_keys_and_ignores_run_only_and_other_phase():
    old = {"training": {"lr": 3e-4, "lr_phase_b": 1e-4, "epochs_phase_a": 2, "epochs_phase_b": 1, "num_workers": 4,
                        "checkpoint_every": 50, "checkpoint_dir": "a", "durable_copy": "none"}, "model": {"d_state": 4}}
    new = {"training": {"lr": 1e-3, "lr_phase_b": 5e-4, "epochs_phase_a": 2, "epochs_phase_b": 3, "num_workers": 0,
                        "checkpoint_every": 5, "checkpoint_dir": "b", "durable_copy": "/vol"}, "model": {"d_state": 4}}
    assert config_changes(old, new, ignored_keys("a")) == ["training.lr changed 0.0003 -> 0.001"]
    assert config_changes(old, new, ignored_keys("b")) == ["training.epochs_phase_b changed 1 -> 3",
                                                           "training.lr_phase_b changed 0.0001 -> 0.0005"]
    assert config_changes(old, {**new, "model": {}}, ignored_keys("a"))[0] == "model.d_state changed 4 -> <absent>"


def test_resume_file_loads_with_weights_only(finished):
    ck = torch.load(finished[0] / "ckpt" / "phase_a" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["format"] == RESUME_FORMAT and ck["step"] == finished[1]
    assert isinstance(ck["rng"]["numpy"]["key"], torch.Tensor) and isinstance(ck["rng"]["python"]["key"], torch.Tensor)
    assert load_resume(finished[0] / "ckpt" / "phase_a" / "last.pt")["trainer"]["step"] == finished[1]


def test_resume_kept_across_workers_cadence_and_phase_b_settings(tiny_dataset, finished, tmp_path, caplog):
    ckpt = _copy(finished, tmp_path)
    params = tiny_params(tiny_dataset, checkpoint_dir=str(ckpt), clips_per_video=1, epochs_phase_a=1,
                         num_workers=1, checkpoint_every=7, lr_phase_b=0.123, epochs_phase_b=9)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        m, _ = _run(params, tmp_path)
    assert m["resumed_from_step"] == finished[1] == m["steps"]
    assert "resume discarded" not in caplog.text


def test_resume_discarded_on_lr_change_names_the_key(tiny_dataset, finished, tmp_path, caplog):
    ckpt = _copy(finished, tmp_path)
    params = tiny_params(tiny_dataset, checkpoint_dir=str(ckpt), clips_per_video=1, epochs_phase_a=1, lr=2e-3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        m, _ = _run(params, tmp_path)
    assert m["resumed_from_step"] is None and m["steps"] == finished[1]
    assert "resume discarded: training.lr changed 0.001 -> 0.002" in caplog.text
    assert "num_workers" not in caplog.text


def test_old_pickled_resume_file_is_discarded_with_a_warning(tiny_dataset, finished, tmp_path, caplog):
    ckpt = _copy(finished, tmp_path)
    last = ckpt / "phase_a" / "last.pt"
    ck = torch.load(last, weights_only=True)
    del ck["format"]   # the format before this one: pickled python / numpy RNG states
    ck["rng"] = ck["rng_per_rank"][0] = {"python": random.getstate(), "numpy": np.random.get_state(),
                                         "torch": torch.get_rng_state()}
    torch.save(ck, last)
    _refused_then_fresh(ckpt, tiny_dataset, finished, tmp_path, caplog, "older format", "older format")


def _refused_then_fresh(ckpt, tiny_dataset, finished, tmp_path, caplog, error: str, warning: str) -> None:
    """``load_resume`` refuses the doctored file with ``error``; the trainer logs ``warning``,
    starts the phase afresh and overwrites the file in the current format."""
    last = ckpt / "phase_a" / "last.pt"
    with pytest.raises(ResumeFormatError, match=error):
        load_resume(last)
    params = tiny_params(tiny_dataset, checkpoint_dir=str(ckpt), clips_per_video=1, epochs_phase_a=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        m, _ = _run(params, tmp_path)
    assert m["resumed_from_step"] is None and m["steps"] == finished[1]
    assert "resume discarded" in caplog.text and warning in caplog.text
    assert torch.load(last, weights_only=True)["format"] == RESUME_FORMAT   # overwritten by the new run


def test_format_2_resume_file_is_refused_with_the_fix(tiny_dataset, finished, tmp_path, caplog):
    """A resume file of format 2 (PyTorch LambdaLR state, decay group first) cannot continue under
    timm's scheduler: it is refused with a message that names both formats and says to delete the
    checkpoint folder; the trainer starts the phase afresh and overwrites it."""
    ckpt = _copy(finished, tmp_path)
    last = ckpt / "phase_a" / "last.pt"
    ck = torch.load(last, weights_only=True)
    ck["format"], ck["scheduler"] = 2, {"base_lrs": [1e-3, 1e-3], "last_epoch": finished[1], "_step_count": 1}
    torch.save(ck, last)
    _refused_then_fresh(ckpt, tiny_dataset, finished, tmp_path, caplog,
                        rf"format 2 \(.*LambdaLR.*\), this version reads format "
                        rf"{RESUME_FORMAT} \(.*CosineLRScheduler.*\).*delete .*phase_a", "format 2")
