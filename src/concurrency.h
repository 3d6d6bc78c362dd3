/* How many attempts a client may have in flight: fixed, or tuned by itself (auto).
 *
 * Auto is additive increase, multiplicative decrease over windows of one round trip,
 * with a slow start. Two signals tell a slow network from an overloaded server (the
 * same two Vector's adaptive request concurrency and Netflix's gradient limiter read):
 * - the server says so (429, 503), or attempts time out or fail in transport: the
 *   limit halves at once, on the first such answer;
 * - latency inflates: a window's mean latency rises well above the floor (the lowest
 *   latency seen, the path without queueing), because requests queue somewhere as
 *   concurrency grows; the limit shrinks by a tenth, or, the first time, slow start
 *   ends without a cut (as HyStart ends TCP's slow start on rising delay).
 * Out of slow start the limit grows by its square root each round trip with a
 * backlog (the queue allowance of Netflix's gradient limiter): +4 at 16, +11 at 128,
 * so a limit cut by a burst of errors comes back within seconds, not minutes.
 * A long round trip alone changes neither: a distant server at its floor only makes
 * the windows longer, so the limit grows while events wait for it.
 * One decrease per round trip: answers to attempts started before the last cut say
 * nothing about the new limit. Times are in microseconds of a monotonic clock, given
 * by the caller, so the rule is plain arithmetic and tested as such. */
#ifndef DN_CONCURRENCY_H
#define DN_CONCURRENCY_H

#include <stdbool.h>
#include <stdint.h>

/* The limit auto starts from: today's fixed default, so a short-lived client behaves
 * as before while the limit finds its level. */
#define DN_CONCURRENCY_INITIAL 16
/* A window's mean latency is inflated above floor * 2 + 5 ms: the absolute part keeps
 * a loopback's sub-millisecond jitter from reading as queueing, the factor a host
 * that pumps every few milliseconds (OpenResty's timers) from reading its own delay
 * in reading answers as the server's. */
#define DN_CONCURRENCY_TOLERANCE     2.0
#define DN_CONCURRENCY_SLACK_US      5000
#define DN_CONCURRENCY_OVERLOAD_CUT  0.5
#define DN_CONCURRENCY_INFLATION_CUT 0.9

typedef struct dn_concurrency {
    double limit;
    double max_limit;   /* max_in_flight_cap, or max_connections for HTTP/1.1 */
    double cap;         /* max_in_flight_cap: the ceiling when connections multiplex */
    bool fixed;         /* an integer max_in_flight: the limit never moves */
    bool slow_start;    /* until the first cut, the limit doubles each round trip */
    int64_t floor_us;   /* lowest latency seen (rises slowly, see .c); 0: none yet */
    double smoothed_us; /* moving average of latencies, 0 before the first */
    int64_t last_cut_us;
    /* The window being measured. */
    int64_t window_start_us;
    int64_t window_sum_us;
    int64_t window_min_us;
    unsigned window_count;
    bool window_saturated; /* the limit held due events back during the window */
    uint64_t cuts;         /* decreases so far (for tests and the bench) */
} dn_concurrency;

/* fixed_limit > 0: that many, always. 0: auto, between 1 and cap. */
void dn_concurrency_init(dn_concurrency *c, unsigned fixed_limit, unsigned cap, int64_t now_us);
unsigned dn_concurrency_limit(const dn_concurrency *c);
/* The highest limit auto may reach: cap while connections multiplex (HTTP/2), the
 * number of connections allowed when each carries one attempt (HTTP/1.1). */
void dn_concurrency_set_ceiling(dn_concurrency *c, unsigned ceiling);
/* Due events waited because the limit was reached: the limit is what holds them. */
void dn_concurrency_saturated(dn_concurrency *c);

typedef enum dn_attempt_signal {
    DN_SIGNAL_ANSWERED, /* any answer but the two below */
    DN_SIGNAL_OVERLOAD, /* 429, 503, a timeout, a transport failure */
} dn_attempt_signal;

/* An attempt started at started_us ended at now_us; latency_us is the time from its
 * request to its answer (without connection setup), negative when unknown. */
void dn_concurrency_attempt_done(dn_concurrency *c, int64_t started_us, int64_t now_us,
                                 int64_t latency_us, dn_attempt_signal signal);
/* The smoothed latency in milliseconds, 0 before the first answer. */
double dn_concurrency_latency_ms(const dn_concurrency *c);

#endif
