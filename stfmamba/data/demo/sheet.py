"""Eye check of the demo dataset: face tiles of a real clip next to each of its demo fakes, one PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stfmamba.config import DemoConfig
from stfmamba.data.demo.fakes import DEMO_METHODS, track_landmarks
from stfmamba.data.demo.geometry import landmark_box
from stfmamba.data.video import read_all
from stfmamba.io import atomic_path

__all__ = ["contact_sheet"]


def contact_sheet(cfg: DemoConfig, path: str | Path, ids: tuple[str, ...] = ("franck_032", "cap13_003"),
                  frames: tuple[int, ...] = (0, 60), tile: int = 160) -> Path:
    """Eye check: face regions of real vs each demo manipulation (and the cross demo), as one PNG.

    Rows: each id x frame; columns: real, then :data:`DEMO_METHODS`. A last row shows the cross
    demo (carphone real / swapped, a low-quality real and fake). Written atomically.
    """
    out = Path(cfg.out_dir)
    cols = ["real", *DEMO_METHODS]

    def video(method: str, vid: str) -> np.ndarray:
        sub = ("original_sequences/youtube" if method == "real" else f"manipulated_sequences/{method}")
        return read_all(out / sub / "c23" / "videos" / f"{vid}.mp4")[0]

    def face_tile(frame: np.ndarray, lm: np.ndarray, label: str) -> np.ndarray:
        x0, y0, x1, y1 = landmark_box(lm, frame.shape, 0.35)
        side = max(x1 - x0, y1 - y0)
        t = cv2.resize(frame[y0:y0 + side, x0:x0 + side], (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        return t

    rows = []
    for vid in ids:
        vids = {m: video(m, vid) for m in cols}
        for f in frames:
            lm = track_landmarks(vids["real"][f:f + 1])[0]
            rows.append(np.concatenate([face_tile(vids[m][f], lm, f"{m} {vid} #{f}") for m in cols], 1))
    cross = Path(cfg.cross_dir)
    names = ["carphone.mp4", "carphone_DemoSwapFlicker.mp4", f"lq_{ids[0]}.mp4", f"lq_DemoSwapFlicker_{ids[0]}.mp4"]
    tiles = []
    for name in names:
        if (cross / name).is_file():
            v = read_all(cross / name, max_frames=1)[0][0]
            big = cv2.resize(v, (v.shape[1] * 2, v.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
            tiles.append(face_tile(big, track_landmarks(big[None], detect_scale=1.0)[0], f"cross {name[:-4]}"))
    while len(tiles) < len(cols):
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    rows.append(np.concatenate(tiles, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: OpenCV could not write the contact sheet")
    return path
