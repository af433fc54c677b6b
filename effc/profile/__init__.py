"""`effc profile`: latency, per-kernel times mapped to ONNX nodes, memory, ONNX Runtime beside it; HTML report."""
