/* Reset and fault handling for a bare Cortex-M: vector table, FPU on, .data copied, .bss zeroed, then main.
 * A fault prints one line through semihosting and exits with EFFC_EXIT_FAULT (the runner reports it). */
#include <stdint.h>

#include "harness.h"
#include "semihost.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);

void Reset_Handler(void) {
#if defined(__ARM_FP)
    /* CPACR: full access to CP10/CP11 (the FPU) before any float instruction runs */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    uint32_t *from = &__data_load, *to = &__data_start;
    while (to < &__data_end) *to++ = *from++;
    for (to = &__bss_start; to < &__bss_end; to++) *to = 0;
    semihost_exit(main());
}

static void fault(const char *name) {
    semihost_print("EFFC_FAULT ");
    semihost_print(name);
    semihost_print("\n");
    semihost_exit(EFFC_EXIT_FAULT);
}

void NMI_Handler(void) { fault("NMI"); }
void HardFault_Handler(void) { fault("HardFault"); }
void MemManage_Handler(void) { fault("MemManage"); }
void BusFault_Handler(void) { fault("BusFault"); }
void UsageFault_Handler(void) { fault("UsageFault"); }
void Unexpected_Handler(void) { fault("unexpected exception"); }

__attribute__((section(".isr_vector"), used)) void (*const effc_vectors[16])(void) = {
    (void (*)(void))&__stack_top, Reset_Handler, NMI_Handler, HardFault_Handler,
    MemManage_Handler, BusFault_Handler, UsageFault_Handler, 0, 0, 0, 0,
    Unexpected_Handler, Unexpected_Handler, 0, Unexpected_Handler, Unexpected_Handler,
};
