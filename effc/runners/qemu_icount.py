"""Counting the instructions an aarch64 program executes under qemu-aarch64 (user mode), without perf.

qemu user mode has no `-icount`, and Debian's qemu-user ships no plugins, but its `-plugin` loader works: this
builds a tiny TCG plugin with the host C compiler, once, into the cache. It adds each translated block's
instruction count inline as the block runs, and notes the running count at every marker the guest makes (an
`lseek(-1, MARK, 0)`, which fails harmlessly), writing the marks to a file at exit; the guest marks before and
after each call it wants counted, so interpreter start-up and Python's own noise stay out. The declarations are
QEMU's plugin API version 1 (QEMU 4.2-8.x), the subset used here; QEMU 9 removed the inline op this uses, and the
count is then missing with a clear error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from effc.errors import EffcError

from effc.runners.vm_runner import COUNT_MARK

PLUGIN_SOURCE = r"""
#define MARK @MARK@ull
#define AARCH64_LSEEK 62
#define MAX_MARKS 4096
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *), void *);

void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, unsigned int, int64_t,
    uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t));

__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t instructions;
static const char *out_path;
static uint64_t marks[MAX_MARKS];
static size_t mark_count;

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions, qemu_plugin_tb_n_insns(tb));
}

static void syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                    uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    if (num == AARCH64_LSEEK && a1 == (uint64_t)-1 && a2 == MARK && mark_count < MAX_MARKS)
        marks[mark_count++] = instructions;
}

static void finished(qemu_plugin_id_t id, void *unused) {
    FILE *f = fopen(out_path, "w");
    if (!f) return;
    fprintf(f, "%llu\n", (unsigned long long)instructions);
    for (size_t i = 0; i < mark_count; i++) fprintf(f, "%llu\n", (unsigned long long)marks[i]);
    fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc, char **argv) {
    const char prefix[] = "out=";
    if (argc != 1 || __builtin_strncmp(argv[0], prefix, sizeof prefix - 1) != 0) return -1;
    out_path = argv[0] + sizeof prefix - 1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_vcpu_syscall_cb(id, syscall);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
""".replace("@MARK@", hex(COUNT_MARK))


def plugin_path() -> Path:
    """The built plugin (cached by the source's hash); EffcError when there is no host C compiler."""
    digest = hashlib.sha256(PLUGIN_SOURCE.encode()).hexdigest()[:12]
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effc" / "qemu-plugins"
    library = folder / f"libicount-{digest}.so"
    if library.exists():
        return library
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise EffcError("counting instructions under qemu-aarch64 needs a host C compiler (cc or gcc) for its plugin")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="effc-icount-") as tmp:
        source, built = Path(tmp) / "icount.c", Path(tmp) / library.name
        source.write_text(PLUGIN_SOURCE)
        done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(built), str(source)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise EffcError(f"building the qemu instruction-count plugin failed: {done.stderr.strip()[-300:]}")
        os.replace(built, library)  # atomic: concurrent builders each write a whole file
    return library


def counting(prefix: list[str], out_file: Path) -> list[str]:
    """`prefix` (a qemu-aarch64 command line) with the plugin writing the executed instruction count to `out_file`,
    on one TVM thread (idle pool threads spin, which would make the count depend on timing)."""
    return [prefix[0], "-plugin", f"{plugin_path()},out={out_file}", "-E", "TVM_NUM_THREADS=1", *prefix[1:]]


def read_marks(out_file: Path) -> list[int]:
    """The instruction counts at each of the guest's marks, in order."""
    try:
        return [int(line) for line in Path(out_file).read_text().split()][1:]
    except (OSError, ValueError):
        raise EffcError("qemu-aarch64 wrote no instruction count (its plugin did not load: QEMU 9 or later?)") from None
