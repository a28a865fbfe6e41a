"""Model files, the flexible Phase A -> Phase B loader, the losses and the timm trunk's weights."""
import dataclasses
import pickle

import numpy as np
import pytest
import torch

from stfmamba.config import PreprocessConfig, STFV8Config, load_params
from stfmamba.models import build_model
from stfmamba.models.checkpoint import load_flexible, load_model_file, save_model_file
from stfmamba.models.losses import ContrastiveHLLLoss, RealHLLLoss, STFV8Loss

SMALL = dict(spatial_backbone="none", trunk_init="none", frame_stream=False, stream_fusion="sum", trunk_stride=4, img_size=32, num_frames=4, stem_dim=8, stage1_dim=8, stage2_dim=16, stage3_dim=16, stage4_dim=16,
             dwt_channels=4, d_state=4, headdim=8)


def small(cfg):
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **SMALL))


def test_save_and_load_model_file_roundtrip(tmp_path):
    cfg = STFV8Config.debug()
    model = build_model(cfg).eval()
    pre = PreprocessConfig(num_segments=3, frames_per_segment=6, crop_size=48, margin=0.3, detect_scale=0.4)
    path = save_model_file(tmp_path / "m" / "phase_a.pt", model, cfg, preprocess=pre, epoch=np.int64(3),
                           val_auc=np.float32(0.75), source=tmp_path / "x")
    assert [p.name for p in path.parent.iterdir()] == ["phase_a.pt"]          # no tmp file left behind
    blob = torch.load(path, weights_only=True)                                # plain: no pickled classes
    assert set(blob) == {"model", "config", "input", "meta"} and blob["config"]["model"]["img_size"] == 32
    stored = {"preprocess": {"crop_size": 48, "margin": 0.3, "detect_scale": 0.4, "num_segments": 3,
                             "frames_per_segment": 6, "min_face_px": 80, "min_frames": 16, "max_faces": 4},
              "model": {"img_size": 32, "num_frames": 4},
              "scoring": {"frame_level": False, "clip_frames": 4, "max_clips_per_video": 2},
              "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channel_order": "RGB"}}
    assert blob["input"] == stored
    loaded, cfg2, meta = load_model_file(path)
    assert cfg2 == cfg and meta == {"epoch": 3, "val_auc": 0.75, "source": str(tmp_path / "x"), "input": stored}
    assert type(meta["epoch"]) is int and type(meta["val_auc"]) is float
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model(x)["logits"])


def test_old_model_file_without_settings_loads_with_a_warning(tmp_path):
    cfg = STFV8Config.debug()
    model = build_model(cfg)
    path = tmp_path / "old.pt"     # the layout written before the input settings were stored
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg), "meta": {"epoch": 1}}, path)
    with pytest.warns(UserWarning, match="does not record the preprocessing"):
        _, cfg2, meta = load_model_file(path)
    assert cfg2 == cfg and meta == {"epoch": 1, "input": None}


def test_a_model_file_of_the_previous_layout_falls_back_with_a_warning(tmp_path):
    """A file with the first ``input`` layout (five preprocess keys, no scoring, no normalize): the
    frame rule of its arch, the fallback params' clips per video, ImageNet mean / std, and one warning
    naming every missing key."""
    from stfmamba.config import EvalConfig, Params
    from stfmamba.models.checkpoint import input_spec
    cfg = STFV8Config.debug()
    path = tmp_path / "v1.pt"
    torch.save({"model": build_model(cfg).state_dict(), "config": dataclasses.asdict(cfg), "meta": {},
                "input": {"preprocess": {"crop_size": 48, "margin": 0.3, "detect_scale": 0.4, "num_segments": 3,
                                         "frames_per_segment": 6}, "model": {"img_size": 32, "num_frames": 4}}}, path)
    _, cfg2, meta = load_model_file(path)
    with pytest.warns(UserWarning, match=r"does not record preprocess\.min_face_px, preprocess\.min_frames, "
                                         r"preprocess\.max_faces, scoring\.frame_level.*normalize"):
        spec = input_spec(meta, cfg2, model_path=path, fallback=Params(eval=EvalConfig(max_clips_per_video=5)))
    assert spec.frame_level is False and spec.clip_frames == 4 and spec.max_clips_per_video == 5
    assert spec.norm.mean == (0.485, 0.456, 0.406) and spec.norm.std == (0.229, 0.224, 0.225)
    assert spec.preprocess_config().max_faces == 4 and spec.preprocess_config().crop_size == 48


