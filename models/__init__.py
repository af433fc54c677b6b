"""Reference ONNX models for effc's tests and benchmarks; see models/README.md and models.zoo."""
