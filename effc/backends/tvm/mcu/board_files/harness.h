/* What main.c needs from the generated harness_io.c (buffers and the effc_run call, typed after model.h). */
#ifndef EFFC_HARNESS_H
#define EFFC_HARNESS_H

#include <stdint.h>

enum {
    EFFC_EXIT_OK = 0, EFFC_EXIT_NO_INPUT = 10, EFFC_EXIT_SHORT_INPUT = 11, EFFC_EXIT_OUTPUT = 12,
    EFFC_EXIT_RUN = 13, EFFC_EXIT_FAULT = 20,
};

struct effc_io {
    const char *file;
    void *data;
    uint32_t bytes;
};

extern const struct effc_io effc_harness_inputs[];
extern const struct effc_io effc_harness_outputs[];
extern const int effc_harness_num_inputs, effc_harness_num_outputs;
int effc_harness_call(void);

#endif
