/* One free-running counter read around the whole run and around each kernel.
 * EFFC_TIMER_BASE (the qemu build): the board's CMSDK APB timer0, counting down at the board clock; under
 * `qemu-system-arm -icount shift=0` one instruction is 1 ns of virtual time, so a tick is a fixed number of
 * instructions. Otherwise (a real board): the DWT cycle counter, counting up in core cycles. */
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
#else
static inline void effc_clock_start(void) {
    *(volatile uint32_t *)0xE000EDFC |= 1u << 24; /* DEMCR.TRCENA */
    *(volatile uint32_t *)0xE0001004 = 0;         /* DWT_CYCCNT */
    *(volatile uint32_t *)0xE0001000 |= 1u;       /* DWT_CTRL.CYCCNTENA */
}
static inline uint32_t effc_clock(void) { return *(volatile uint32_t *)0xE0001004; }
#endif

#endif
