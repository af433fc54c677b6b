"""The CPU lowering (x86, AArch64): blocked layouts, effc's kernels with pre-packed weights, dlight-style rules."""
