"""The microcontroller lowering (lowering.py): Relax -> plain C kernels over one static arena, a C project per board.

program.py walks the memory-planned Relax main into kernel calls; arena.py places the intermediates in one arena
(TVM's StaticPlanBlockMemory puts every storage at offset 0); schedule.py leaves no kernel an intermediate buffer;
c_kernels.py emits the kernels through TVM's C codegen with plain signatures; emit.py writes model.h, model.c and
weights.c. board.py (where present) adds the harness, startup code, linker script and Makefile for the board.
"""
