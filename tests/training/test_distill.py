"""Distillation from the frame baseline (``training.distill_from``): the similarity loss, the frozen
teacher read from a real frame-model file, and a training run that logs the term and leaves the
teacher and the model file's layout as they were."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from stfmamba.config import STFV8Config
from stfmamba.models import build_model
from stfmamba.models.checkpoint import load_model_file, save_model_file
from stfmamba.training import TrainPaths, train
from stfmamba.training.distill import FrameTeacher, similarity_loss

from trainkit import tiny_params


def test_similarity_loss_sees_structure_not_scale_or_width():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(12, 40, generator=g)
    same = torch.cat([3.0 * t, torch.zeros(12, 8)], dim=1)           # other width and scale, same cosines
    assert similarity_loss(same, t) < 1e-10
    shuffled = t[torch.randperm(12, generator=g)]
    assert similarity_loss(shuffled, t) > 0.01                       # which row is which matters
    s = torch.randn(12, 6, generator=g, requires_grad=True)
    first = float(similarity_loss(s, t).detach())
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        similarity_loss(s, t).backward()
        opt.step()
    assert float(similarity_loss(s, t).detach()) < 0.5 * first                 # a 6-d student can follow a 40-d teacher
    with pytest.raises(ValueError, match="same rows"):
        similarity_loss(t[:5], t)


def _frame_file(params, path):
    p = dataclasses.replace(params, baseline=dataclasses.replace(params.baseline, arch="resnet18", pretrained="none",
                                                                 img_size=24))
    cfg = STFV8Config.frame_baseline(p)
    torch.manual_seed(1)
    return save_model_file(path, build_model(cfg), cfg, p.preprocess, phase="frame"), p


def test_teacher_reads_a_frame_model_file_at_its_own_size(tiny_dataset, tmp_path):
    p = tiny_params(tiny_dataset)
    frame_file, p = _frame_file(p, tmp_path / "frame.pt")
    teacher = FrameTeacher(frame_file)
    assert teacher.img_size == 24 and teacher.arch == "resnet18" and len(teacher.sha256) == 64
    clips = torch.randint(0, 256, (3, 3, 4, 32, 32), dtype=torch.uint8)   # video model size: 32 px
    f = teacher.features(clips)
    assert f.shape == (3, 4, 512) and not f.requires_grad
    model, _, _ = load_model_file(frame_file)
    one = torch.nn.functional.interpolate(clips[:, :, 1].float(), size=(24, 24), mode="area").round()
    x = teacher.norm(one.unsqueeze(2)).squeeze(2)
    want = model.net.forward_head(model.net.forward_features(x), pre_logits=True)
    assert torch.allclose(f[:, 1], want, atol=1e-4)                  # frame by frame, the teacher's own input
    assert not torch.allclose(f[:, 0], f[:, 1])

    with pytest.raises(FileNotFoundError, match=r"training.distill_from=.*dvc repro train_frame"):
        FrameTeacher(tmp_path / "missing.pt")
    vcfg = STFV8Config.phase_a(p)
    video_file = save_model_file(tmp_path / "video.pt", build_model(vcfg), vcfg, p.preprocess, phase="a")
    with pytest.raises(ValueError, match="must be a frame baseline"):
        FrameTeacher(video_file)


def test_training_with_a_teacher_logs_the_term_and_keeps_the_file_layout(tiny_dataset, tmp_path):
    p = tiny_params(tiny_dataset, epochs_phase_a=2, checkpoint_dir=str(tmp_path / "ckpt"))
    frame_file, _ = _frame_file(p, tmp_path / "frame.pt")
    before = frame_file.read_bytes()
    pd = dataclasses.replace(p, training=dataclasses.replace(p.training, distill_from=str(frame_file),
                                                             distill_weight=5.0))
    paths = TrainPaths.for_phase(pd, "a", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    train(pd, "a", paths)
    live = tmp_path / "live"
    logged = {f.name for f in live.rglob("*.tsv")}
    assert "loss_distill.tsv" in logged
    values = [float(ln.split("\t")[-1]) for ln in next(live.rglob("loss_distill.tsv")).read_text().splitlines()[1:]]
    assert values and all(v > 0 for v in values)
    assert frame_file.read_bytes() == before                          # the teacher is frozen
    model, cfg, meta = load_model_file(paths.model_out)
    assert meta["teacher"]["sha256"] == hashlib.sha256(before).hexdigest() and meta["teacher"]["arch"] == "resnet18"
    assert json.loads(paths.metrics_out.read_text())["teacher_sha256"] == meta["teacher"]["sha256"]
    plain = build_model(STFV8Config.phase_a(p))
    assert set(model.state_dict()) == set(plain.state_dict())       # no extra layers: the file layout is unchanged
    assert cfg.training.distill_from == str(frame_file)
