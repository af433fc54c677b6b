"""The microcontroller lowering (work in progress): Relax -> plain C kernels over one static arena.

arena.py: effc's own memory plan (liveness over the call sequence, greedy-by-size placement), because TVM's
StaticPlanBlockMemory reuses storages but always at offset 0. The `lowering` module (C emission, the C project,
effc.json) is not written yet, so `--target cortex-m*` is refused with "no TVM lowering named 'mcu'".
"""
