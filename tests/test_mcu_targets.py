"""The Cortex-M target records: listed, round-tripping through effc.json, memory of a real board, qemu boards that
exist in this machine's qemu-system-arm."""

import shutil
import subprocess

import pytest

from effc.errors import EffcError
from effc.targets import Target, get_target, registered_targets
from effc.targets.mcu import MCU_BOARDS, register_mcu_targets

MCU_NAMES = ["cortex-m4", "cortex-m7", "cortex-m55", "cortex-m0plus"]


def test_registered_on_import_and_registering_again_changes_nothing():
    before = registered_targets()
    assert set(MCU_NAMES) <= set(before)
    register_mcu_targets()
    assert registered_targets() == before


def test_mcu_records_carry_board_memory():
    names = registered_targets()
    for name in MCU_NAMES:
        assert name in names
        record = get_target(name)
        assert record.lowering == "mcu" and record.backend == "tvm"
        assert record.memory is not None and record.memory.flash_bytes > 0 and record.memory.ram_bytes > 0
        assert Target.from_json(record.to_json()) == record
    assert get_target("cortex-m4").memory.flash_bytes == 1024 * 1024
    assert get_target("cortex-m4").memory.ram_bytes == 320 * 1024
    assert get_target("cortex-m7").memory.ram_bytes == 1024 * 1024


def test_fpu_and_dsp_follow_the_core():
    assert get_target("cortex-m4").isa.fpu == "fpv4-sp-d16"
    assert get_target("cortex-m7").isa.fpu == "fpv5-sp-d16"
    assert "smlad" in get_target("cortex-m4").isa.int8_dot
    m0 = get_target("cortex-m0plus")
    assert m0.isa.fpu is None and m0.isa.int8_dot == () and m0.emulator is None
    assert "-mfloat-abi=soft" in MCU_BOARDS["cortex-m0plus"].gcc_flags


def test_a_board_refuses_another_cpu():
    with pytest.raises(EffcError, match="cortex-m4"):
        get_target("cortex-m4", "cortex-m7")


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_qemu_has_the_named_boards():
    machines = subprocess.run(["qemu-system-arm", "-M", "help"], capture_output=True, text=True, check=True).stdout
    for name in MCU_NAMES:
        board = MCU_BOARDS[name].qemu_machine
        if board is not None:
            assert f"\n{board} " in machines, board
