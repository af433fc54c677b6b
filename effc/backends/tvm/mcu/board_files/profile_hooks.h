/* Included before every source of the profile build (-include): model.c's EFFC_KERNEL_BEGIN/END read the clock
 * and add each kernel's ticks into effc_kernel_ticks[i] (summed over the runs). */
#ifndef EFFC_PROFILE_HOOKS_H
#define EFFC_PROFILE_HOOKS_H

#include "clock.h"

extern uint32_t effc_kernel_ticks[];
extern uint32_t effc_kernel_start;
#define EFFC_KERNEL_BEGIN(i) (effc_kernel_start = effc_clock())
#define EFFC_KERNEL_END(i) (effc_kernel_ticks[(i)] += effc_clock() - effc_kernel_start)

#endif
