"""Cross-dataset adapters, each on a tiny tree laid out like the real dataset (real mp4 files)."""
import json
import shutil

import numpy as np
import pytest

from stfmamba.config import ConfigError, DatasetConfig
from stfmamba.data.adapters import build_adapter
from stfmamba.data.video import write_video


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "v.mp4"
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 32, 32, 3), dtype=np.uint8)
    write_video(path, frames, fps=25)
    return path


def _put(mp4, root, *rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mp4, root / rel)


def _summary(rows):
    return sorted((r.video_id, r.label, r.method, r.split) for r in rows)


def test_celebdf_flag_one_means_real(mp4, tmp_path):
    _put(mp4, tmp_path, "Celeb-real/id0_0000.mp4", "YouTube-real/00170.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
         "Celeb-synthesis/id2_id3_0001.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n"
        "0 Celeb-synthesis/id2_id3_0001.mp4\n")
    rows = build_adapter(DatasetConfig("celebdf", str(tmp_path))).rows()
    assert _summary(rows) == [("00170", 0, "real", "test"), ("id0_0000", 0, "real", "test"),
                              ("id0_id1_0000", 1, "Celeb-synthesis", "test"),
                              ("id2_id3_0001", 1, "Celeb-synthesis", "test")]
    assert all(r.path.is_file() for r in rows)
    # a fake id<t>_id<s>_<clip> keeps the target real id<t>_<clip>'s frames: its group and person
    assert sorted((r.video_id, r.group, r.identity) for r in rows) == [
        ("00170", "00170", ""), ("id0_0000", "id0_0000", "id0"), ("id0_id1_0000", "id0_0000", "id0"),
        ("id2_id3_0001", "id2_0001", "id2")]
    (tmp_path / "List_of_testing_videos.txt").write_text("real YouTube-real/00170.mp4\n")
    with pytest.raises(ConfigError, match="List_of_testing_videos.txt:1"):
        build_adapter(DatasetConfig("celebdf", str(tmp_path))).rows()


def test_dfdc_labels_csv(mp4, tmp_path):
    _put(mp4, tmp_path, "aalscayrfi.mp4", "aassnaulhq.mp4", "abhggqdift.mp4")
    (tmp_path / "labels.csv").write_text("filename,label\naalscayrfi.mp4,1\naassnaulhq.mp4,0\nabhggqdift.mp4,1\n")
    rows = build_adapter(DatasetConfig("dfdc", str(tmp_path))).rows()
    assert _summary(rows) == [("aalscayrfi", 1, "DFDC", "test"), ("aassnaulhq", 0, "real", "test"),
                              ("abhggqdift", 1, "DFDC", "test")]
    assert all(r.path.is_file() for r in rows)


def test_dfdcp_dataset_json_test_set_only(mp4, tmp_path):
    entries = {
        "original_videos/643049/1955-1984.mp4": {"label": "real", "set": "test"},
        "method_A/643049/643049_A/1955-1984.mp4": {"label": "fake", "set": "test", "target_id": "643049"},
        "method_B/643049/643049_B/1955-1984.mp4": {"label": "fake", "set": "test"},
        "original_videos/111/0-300.mp4": {"label": "real", "set": "train"},
    }
    _put(mp4, tmp_path, *entries)
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    rows = build_adapter(DatasetConfig("dfdcp", str(tmp_path))).rows()
    assert _summary(rows) == [
        ("method_A__643049__643049_A__1955-1984", 1, "method_A", "test"),
        ("method_B__643049__643049_B__1955-1984", 1, "method_B", "test"),
        ("original_videos__643049__1955-1984", 0, "real", "test")]
    assert all(r.path.is_file() for r in rows)


def test_dfd_ffpp_deepfakedetection_folders(mp4, tmp_path):
    _put(mp4, tmp_path, "original_sequences/actors/c23/videos/01__exit_phone_room.mp4",
         "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4",
         "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__exit_phone_room__YVGY8LOK.mp4")
    rows = build_adapter(DatasetConfig("dfd", str(tmp_path), compression="c23")).rows()
    assert _summary(rows) == [("01_02__exit_phone_room__YVGY8LOK", 1, "DeepFakeDetection", "test"),
                              ("01__exit_phone_room", 0, "real", "test")]
    assert all("c23" in r.path.parts for r in rows)
    with pytest.raises(ConfigError, match="DFD real videos folder"):
        build_adapter(DatasetConfig("dfd", str(tmp_path), compression="raw")).rows()


def test_ffiw_source_target(mp4, tmp_path):
    _put(mp4, tmp_path, "source/val/00001.mp4", "target/val/00001.mp4", "source/train/00002.mp4",
         "target/train/00002.mp4")
    rows = build_adapter(DatasetConfig("ffiw", str(tmp_path))).rows()
    assert _summary(rows) == [("00001", 0, "real", "test"), ("00001", 1, "FFIW", "test"),
                              ("00002", 0, "real", "train"), ("00002", 1, "FFIW", "train")]
    _put(mp4, tmp_path, "source/test/00003.mp4", "target/test/00003.mp4")  # with a test folder, val stays val
    splits = {(r.video_id, r.label): r.split for r in build_adapter(DatasetConfig("ffiw", str(tmp_path))).rows()}
    assert splits[("00001", 0)] == "val" and splits[("00003", 1)] == "test"