def test_model_file_records_the_timm_models_normalisation_and_kind(tmp_path):
    """Mean / std come from timm's pretrained config of the model's timm network: 0.5 / 0.5 for
    tf_efficientnet_lite0 (inputs in [-1, 1]), as a frame classifier and as the video model's trunk;
    a frame model is recorded as one, scored on ``baseline.eval_frames`` single frames."""
    from stfmamba.config import BaselineConfig, Params
    from stfmamba.models.checkpoint import input_spec
    pre = PreprocessConfig(num_segments=2, frames_per_segment=4, crop_size=64)
    params = Params(baseline=BaselineConfig(arch="tf_efficientnet_lite0", img_size=32, eval_frames=7))
    cfg = STFV8Config.frame_baseline(params)
    model = build_model(cfg)
    assert model.data_config["mean"] == (0.5, 0.5, 0.5) and model.data_config["std"] == (0.5, 0.5, 0.5)
    save_model_file(tmp_path / "frame.pt", model, cfg, preprocess=pre, max_clips_per_video=7)
    loaded, cfg2, meta = load_model_file(tmp_path / "frame.pt")
    assert meta["input"]["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3, "channel_order": "RGB"}
    assert meta["input"]["scoring"] == {"frame_level": True, "clip_frames": 1, "max_clips_per_video": 7}
    spec = input_spec(meta, cfg2, model_path="frame.pt")
    assert spec.frame_level and spec.clip_frames == 1 and spec.norm.mean == (0.5,) * 3 and not spec.missing
    video = small(STFV8Config.phase_a())
    video = dataclasses.replace(video, model=dataclasses.replace(video.model, spatial_backbone="tf_efficientnet_lite0"))
    trunk_model = build_model(video)
    assert trunk_model.data_config["mean"] == (0.5, 0.5, 0.5)
    save_model_file(tmp_path / "video.pt", trunk_model, video, preprocess=pre)
    _, _, meta = load_model_file(tmp_path / "video.pt")
    assert meta["input"]["normalize"]["std"] == [0.5] * 3 and meta["input"]["scoring"]["frame_level"] is False
    assert build_model(small(STFV8Config.phase_a())).data_config["mean"] == (0.485, 0.456, 0.406)  # conv stem


def test_recorded_normalisation_wins_over_the_rebuilt_models(tmp_path):
    """If the rebuilt model's data_config disagrees with the recorded mean / std (a timm upgrade),
    loading warns and scoring keeps the recorded values the model was trained with."""
    from stfmamba.models.checkpoint import input_spec
    cfg = STFV8Config.debug()
    path = save_model_file(tmp_path / "m.pt", build_model(cfg), cfg, preprocess=PreprocessConfig())
    blob = torch.load(path, weights_only=True)
    blob["input"]["normalize"] = {"mean": [0.5] * 3, "std": [0.5] * 3, "channel_order": "RGB"}
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="scoring uses the recorded values"):
        _, cfg2, meta = load_model_file(path)
    assert input_spec(meta, cfg2).norm.mean == (0.5, 0.5, 0.5)


def test_model_files_hold_only_plain_values(tmp_path):
    cfg = STFV8Config.debug()
    model = build_model(cfg)
    with pytest.raises(TypeError, match=r"meta\.extra: ndarray is not a plain value"):
        save_model_file(tmp_path / "m.pt", model, cfg, extra=np.zeros(3))
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(TypeError, match="reserved"):
        save_model_file(tmp_path / "m.pt", model, cfg, input={})
    # a pickled object (here a class instance) is refused by weights_only loading, with the file named
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg), "meta": {"cfg": cfg}},
               tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled.pt: not a plain model file"):
        load_model_file(tmp_path / "pickled.pt")
    with pytest.raises(pickle.UnpicklingError):   # what torch itself says, for the record
        torch.load(tmp_path / "pickled.pt", weights_only=True)


