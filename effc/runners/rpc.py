"""Running an artifact on a board through TVM RPC (`python -m tvm.exec.rpc_server` on the board)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effc.errors import EffcError
from effc.runners.base import Runner, Timings


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EffcError(f"--rpc {address!r}: expected HOST:PORT such as 192.168.1.20:9090")
    return host, int(port)


class RPCRunner(Runner):
    """Uploads the library to the RPC server, loads it there and runs the Relax VM on the remote CPU.
    Parameters are copied to the board once. Kernel timing is not available over RPC (end-to-end only)."""

    def __init__(self, folder: Path, meta: dict, address: str):
        from tvm import rpc

        from effc.runners.vm_runner import VMRunner

        host, port = parse_address(address)
        try:
            self.session = rpc.connect(host, port, session_timeout=600)
        except Exception as exc:  # tvm raises its own error type with a long message
            raise EffcError(f"cannot reach the TVM RPC server at {address}: {str(exc).splitlines()[0][:200]}") from None
        self.where = f"rpc://{address}"
        self.session.upload(str(Path(folder) / meta["library"]))
        remote_lib = self.session.load_module(meta["library"])
        self.vm = VMRunner(str(folder), meta["library"], meta["params"], device=self.session.cpu(),
                                              remote_lib=remote_lib)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.vm(inputs)

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        outputs = self.vm(inputs)
        # Includes the network round trip of each call; the inputs are sent once. No instrument hook over RPC.
        return Timings(outputs, self.vm.profile(inputs, repeat, warmup, kernels=False)["latency_s"])
