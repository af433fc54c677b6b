"""The IR: an onnx-graphsurgeon graph plus model metadata (model.py), its structure check (structure.py), size and
MAC counts (metrics.py), graph helpers passes share (patterns.py) and constant folding of weights (folding.py)."""

from effc.ir.model import CANONICAL_OPSET, OLDEST_OPSET, Model, TensorSpec, load_model, save_model

__all__ = ["CANONICAL_OPSET", "OLDEST_OPSET", "Model", "TensorSpec", "load_model", "save_model"]
