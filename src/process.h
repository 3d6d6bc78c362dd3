/* What the process tells us about itself: clocks and fork detection. */
#ifndef DN_PROCESS_H
#define DN_PROCESS_H

#include <stdint.h>

/* Wall-clock milliseconds since the epoch: the `<ms>` of ids and session expiry. */
int64_t dn_wall_ms(void);
/* Monotonic milliseconds: retry schedules and deadlines, immune to clock steps. */
int64_t dn_mono_ms(void);
/* Monotonic microseconds: latencies of attempts. */
int64_t dn_mono_us(void);

/* Counts the forks this process descends from (0 in the original process). Anything
 * that must not be shared with a parent (random pools, curl connections) remembers the
 * generation it was made in and starts afresh when it differs. */
unsigned dn_fork_generation(void);

/* Keeps the shared object holding `symbol` (and so libcurl) mapped for the life of the
 * process, even when the Lua state that loaded it closes and asks for dlclose: a
 * detached resolver thread or the fork handler may still run our code. */
void dn_pin_module(void *symbol);

#endif
