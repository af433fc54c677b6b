/* Arm semihosting (bkpt 0xAB): file I/O on the host, console lines, exit with a status.
 * Works under qemu-system-arm (-semihosting-config enable=on,target=native) and under a debugger that
 * serves semihosting (OpenOCD: `arm semihosting enable`). Without one attached, bkpt 0xAB halts the core. */
#ifndef EFFC_SEMIHOST_H
#define EFFC_SEMIHOST_H

#include <stdint.h>

int semihost_open(const char *name, int write);          /* handle, or -1 */
int semihost_read(int handle, void *buffer, uint32_t bytes);  /* bytes read */
int semihost_write(int handle, const void *buffer, uint32_t bytes);  /* bytes written */
void semihost_close(int handle);
void semihost_print(const char *text);
void semihost_print_uint(uint32_t value);
void semihost_exit(int status) __attribute__((noreturn));

#endif