def test_load_model_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model_file(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model_file(tmp_path / "bad.pt")


def test_phase_a_to_phase_b_reports_exactly_the_new_modules(tmp_path):
    params = load_params()
    cfg_a = small(STFV8Config.phase_a(params))
    features_b = dataclasses.replace(params.features, use_hydra=True, use_wss=True, use_adaptive_sdim=True)
    cfg_b = small(dataclasses.replace(STFV8Config.phase_b(params), features=features_b))
    model_a = build_model(cfg_a)
    save_model_file(tmp_path / "phase_a.pt", model_a, cfg_a)
    state_a = torch.load(tmp_path / "phase_a.pt", weights_only=False)["model"]
    model_b = build_model(cfg_b)
    report = load_flexible(model_b, state_a)
    keys_a, keys_b = set(state_a), set(model_b.state_dict())
    assert set(report.missing) == keys_b - keys_a and report.mismatched == []
    assert set(report.unexpected) == keys_a - keys_b
    # the new modules are exactly the Hydra mixers, the WSS fusion and the state gates
    assert report.missing and all((".temporal.hydra." in k) or k.startswith("fusion.wss.") for k in report.missing)
    assert all((".temporal.dcconv." in k) or (".temporal.bimamba." in k) or (".temporal.attention." in k)
               or k.startswith("fusion.hll_gate.") for k in report.unexpected)
    # everything else was loaded
    shared = keys_a & keys_b
    assert shared and all(torch.equal(model_b.state_dict()[k], state_a[k]) for k in shared)


def test_load_flexible_reports_shape_mismatch():
    cfg = STFV8Config.debug()
    model = build_model(cfg)
    state = dict(model.state_dict())
    state["head.weight"] = torch.zeros(3, state["head.weight"].shape[1])
    report = load_flexible(build_model(cfg), state)
    assert report.mismatched == ["head.weight"] and report.missing == [] and report.unexpected == []


def _outputs(hll, total, logits=None):
    hll = torch.tensor(hll, requires_grad=True)
    return {"logits": logits if logits is not None else torch.zeros(len(hll), 2), "hll_energy": hll,
            "all_band_energy": torch.tensor(total), "aux_losses": {}}


def test_hll_losses():
    out = _outputs([0.1, 0.5, 0.2, 0.4], [1.0, 1.0, 2.0, 1.0])
    labels = torch.tensor([0, 1, 0, 1])
    # normalised: e = [0.1, 0.5, 0.1, 0.4]; E_fake - E_real = 0.45 - 0.1 = 0.35
    assert ContrastiveHLLLoss(margin=0.5, normalize=True)(out, labels).item() == pytest.approx(0.15)
    assert ContrastiveHLLLoss(margin=0.1, normalize=True)(out, labels).item() == 0.0
    assert RealHLLLoss(normalize=False)(out, labels).item() == pytest.approx(0.15)
    only_real = torch.zeros(4, dtype=torch.long)
    loss = ContrastiveHLLLoss(0.5)(out, only_real)
    assert loss.item() == 0.0 and loss.requires_grad
    assert RealHLLLoss()(out, torch.ones(4, dtype=torch.long)).item() == 0.0


def test_stfv8_loss_parts_and_flags():
    cfg = STFV8Config.debug()
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    out = _outputs([0.1, 0.3], [1.0, 1.0], logits)
    out["aux_losses"] = {"sdim_l1": torch.tensor(0.5)}
    labels = torch.tensor([0, 1])
    total, parts = STFV8Loss(cfg)(out, labels)
    ce = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=cfg.training.label_smoothing)
    hll = max(0.0, cfg.training.hll_margin - 0.2)
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-6)
    assert parts["hll"] == pytest.approx(hll, abs=1e-6)
    assert parts["total"] == pytest.approx(float(ce) + cfg.training.hll_loss_weight * hll
                                           + cfg.training.sdim_l1_weight * 0.5, rel=1e-6)
    mse_cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, use_contrastive_hll=False,
                                                                    use_hll_normalization=False))
    _, parts = STFV8Loss(mse_cfg)(out, labels)
    assert parts["hll"] == pytest.approx(0.1)


def test_timm_trunk_loads_a_local_weights_file_and_errors_clearly(tmp_path):
    timm = pytest.importorskip("timm")
    ref = timm.create_model("convnextv2_atto", pretrained=False)
    for p in ref.parameters():
        torch.nn.init.constant_(p, 0.125)
    weights = tmp_path / "convnextv2_atto.pth"
    torch.save(ref.state_dict(), weights)
    base = STFV8Config.debug()
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, spatial_backbone="convnextv2_atto",
                                                               pretrained=str(weights)))
    model = build_model(cfg)
    trunk = dict(model.stem.net.named_parameters())
    assert "stem.0.weight" in trunk
    for name, p in trunk.items():   # every loaded tensor survives the model's own weight init
        assert torch.all(p == 0.125), name
    out = model(torch.randn(1, 3, 4, 32, 32))
    assert out["logits"].shape == (1, 2)
    missing = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=str(tmp_path / "nope.pth")))
    from stfmamba.models.pretrained import WeightsError
    with pytest.raises(WeightsError, match="nope.pth"):
        build_model(missing)


def test_timm_trunk_hub_without_network_says_what_to_do(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    # no network here either way; offline mode fails fast instead of waiting for connection timeouts
    # (huggingface_hub reads its env vars at import, so set the constants it checks at call time)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))   # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = STFV8Config.debug()
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, spatial_backbone="convnextv2_atto",
                                                               pretrained="hub"))
    with pytest.raises(RuntimeError, match="copy the weights file to this machine"):
        build_model(cfg)
