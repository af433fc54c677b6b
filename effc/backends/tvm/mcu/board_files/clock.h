/* One free-running counter read around the whole run and around each kernel.
 * Under `qemu-system-arm -icount shift=0` one instruction is 1 ns of virtual time, so a tick of the board clock is
 * a fixed number of instructions. EFFC_TIMER_BASE: the board's CMSDK APB timer0 (mps2 boards), 32 bits.
 * EFFC_SYSTICK: the core's SysTick on the processor clock (mps3-an547, whose CMSDK timers qemu gates), 24 bits:
 * one run must stay under 2^24 ticks. Otherwise (a real board): the DWT cycle counter, in core cycles. */
#ifndef EFFC_CLOCK_H
#define EFFC_CLOCK_H

#include <stdint.h>

#ifdef EFFC_TIMER_BASE
#define EFFC_TIMER ((volatile uint32_t *)(EFFC_TIMER_BASE))
static inline void effc_clock_start(void) {
    EFFC_TIMER[0] = 0;           /* CTRL: stop */
    EFFC_TIMER[2] = 0xFFFFFFFFu; /* RELOAD */
    EFFC_TIMER[1] = 0xFFFFFFFFu; /* VALUE */
    EFFC_TIMER[0] = 1;           /* CTRL: enable */
}
static inline uint32_t effc_clock(void) { return ~EFFC_TIMER[1]; } /* counts up from 0 */
#elif defined(EFFC_SYSTICK)
#define EFFC_SYST ((volatile uint32_t *)0xE000E010)
static inline void effc_clock_start(void) {
    EFFC_SYST[0] = 0;
    EFFC_SYST[1] = 0x00FFFFFFu;  /* RVR */
    EFFC_SYST[2] = 0;            /* CVR */
    EFFC_SYST[0] = 5;            /* CSR: enable, processor clock, no interrupt */
    while (EFFC_SYST[2] == 0) {} /* until it has loaded RVR */
}
static inline uint32_t effc_clock(void) { return 0x00FFFFFFu - EFFC_SYST[2]; }
#else
static inline void effc_clock_start(void) {
    *(volatile uint32_t *)0xE000EDFC |= 1u << 24; /* DEMCR.TRCENA */
    *(volatile uint32_t *)0xE0001004 = 0;         /* DWT_CYCCNT */
    *(volatile uint32_t *)0xE0001000 |= 1u;       /* DWT_CTRL.CYCCNTENA */
}
static inline uint32_t effc_clock(void) { return *(volatile uint32_t *)0xE0001004; }
#endif

#endif
