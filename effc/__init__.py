"""effc: an efficiency compiler for ONNX models.

Public API:
    model = effc.load_model("model.onnx", input_shapes={"input": [1, 3, 224, 224]})
    result = effc.optimize(model, "default,int8", effc.Context(calibration=effc.CalibrationData.load("calib.npz")))
    result.ledger.to_json(); result.model.save("out.onnx")
"""

from effc.calib import CalibrationData
from effc.context import Context, Tolerance
from effc.errors import CheckFailed, EffcError, VerificationError
from effc.ir import Model, TensorSpec, load_model, save_model
from effc.metrics import ModelStats, layer_macs, model_stats
from effc.passbase import Pass, PassResult, get_pass, register_pass, registered_passes
from effc.pipeline import DumpAfter, FixedPoint, Instrument, Ledger, PassManager, Pipeline, RunResult, optimize, register_pipeline
from effc.verify import compare_models

__version__ = "0.1.0"

__all__ = [
    "CalibrationData", "Context", "Tolerance", "CheckFailed", "EffcError", "VerificationError", "Model", "TensorSpec",
    "load_model", "save_model", "ModelStats", "layer_macs", "model_stats", "Pass", "PassResult", "get_pass",
    "register_pass", "registered_passes", "DumpAfter", "FixedPoint", "Instrument", "Ledger", "PassManager", "Pipeline",
    "RunResult", "optimize", "register_pipeline", "compare_models", "load_artifact",
]


def load_artifact(path):
    """Load a compiled artifact folder; returns a callable taking inputs by name and returning numpy arrays."""
    from effc.artifact import load_artifact as _load

    return _load(path)
