"""The CUDA lowering (lowering.py): dlight GPU rules, kernels compiled by nvcc and embedded (build.py, stub.py)."""
