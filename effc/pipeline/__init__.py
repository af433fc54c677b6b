"""The pass infrastructure: what a pass is (pass_base), pipeline specs and recipes (spec, steps), the context a pass
reads (context), the pass manager (manager) with its instruments (instruments, ledger) and scoped configuration
(config). The passes themselves live in effc.passes, one sub-package per family."""

from effc.pipeline.config import PassConfig, current_config, pass_config
from effc.pipeline.context import Context, Tolerance
from effc.pipeline.instruments import (
           DriftColumn,
           DumpAfter,
           Instrument,
           LatencyColumn,
           ReferenceOutputs,
           VerifyLossless,
)
from effc.pipeline.ledger import Ledger, LedgerRecorder, LedgerRow
from effc.pipeline.manager import PassFailure, PassManager, RunResult, optimize
from effc.pipeline.pass_base import Pass, PassResult, get_pass, register_pass, registered_passes, unregister_pass
from effc.pipeline.spec import format_value
from effc.pipeline.steps import FixedPoint, Pipeline, register_pipeline, registered_pipelines

__all__ = ["PassConfig", "current_config", "pass_config", "Context", "Tolerance", "DriftColumn", "DumpAfter",
           "Instrument", "LatencyColumn", "ReferenceOutputs", "VerifyLossless", "Ledger", "LedgerRecorder",
           "LedgerRow", "PassFailure", "PassManager", "RunResult", "optimize", "Pass", "PassResult", "get_pass",
           "register_pass", "registered_passes", "unregister_pass", "format_value", "FixedPoint", "Pipeline",
           "register_pipeline", "registered_pipelines"]
