#include "semihost.h"

enum {
    SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05, SYS_READ = 0x06,
    SYS_EXIT_EXTENDED = 0x20, ADP_STOPPED_APPLICATION_EXIT = 0x20026,
    MODE_READ_BINARY = 1, MODE_WRITE_BINARY = 5,
};

static int semihost_call(int operation, void *argument) {
    register int r0 __asm__("r0") = operation;
    register void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t length(const char *text) {
    uint32_t n = 0;
    while (text[n]) n++;
    return n;
}

int semihost_open(const char *name, int write) {
    uint32_t block[3] = {(uint32_t)name, write ? MODE_WRITE_BINARY : MODE_READ_BINARY, length(name)};
    return semihost_call(SYS_OPEN, block);
}

/* SYS_READ and SYS_WRITE return the number of bytes NOT transferred */
int semihost_read(int handle, void *buffer, uint32_t bytes) {
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)buffer, bytes};
    return (int)bytes - semihost_call(SYS_READ, block);
}

int semihost_write(int handle, const void *buffer, uint32_t bytes) {
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)buffer, bytes};
    return (int)bytes - semihost_call(SYS_WRITE, block);
}

void semihost_close(int handle) {
    uint32_t block[1] = {(uint32_t)handle};
    semihost_call(SYS_CLOSE, block);
}

void semihost_print(const char *text) { semihost_call(SYS_WRITE0, (void *)text); }

void semihost_print_uint(uint32_t value) {
    char digits[11];
    int i = 10;
    digits[i] = 0;
    do {
        digits[--i] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    semihost_print(&digits[i]);
}

void semihost_exit(int status) {
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    for (;;) semihost_call(SYS_EXIT_EXTENDED, block);
}
