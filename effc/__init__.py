"""effc: an efficiency compiler for ONNX models.

Public API:
    model = effc.load_model("model.onnx", input_shapes={"input": [1, 3, 224, 224]})
    result = effc.optimize(model, "default,int8", effc.Context(calibration=effc.CalibrationData.load("calib.npz")))
    result.ledger.to_json(); result.model.save("out.onnx")
    artifact = effc.compile("model.onnx", "x86", pipeline="default,int8", ctx=ctx, out="model.x86.effc")
    outputs = artifact(input=array)       # or effc.load_artifact("model.x86.effc")
    effc.get_target("arm", cpu="cortex-a76").isa   # targets are records: effc.register_target(effc.Target(...))
    front = effc.search("model.onnx", calib="calib.npz", eval="test.npz", budget="accuracy_drop<=0.01",
                        objectives=("latency", "size"), target="x86", trials=40, out="front/")
"""

from effc.artifact import Artifact, load_artifact
from effc.autosearch import Front, search
from effc.calib import CalibrationData
from effc.compiler import TuneBudget, compile, tune
from effc.errors import CheckFailed, EffcError, VerificationError
from effc.ir import Model, TensorSpec, load_model, save_model
from effc.ir.metrics import ModelStats, layer_macs, model_stats
from effc.pipeline import (
                           Context,
                           DumpAfter,
                           FixedPoint,
                           Instrument,
                           Ledger,
                           Pass,
                           PassManager,
                           PassResult,
                           Pipeline,
                           RunResult,
                           Tolerance,
                           get_pass,
                           optimize,
                           pass_config,
                           register_pass,
                           register_pipeline,
                           registered_passes,
)
from effc.targets import ISA, Memory, Target, get_target, register_target, registered_targets
from effc.verify import compare_models

__version__ = "0.1.0"

__all__ = [
    "Artifact", "load_artifact", "Front", "search", "CalibrationData", "TuneBudget", "compile", "tune", "CheckFailed", "EffcError",
    "VerificationError", "Model", "TensorSpec", "load_model", "save_model", "ModelStats", "layer_macs", "model_stats",
    "Context", "DumpAfter", "FixedPoint", "Instrument", "Ledger", "Pass", "PassManager", "PassResult", "Pipeline",
    "RunResult", "Tolerance", "get_pass", "optimize", "pass_config", "register_pass", "register_pipeline",
    "registered_passes", "ISA", "Memory", "Target", "get_target", "register_target", "registered_targets",
    "compare_models",
]
