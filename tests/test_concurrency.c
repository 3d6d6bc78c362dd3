/* The concurrency rule: how the limit moves with backlog, latency and overload. */
#include "check.h"
#include "concurrency.h"

#define MS 1000

/* One round trip of a steady client: `limit` attempts answer with latency_us, spread
 * over one latency, each started one latency before its answer. */
static void round_trip(dn_concurrency *c, int64_t *now_us, int64_t latency_us, bool backlog)
{
    unsigned n = dn_concurrency_limit(c);
    for (unsigned i = 0; i < n; i++) {
        *now_us += latency_us / n;
        if (backlog) dn_concurrency_saturated(c);
        dn_concurrency_attempt_done(c, *now_us - latency_us, *now_us, latency_us,
                                    DN_SIGNAL_ANSWERED);
    }
}

static void test_fixed_never_moves(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 16, 256, 0);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 16);
    for (int i = 0; i < 20; i++) round_trip(&c, &now, 50 * MS, true);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 16);
    now += 10 * MS;
    dn_concurrency_attempt_done(&c, now - 1, now, -1, DN_SIGNAL_OVERLOAD);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 16);
    dn_concurrency_set_ceiling(&c, 4);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 16);
    /* The latency is still measured, for stats(). */
    CHECK(dn_concurrency_latency_ms(&c) > 49 && dn_concurrency_latency_ms(&c) < 51);
}

static void test_slow_start_doubles_to_the_cap(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), DN_CONCURRENCY_INITIAL);
    unsigned before = dn_concurrency_limit(&c);
    round_trip(&c, &now, 50 * MS, true);
    round_trip(&c, &now, 50 * MS, true);
    /* Two round trips at the floor with a backlog: at least twice as many. */
    CHECK(dn_concurrency_limit(&c) >= 2 * before);
    for (int i = 0; i < 10; i++) round_trip(&c, &now, 50 * MS, true);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 256);
    CHECK_UINT_EQ(c.cuts, 0);
}

static void test_no_growth_without_backlog(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    for (int i = 0; i < 20; i++) round_trip(&c, &now, 50 * MS, false);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), DN_CONCURRENCY_INITIAL);
}

static void test_long_round_trip_at_its_floor_keeps_growing(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 1024, 0);
    for (int i = 0; i < 30; i++) round_trip(&c, &now, 150 * MS, true);
    CHECK_UINT_EQ(c.cuts, 0);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 1024);
}

static void test_overload_halves_once_per_round_trip(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    for (int i = 0; i < 10; i++) round_trip(&c, &now, 50 * MS, true);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 256);
    /* The first 503: at once, half. */
    now += 1 * MS;
    dn_concurrency_attempt_done(&c, now - 50 * MS, now, 50 * MS, DN_SIGNAL_OVERLOAD);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 128);
    /* More answers of attempts sent before the cut: no further cut. */
    for (int i = 0; i < 100; i++) {
        now += 100;
        dn_concurrency_attempt_done(&c, now - 50 * MS, now, 50 * MS, DN_SIGNAL_OVERLOAD);
    }
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 128);
    /* An attempt sent after the cut is overloaded too: half again. */
    now += 50 * MS;
    dn_concurrency_attempt_done(&c, now - 40 * MS, now, 40 * MS, DN_SIGNAL_OVERLOAD);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 64);
    CHECK_UINT_EQ(c.cuts, 2);
    /* Never below one. */
    for (int i = 0; i < 20; i++) {
        now += 50 * MS;
        dn_concurrency_attempt_done(&c, now - 1, now, 1, DN_SIGNAL_OVERLOAD);
    }
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 1);
}

static void test_after_a_cut_growth_is_by_the_square_root(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    round_trip(&c, &now, 50 * MS, true);
    now += 1 * MS;
    dn_concurrency_attempt_done(&c, now - 1, now, -1, DN_SIGNAL_OVERLOAD);
    unsigned after_cut = dn_concurrency_limit(&c);
    for (int i = 0; i < 10; i++) round_trip(&c, &now, 50 * MS, true);
    /* From 8: 8 + 2.8 + 3.3 + 3.8 ...: about 57 after ten round trips (a round trip may
     * close one window or two); doubling would be at the cap. */
    CHECK(dn_concurrency_limit(&c) >= after_cut + 25);
    CHECK(dn_concurrency_limit(&c) <= 150);
    CHECK_UINT_EQ(c.cuts, 1);
}

static void test_latency_inflation_ends_slow_start_then_cuts_a_tenth(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    for (int i = 0; i < 3; i++) round_trip(&c, &now, 50 * MS, true);
    unsigned before = dn_concurrency_limit(&c);
    CHECK_UINT_EQ(c.cuts, 0);
    /* Answers now take three times the floor: the server queues them. The first
     * inflated window only ends slow start... */
    for (int i = 0; i < 1000 && c.slow_start; i++) {
        now += 1 * MS;
        dn_concurrency_attempt_done(&c, now - 150 * MS, now, 150 * MS, DN_SIGNAL_ANSWERED);
    }
    CHECK(!c.slow_start);
    CHECK_UINT_EQ(c.cuts, 0);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), before);
    /* ...the next ones cut. */
    round_trip(&c, &now, 150 * MS, true);
    round_trip(&c, &now, 150 * MS, true);
    CHECK(c.cuts >= 1);
    CHECK(dn_concurrency_limit(&c) < before);
    CHECK(dn_concurrency_limit(&c) >= before * 8 / 10);
}

static void test_loopback_jitter_is_not_inflation(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    /* 100 us floor, then 300 us: three times the floor, but within the 5 ms slack. */
    for (int i = 0; i < 5; i++) round_trip(&c, &now, 100, true);
    for (int i = 0; i < 200; i++) round_trip(&c, &now, 300, true);
    CHECK_UINT_EQ(c.cuts, 0);
}

static void test_ceiling_for_one_attempt_per_connection(void)
{
    dn_concurrency c;
    int64_t now = 1000000;
    dn_concurrency_init(&c, 0, 256, 0);
    for (int i = 0; i < 10; i++) round_trip(&c, &now, 50 * MS, true);
    dn_concurrency_set_ceiling(&c, 32);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 32);
    round_trip(&c, &now, 50 * MS, true);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 32);
    /* Back to multiplexing: the cap again. */
    dn_concurrency_set_ceiling(&c, 0);
    for (int i = 0; i < 10; i++) round_trip(&c, &now, 50 * MS, true);
    CHECK_UINT_EQ(dn_concurrency_limit(&c), 256);
}

int main(void)
{
    RUN_CASE(test_fixed_never_moves);
    RUN_CASE(test_slow_start_doubles_to_the_cap);
    RUN_CASE(test_no_growth_without_backlog);
    RUN_CASE(test_long_round_trip_at_its_floor_keeps_growing);
    RUN_CASE(test_overload_halves_once_per_round_trip);
    RUN_CASE(test_after_a_cut_growth_is_by_the_square_root);
    RUN_CASE(test_latency_inflation_ends_slow_start_then_cuts_a_tenth);
    RUN_CASE(test_loopback_jitter_is_not_inflation);
    RUN_CASE(test_ceiling_for_one_attempt_per_connection);
    return check_report("test_concurrency");
}
