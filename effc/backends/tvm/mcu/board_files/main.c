/* The harness: reads each input from the host (semihosting file I/O: input0.bin, ...), runs effc_run a number of
 * times (repeat.bin, a little-endian uint32; 1 when absent), writes output0.bin, ..., and prints one line:
 *   EFFC_RESULT runs=N ticks=T1,T2,... stack=BYTES stack_size=BYTES [kernel_ticks=K0,K1,...]
 * ticks: the clock (clock.h) around each run; stack: the deepest the stack got (it is painted first);
 * kernel_ticks (profile build): per kernel, summed over the runs (a tick is coarse: summing over runs averages
 * out where in a tick each kernel starts). Exit status: EFFC_EXIT_* (harness.h). */
#include <stdint.h>

#include "clock.h"
#include "harness.h"
#include "model.h"
#include "semihost.h"

#define EFFC_MAX_RUNS 64
#define STACK_PAINT 0xA5A5A5A5u

extern uint32_t __stack_bottom, __stack_top;

#ifdef EFFC_PROFILE
uint32_t effc_kernel_ticks[EFFC_NUM_KERNELS];
uint32_t effc_kernel_start;
#endif

static void fail(const char *what, const char *file, int status) {
    semihost_print("EFFC_ERROR ");
    semihost_print(what);
    semihost_print(file);
    semihost_print("\n");
    semihost_exit(status);
}

static void read_inputs(void) {
    for (int i = 0; i < effc_harness_num_inputs; i++) {
        const struct effc_io *in = &effc_harness_inputs[i];
        int handle = semihost_open(in->file, 0);
        if (handle < 0) fail("cannot open ", in->file, EFFC_EXIT_NO_INPUT);
        if (semihost_read(handle, in->data, in->bytes) != (int)in->bytes) fail("short read of ", in->file, EFFC_EXIT_SHORT_INPUT);
        semihost_close(handle);
    }
}

static void write_outputs(void) {
    for (int i = 0; i < effc_harness_num_outputs; i++) {
        const struct effc_io *out = &effc_harness_outputs[i];
        int handle = semihost_open(out->file, 1);
        if (handle < 0 || semihost_write(handle, out->data, out->bytes) != (int)out->bytes)
            fail("cannot write ", out->file, EFFC_EXIT_OUTPUT);
        semihost_close(handle);
    }
}

static uint32_t read_runs(void) {
    uint32_t runs = 1;
    int handle = semihost_open("repeat.bin", 0);
    if (handle >= 0) {
        if (semihost_read(handle, &runs, sizeof runs) != (int)sizeof runs) runs = 1;
        semihost_close(handle);
    }
    return runs < 1 ? 1 : (runs > EFFC_MAX_RUNS ? EFFC_MAX_RUNS : runs);
}

static void print_list(const char *key, const uint32_t *values, uint32_t n) {
    semihost_print(key);
    for (uint32_t i = 0; i < n; i++) {
        if (i) semihost_print(",");
        semihost_print_uint(values[i]);
    }
}

int main(void) {
    /* paint the stack below this frame (with a margin), so its high-water mark shows after the runs */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &__stack_bottom; p < sp - 16; p++) *p = STACK_PAINT;

    static uint32_t ticks[EFFC_MAX_RUNS];
    read_inputs();
    uint32_t runs = read_runs();
    effc_clock_start();
    for (uint32_t r = 0; r < runs; r++) {
        /* start on a tick edge, so that every run sees the same phase of the coarse clock */
        uint32_t edge = effc_clock();
        while (effc_clock() == edge) {}
        uint32_t start = effc_clock();
        int status = effc_harness_call();
        ticks[r] = effc_clock() - start;
        if (status != 0) fail("effc_run returned an error", "", EFFC_EXIT_RUN);
    }
    write_outputs();

    uint32_t *mark = &__stack_bottom;
    while (mark < &__stack_top && *mark == STACK_PAINT) mark++;
    print_list("EFFC_RESULT runs=", &runs, 1);
    print_list(" ticks=", ticks, runs);
    uint32_t stack[2] = {(uint32_t)((char *)&__stack_top - (char *)mark),
                         (uint32_t)((char *)&__stack_top - (char *)&__stack_bottom)};
    print_list(" stack=", &stack[0], 1);
    print_list(" stack_size=", &stack[1], 1);
#ifdef EFFC_PROFILE
    print_list(" kernel_ticks=", effc_kernel_ticks, EFFC_NUM_KERNELS);
#endif
    semihost_print("\n");
    return EFFC_EXIT_OK;
}
