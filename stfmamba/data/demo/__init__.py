"""The embedded demo dataset: real clips cut from the committed media plus four demo manipulations.

* :mod:`~stfmamba.data.demo.cut` — the source videos, their clips and splits, and
  :func:`~stfmamba.data.demo.cut.build_demo`, which writes the FF++-layout dataset and the
  cross-dataset demo (the stage's I/O).
* :mod:`~stfmamba.data.demo.fakes` — the four manipulations (registry
  :data:`~stfmamba.data.demo.fakes.DEMO_METHODS`), the donor stills and the landmark tracking
  they run on.
* :mod:`~stfmamba.data.demo.geometry` — the pure image helpers the manipulations share
  (piecewise-affine warp, colour transfer, face-region masks).
* :mod:`~stfmamba.data.demo.sheet` — the eye-check contact sheet of a built demo.

Deterministic given ``demo.seed``: all random choices come from one ``numpy`` generator in
``build_demo`` and the H.264 encoder runs single-threaded.
"""
