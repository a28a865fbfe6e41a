"""The demo stage: FF++ layout, manipulations that change the face only, determinism given the seed."""
import importlib.util
from pathlib import Path

import numpy as np

from stfmamba.config import DatasetConfig
from stfmamba.data.adapters import build_adapter
from stfmamba.data.demo.fakes import DEMO_METHODS
from stfmamba.data.faces import RunTracker
from stfmamba.data.video import read_all

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("data_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
run_demo_stage = _conftest.run_demo_stage
METHODS = ("DemoSwapFlicker", "DemoSwapAE", "DemoReenact", "DemoMouthTex")


def _videos(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.mp4"))


def test_layout_and_adapter(tiny_demo):
    out = Path(tiny_demo.out_dir)
    assert tuple(DEMO_METHODS) == METHODS
    reals = _videos(out / "original_sequences" / "youtube" / "c23" / "videos")
    assert [p.stem for p in reals] == ["franck_000", "franck_028", "franck_032"]   # 1 per split, from splits/demo
    for m in METHODS:
        fakes = _videos(out / "manipulated_sequences" / m / "c23" / "videos")
        assert [p.stem for p in fakes] == ["franck_028", "franck_032"]              # val + test reals only
    rows = build_adapter(DatasetConfig("ffpp", str(out), str(REPO / "splits" / "demo"), "c23", METHODS)).rows()
    present = sorted((r.split, r.method, r.video_id, r.label) for r in rows if r.path.is_file())
    assert ("train", "real", "franck_000", 0) in present and ("test", "DemoMouthTex", "franck_032", 1) in present
    assert len(present) == 3 + 2 * 4
    assert len(rows) == 57 + 2 * 4    # every listed real (missing ones become failed manifest rows)
    cross = (Path(tiny_demo.cross_dir) / "list.csv").read_text().splitlines()
    assert cross[0] == "path,label,method,group,identity" and len(cross) == 1 + 5
    assert "carphone.mp4,0,real,carphone.mp4,carphone" in cross    # group: the real a fake is made from
    assert "lq_DemoReenact_franck_032.mp4,1,DemoReenact,lq_franck_032.mp4,franck" in cross
    # the demo's fakes go with their real (same id) and its person (splits/demo/identities.json)
    fake = next(r for r in rows if r.method == "DemoMouthTex" and r.video_id == "franck_032")
    assert (fake.group, fake.identity) == ("franck_032", "franck")
    cross_rows = build_adapter(DatasetConfig("csv", str(Path(tiny_demo.cross_dir) / "list.csv"))).rows()
    assert {(r.video_id, r.group, r.identity) for r in cross_rows} >= {
        ("carphone_DemoSwapFlicker", "carphone", "carphone"), ("lq_franck_032", "lq_franck_032", "franck")}
    assert all((Path(tiny_demo.cross_dir) / line.split(",")[0]).is_file() for line in cross[1:])


def test_fakes_change_the_face_not_the_background(tiny_demo):
    out = Path(tiny_demo.out_dir)
    real, _ = read_all(out / "original_sequences" / "youtube" / "c23" / "videos" / "franck_032.mp4")
    lm, _ = RunTracker().run(real[:1])
    x0, y0 = lm[0].min(0).astype(int)
    x1, y1 = lm[0].max(0).astype(int)
    for m in METHODS:
        fake, _ = read_all(out / "manipulated_sequences" / m / "c23" / "videos" / "franck_032.mp4")
        assert fake.shape == real.shape
        diff = np.abs(fake.astype(np.int16) - real).mean(-1)        # (T, H, W)
        face = diff[:, y0:y1, x0:x1].mean()
        background = diff[:, :40, :40].mean()                       # top-left corner: blue screen
        assert face > 1.0 and face > 4 * background, (m, face, background)


def test_demo_is_deterministic(tiny_demo, tmp_path):
    """Same seed, fresh process: byte-identical videos and lists."""
    import hashlib
    from dataclasses import replace
    again = replace(tiny_demo, out_dir=str(tmp_path / "raw"), cross_dir=str(tmp_path / "raw_cross"))
    run_demo_stage(again, tmp_path)
    for root_a, root_b in ((tiny_demo.out_dir, again.out_dir), (tiny_demo.cross_dir, again.cross_dir)):
        a, b = Path(root_a), Path(root_b)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) > 5
        for rel in files:
            assert hashlib.md5((a / rel).read_bytes()).digest() == hashlib.md5((b / rel).read_bytes()).digest(), rel
