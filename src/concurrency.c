#include "concurrency.h"

#include <math.h>

/* The floor climbs toward the windows' lowest latencies over about this long: a path
 * that became slower for good (a route change) is learnt in seconds, while the
 * queueing of a few windows barely moves it, however short the windows. */
#define FLOOR_CLIMB_US 10000000.0
/* Weight of a new latency in the smoothed one (TCP's SRTT gain). */
#define SMOOTHING 0.125
/* Windows last at least this long, so that a loopback's microsecond round trips do
 * not adjust the limit on every answer. */
#define MIN_WINDOW_US 1000

static void start_window(dn_concurrency *c, int64_t now_us)
{
    c->window_start_us = now_us;
    c->window_sum_us = 0;
    c->window_min_us = INT64_MAX;
    c->window_count = 0;
    c->window_saturated = false;
}

void dn_concurrency_init(dn_concurrency *c, unsigned fixed_limit, unsigned cap, int64_t now_us)
{
    *c = (dn_concurrency){0};
    c->fixed = fixed_limit > 0;
    c->cap = c->fixed ? fixed_limit : (cap > 0 ? cap : 1);
    c->max_limit = c->cap;
    c->limit = c->fixed ? fixed_limit : DN_CONCURRENCY_INITIAL;
    if (c->limit > c->max_limit) c->limit = c->max_limit;
    c->slow_start = true;
    c->last_cut_us = now_us;
    start_window(c, now_us);
}

unsigned dn_concurrency_limit(const dn_concurrency *c)
{
    return (unsigned)c->limit;
}

static void clamp(dn_concurrency *c)
{
    if (c->limit > c->max_limit) c->limit = c->max_limit;
    if (c->limit < 1) c->limit = 1;
}

void dn_concurrency_set_ceiling(dn_concurrency *c, unsigned ceiling)
{
    if (c->fixed) return;
    c->max_limit = ceiling > 0 && ceiling < c->cap ? ceiling : c->cap;
    clamp(c);
}

void dn_concurrency_saturated(dn_concurrency *c)
{
    c->window_saturated = true;
}

static void cut(dn_concurrency *c, double factor, int64_t now_us)
{
    c->limit *= factor;
    clamp(c);
    c->slow_start = false;
    c->last_cut_us = now_us;
    c->cuts++;
    start_window(c, now_us);
}

static bool window_inflated(const dn_concurrency *c)
{
    double mean = (double)c->window_sum_us / c->window_count;
    return c->floor_us > 0 &&
           mean > c->floor_us * DN_CONCURRENCY_TOLERANCE + DN_CONCURRENCY_SLACK_US;
}

static void end_window(dn_concurrency *c, int64_t now_us)
{
    double share = (double)(now_us - c->window_start_us) / FLOOR_CLIMB_US;
    if (share > 1) share = 1;
    if (c->window_min_us > c->floor_us)
        c->floor_us += (int64_t)((double)(c->window_min_us - c->floor_us) * share);
    if (window_inflated(c)) {
        if (c->slow_start) {
            c->slow_start = false;
            start_window(c, now_us);
        } else {
            cut(c, DN_CONCURRENCY_INFLATION_CUT, now_us);
        }
        return;
    }
    /* Without a backlog the limit is not what bounds delivery: growing it then would
     * only leave a high limit for the next burst to overload the server with. */
    if (c->window_saturated) {
        c->limit += c->slow_start ? c->window_count : sqrt(c->limit);
        clamp(c);
    }
    start_window(c, now_us);
}

void dn_concurrency_attempt_done(dn_concurrency *c, int64_t started_us, int64_t now_us,
                                 int64_t latency_us, dn_attempt_signal signal)
{
    if (latency_us >= 0) {
        c->smoothed_us = c->smoothed_us > 0
                             ? c->smoothed_us + SMOOTHING * ((double)latency_us - c->smoothed_us)
                             : (double)latency_us;
    }
    if (c->fixed) return;
    /* Answers to attempts started before the last cut were sent at the old limit. */
    bool current = started_us >= c->last_cut_us;
    if (signal == DN_SIGNAL_OVERLOAD) {
        if (current) cut(c, DN_CONCURRENCY_OVERLOAD_CUT, now_us);
        return;
    }
    if (latency_us < 0 || !current) return;
    if (c->floor_us == 0 || latency_us < c->floor_us) c->floor_us = latency_us > 0 ? latency_us : 1;
    c->window_sum_us += latency_us;
    if (latency_us < c->window_min_us) c->window_min_us = latency_us;
    c->window_count++;
    int64_t length = (int64_t)c->smoothed_us;
    if (length < MIN_WINDOW_US) length = MIN_WINDOW_US;
    if (now_us - c->window_start_us >= length) end_window(c, now_us);
}

double dn_concurrency_latency_ms(const dn_concurrency *c)
{
    return c->smoothed_us / 1000.0;
}