def test_dfdcp_identity_is_the_actor(mp4, tmp_path):
    entries = {"original_videos/643049/1955-1984.mp4": {"label": "real", "set": "test"},
               "method_A/643049/643049_A/1955-1984.mp4": {"label": "fake", "set": "test"}}
    _put(mp4, tmp_path, *entries)
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    rows = build_adapter(DatasetConfig("dfdcp", str(tmp_path))).rows()
    assert {r.identity for r in rows} == {"643049"}
    assert {(r.label, r.group) for r in rows} == {(0, "original_videos__643049__1955-1984"), (1, "")}


def _ffpp(mp4, tmp_path, test_split, reals, fakes, identities=None):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "test.json").write_text(json.dumps(test_split))
    for s in ("train", "val"):
        (splits / f"{s}.json").write_text("[]")
    if identities is not None:
        (splits / "identities.json").write_text(json.dumps(identities))
    _put(mp4, tmp_path / "ff", *[f"original_sequences/youtube/c23/videos/{v}.mp4" for v in reals],
         *[f"manipulated_sequences/M/c23/videos/{v}.mp4" for v in fakes])
    return build_adapter(DatasetConfig("ffpp", str(tmp_path / "ff"), str(splits), "c23", ("M",))).rows()


def test_ffpp_fake_goes_with_its_target_real(mp4, tmp_path):
    # FF++ pairs: <target>_<source> keeps the target's frames, so it is grouped with the target real
    rows = _ffpp(mp4, tmp_path, [["000", "003"]], ["000", "003"], ["000_003", "003_000"])
    assert sorted((r.video_id, r.label, r.group, r.identity) for r in rows) == [
        ("000", 0, "000", ""), ("000_003", 1, "000", ""), ("003", 0, "003", ""), ("003_000", 1, "003", "")]


def test_demo_layout_groups_and_identities(mp4, tmp_path):
    rows = _ffpp(mp4, tmp_path, ["franck_032", "cap13_002"], ["franck_032", "cap13_002"], ["franck_032"],
                 identities={"franck_032": "franck", "cap13_002": "cap"})
    assert sorted((r.video_id, r.label, r.group, r.identity) for r in rows) == [
        ("cap13_002", 0, "cap13_002", "cap"), ("franck_032", 0, "franck_032", "franck"),
        ("franck_032", 1, "franck_032", "franck")]
    with pytest.raises(ConfigError, match="identities.json"):
        (tmp_path / "splits" / "identities.json").write_text('["franck"]')
        build_adapter(DatasetConfig("ffpp", str(tmp_path / "ff"), str(tmp_path / "splits"), "c23", ("M",))).rows()


def test_committed_demo_identities_match_the_sources():
    from pathlib import Path
    from stfmamba.data.demo.cut import demo_clips
    repo = Path(__file__).resolve().parents[2]
    who = json.loads((repo / "splits" / "demo" / "identities.json").read_text())
    assert who == {c.video_id: c.person for c in demo_clips()}
    test = json.loads((repo / "splits" / "demo" / "test.json").read_text())
    assert sorted({who[v] for v in test}) == ["cap", "franck"]     # the README's "2 people, 12 source videos"


def test_csv_group_and_identity_columns(mp4, tmp_path):
    _put(mp4, tmp_path, "a.mp4", "b.mp4", "sub/a_fake.mp4", "c.mp4")
    (tmp_path / "list.csv").write_text("path,label,method,group,identity\na.mp4,0,real,,ann\nb.mp4,0,real,,bob\n"
                                       "sub/a_fake.mp4,1,X,a.mp4,ann\n")
    rows = build_adapter(DatasetConfig("csv", str(tmp_path / "list.csv"))).rows()
    assert sorted((r.video_id, r.group, r.identity) for r in rows) == [
        ("a", "a", "ann"), ("b", "b", "bob"), ("sub__a_fake", "a", "ann")]
    (tmp_path / "plain.csv").write_text("path,label\nc.mp4,0\nsub/a_fake.mp4,1\n")   # old format: still read
    rows = build_adapter(DatasetConfig("csv", str(tmp_path / "plain.csv"))).rows()
    assert sorted((r.video_id, r.group, r.identity) for r in rows) == [("c", "c", ""), ("sub__a_fake", "", "")]


def test_missing_root_names_the_file(tmp_path):
    for name, what in [("celebdf", "List_of_testing_videos.txt"), ("dfdc", "labels.csv"), ("dfdcp", "dataset.json"),
                       ("ffiw", "source/ folder")]:
        with pytest.raises(ConfigError, match=what):
            build_adapter(DatasetConfig(name, str(tmp_path / "nowhere"))).rows()
