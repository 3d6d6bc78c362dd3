/* Accepted events: fresh ones in arrival order, retries by due time, and the bytes
 * each event carries. */
#include "check.h"
#include "queue.h"

#include <stdlib.h>

/* A fixed-seed generator, so a failing order can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* An event whose body is its number, so the order it leaves in can be read back. */
static dn_event *numbered_event(int n)
{
    char body[32];
    int len = snprintf(body, sizeof body, "{\"n\":%d}", n);
    return dn_event_new(body, (size_t)len, NULL, 0, NULL, 0, NULL);
}

static int number_of(const dn_event *e)
{
    int n = -1;
    sscanf(dn_event_body(e), "{\"n\":%d}", &n);
    return n;
}

static dn_event *retry_event(int n, int64_t due_ms)
{
    dn_event *e = numbered_event(n);
    e->due_ms = due_ms;
    e->attempts = 1;
    return e;
}

static void check_empty(const dn_queue *q)
{
    CHECK_UINT_EQ(q->count, 0);
    CHECK_UINT_EQ(q->bytes, 0);
    CHECK_INT_EQ(dn_queue_next_due(q), INT64_MAX);
}

static void test_fresh_events_leave_in_order(void)
{
    dn_queue q;
    dn_queue_init(&q);
    check_empty(&q);
    for (int i = 0; i < 100; i++) dn_queue_push_fresh(&q, numbered_event(i));
    CHECK_UINT_EQ(q.count, 100);
    for (int i = 0; i < 100; i++) {
        dn_event *e = dn_queue_pop_due(&q, 0);
        if (!CHECK(e != NULL)) break;
        CHECK_INT_EQ(number_of(e), i);
        CHECK(e->next == NULL);
        dn_event_free(e);
    }
    CHECK(dn_queue_pop_due(&q, INT64_MAX) == NULL);
    check_empty(&q);

    /* The queue works again after running empty. */
    dn_queue_push_fresh(&q, numbered_event(7));
    dn_queue_push_fresh(&q, numbered_event(8));
    dn_event *e = dn_queue_pop_due(&q, 0);
    CHECK_INT_EQ(number_of(e), 7);
    dn_event_free(e);
    dn_queue_push_fresh(&q, numbered_event(9));
    e = dn_queue_pop_due(&q, 0);
    CHECK_INT_EQ(number_of(e), 8);
    dn_event_free(e);
    e = dn_queue_pop_due(&q, 0);
    CHECK_INT_EQ(number_of(e), 9);
    dn_event_free(e);
    check_empty(&q);
    dn_queue_free(&q);
}

static void test_retries_leave_by_due_time(void)
{
    enum { COUNT = 2000 };
    dn_queue q;
    dn_queue_init(&q);
    for (int i = 0; i < COUNT; i++) {
        /* A narrow range, so many due times repeat; some are negative. */
        int64_t due = (int64_t)(next_random() % 500) - 50;
        if (!CHECK(dn_queue_push_retry(&q, retry_event(i, due)))) break;
    }
    CHECK_UINT_EQ(q.count, COUNT);
    static bool seen[COUNT];
    int64_t previous_due = INT64_MIN;
    size_t popped = 0, out_of_order = 0, repeats = 0;
    dn_event *e;
    while ((e = dn_queue_pop_due(&q, INT64_MAX)) != NULL) {
        if (e->due_ms < previous_due) out_of_order++;
        previous_due = e->due_ms;
        int n = number_of(e);
        if (n >= 0 && n < COUNT) {
            if (seen[n]) repeats++;
            seen[n] = true;
        }
        popped++;
        dn_event_free(e);
    }
    CHECK_UINT_EQ(popped, COUNT);
    CHECK_UINT_EQ(out_of_order, 0);
    CHECK_UINT_EQ(repeats, 0);
    check_empty(&q);
    dn_queue_free(&q);
}

static void test_retries_interleaved_with_pops(void)
{
    dn_queue q;
    dn_queue_init(&q);
    int64_t now = 0;
    size_t pushed = 0, popped = 0;
    for (int round = 0; round < 500; round++) {
        for (int i = 0; i < 3; i++) {
            dn_queue_push_retry(&q, retry_event((int)pushed, now + (int64_t)(next_random() % 100)));
            pushed++;
        }
        now += 10;
        dn_event *e;
        while ((e = dn_queue_pop_due(&q, now)) != NULL) {
            if (e->due_ms > now)
                FAIL("popped due %lld at %lld", (long long)e->due_ms, (long long)now);
            popped++;
            dn_event_free(e);
        }
        CHECK(dn_queue_next_due(&q) > now);
    }
    dn_event *e;
    while ((e = dn_queue_pop_due(&q, INT64_MAX)) != NULL) {
        popped++;
        dn_event_free(e);
    }
    CHECK_UINT_EQ(popped, pushed);
    check_empty(&q);
    dn_queue_free(&q);
}

static void test_pop_due_respects_now(void)
{
    dn_queue q;
    dn_queue_init(&q);
    dn_queue_push_retry(&q, retry_event(1, 200));
    dn_queue_push_retry(&q, retry_event(2, 100));
    dn_queue_push_fresh(&q, numbered_event(3));
    CHECK_INT_EQ(dn_queue_next_due(&q), 0);

    /* Retries not yet due stay; the fresh event still leaves. */
    dn_event *e = dn_queue_pop_due(&q, 50);
    if (CHECK(e != NULL)) CHECK_INT_EQ(number_of(e), 3);
    dn_event_free(e);
    CHECK(dn_queue_pop_due(&q, 50) == NULL);
    CHECK(dn_queue_pop_due(&q, 99) == NULL);
    CHECK_UINT_EQ(q.count, 2);
    CHECK_INT_EQ(dn_queue_next_due(&q), 100);

    e = dn_queue_pop_due(&q, 100);
    if (CHECK(e != NULL)) CHECK_INT_EQ(number_of(e), 2);
    dn_event_free(e);
    CHECK(dn_queue_pop_due(&q, 199) == NULL);
    CHECK_INT_EQ(dn_queue_next_due(&q), 200);
    e = dn_queue_pop_due(&q, 1000);
    if (CHECK(e != NULL)) CHECK_INT_EQ(number_of(e), 1);
    dn_event_free(e);
    check_empty(&q);
    dn_queue_free(&q);
}

/* After an outage the oldest events, the retries, go first. */
static void test_due_retries_before_fresh(void)
{
    dn_queue q;
    dn_queue_init(&q);
    dn_queue_push_fresh(&q, numbered_event(10));
    dn_queue_push_fresh(&q, numbered_event(11));
    dn_queue_push_retry(&q, retry_event(1, 30));
    dn_queue_push_retry(&q, retry_event(2, 20));
    dn_queue_push_retry(&q, retry_event(3, 500));
    const int expected[] = {2, 1, 10, 11};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        dn_event *e = dn_queue_pop_due(&q, 30);
        if (!CHECK(e != NULL)) break;
        CHECK_INT_EQ(number_of(e), expected[i]);
        dn_event_free(e);
    }
    CHECK(dn_queue_pop_due(&q, 30) == NULL);
    CHECK_UINT_EQ(q.count, 1);
    dn_queue_free(&q);
    check_empty(&q);
}

static void test_count_and_bytes(void)
{
    dn_queue q;
    dn_queue_init(&q);
    size_t expected_bytes = 0;
    for (int i = 0; i < 50; i++) {
        char body[300];
        size_t body_len = (size_t)(i * 5);
        memset(body, 'b', body_len);
        dn_event *e =
            dn_event_new(body, body_len, "ua", i % 2 ? 2 : 0, "10.0.0.1", i % 3 ? 8 : 0, NULL);
        if (!CHECK(e != NULL)) break;
        expected_bytes += dn_event_size(e);
        if (i % 2)
            dn_queue_push_fresh(&q, e);
        else
            dn_queue_push_retry(&q, e);
        CHECK_UINT_EQ(q.count, (size_t)i + 1);
        CHECK_UINT_EQ(q.bytes, expected_bytes);
    }
    dn_event *e;
    while ((e = dn_queue_pop_due(&q, INT64_MAX)) != NULL) {
        expected_bytes -= dn_event_size(e);
        CHECK_UINT_EQ(q.bytes, expected_bytes);
        dn_event_free(e);
    }
    check_empty(&q);
    dn_queue_free(&q);
}

static void test_take_all(void)
{
    enum { FRESH = 40, RETRIES = 60 };
    dn_queue q;
    dn_queue_init(&q);
    for (int i = 0; i < FRESH; i++) dn_queue_push_fresh(&q, numbered_event(i));
    for (int i = FRESH; i < FRESH + RETRIES; i++)
        dn_queue_push_retry(&q, retry_event(i, (int64_t)(next_random() % 1000)));

    dn_event *chain = dn_queue_take_all(&q);
    check_empty(&q);
    CHECK(dn_queue_pop_due(&q, INT64_MAX) == NULL);

    int seen[FRESH + RETRIES] = {0};
    int position = 0;
    for (dn_event *e = chain; e;) {
        int n = number_of(e);
        if (n >= 0 && n < FRESH + RETRIES) seen[n]++;
        /* Fresh events first, oldest first. */
        if (position < FRESH) CHECK_INT_EQ(n, position);
        position++;
        dn_event *next = e->next;
        dn_event_free(e);
        e = next;
    }
    CHECK_INT_EQ(position, FRESH + RETRIES);
    for (int n = 0; n < FRESH + RETRIES; n++)
        if (seen[n] != 1) FAIL("event %d taken %d times", n, seen[n]);

    /* Usable again, and empty queues give an empty chain. */
    CHECK(dn_queue_take_all(&q) == NULL);
    dn_queue_push_retry(&q, retry_event(1, 5));
    chain = dn_queue_take_all(&q);
    if (CHECK(chain != NULL)) {
        CHECK(chain->next == NULL);
        dn_event_free(chain);
    }
    dn_queue_push_fresh(&q, numbered_event(2));
    chain = dn_queue_take_all(&q);
    if (CHECK(chain != NULL)) {
        CHECK(chain->next == NULL);
        dn_event_free(chain);
    }
    dn_queue_free(&q);
}

/* Expired events leave, fresh ones oldest first; the rest keep their order, the
 * retries their heap order, and the earliest expiry left is answered. */
static void test_take_expired(void)
{
    enum { FRESH = 50, RETRIES = 70 };
    dn_queue q;
    dn_queue_init(&q);
    for (int i = 0; i < FRESH; i++) {
        dn_event *e = numbered_event(i);
        dn_event_set_deadline(e, 1600 + (i % 3) * 1600, 0); /* 1600, 3200, 4800, ... */
        dn_queue_push_fresh(&q, e);
    }
    for (int i = FRESH; i < FRESH + RETRIES; i++) {
        dn_event *e = retry_event(i, (int64_t)(next_random() % 1000));
        dn_event_set_deadline(e, 1600 + (i % 3) * 1600, 0);
        dn_queue_push_retry(&q, e);
    }
    size_t bytes_before = q.bytes;

    int64_t next = 0;
    CHECK(dn_queue_take_expired(&q, 1599, &next) == NULL);
    CHECK_INT_EQ(next, 1600);
    CHECK_UINT_EQ(q.count, FRESH + RETRIES);

    dn_event *chain = dn_queue_take_expired(&q, 1600, &next);
    CHECK_INT_EQ(next, 3200);
    int taken = 0, last_fresh = -1;
    size_t taken_bytes = 0;
    for (dn_event *e = chain; e;) {
        int n = number_of(e);
        if (n % 3 != 0) FAIL("event %d expires later but was taken", n);
        if (n < FRESH) {
            if (n < last_fresh) FAIL("fresh event %d taken after %d", n, last_fresh);
            last_fresh = n;
        }
        taken++;
        taken_bytes += dn_event_size(e);
        dn_event *next_event = e->next;
        dn_event_free(e);
        e = next_event;
    }
    CHECK_INT_EQ(taken, (FRESH + RETRIES + 2) / 3); /* every third number */
    CHECK_UINT_EQ(q.count, FRESH + RETRIES - taken);
    CHECK_UINT_EQ(q.bytes, bytes_before - taken_bytes);

    /* What stays leaves as before: due retries by due time, then fresh in order. */
    int64_t last_due = -1;
    int fresh_seen = -1, left = 0;
    for (dn_event *e; (e = dn_queue_pop_due(&q, 1000));) {
        int n = number_of(e);
        if (n % 3 == 0) FAIL("expired event %d stayed", n);
        if (n >= FRESH) {
            if (fresh_seen >= 0) FAIL("retry %d after a fresh event", n);
            if (e->due_ms < last_due) FAIL("retry %d out of due order", n);
            last_due = e->due_ms;
        } else {
            if (n < fresh_seen) FAIL("fresh event %d after %d", n, fresh_seen);
            fresh_seen = n;
        }
        left++;
        dn_event_free(e);
    }
    CHECK_INT_EQ(left, FRESH + RETRIES - taken);
    check_empty(&q);

    /* Everything expired: an empty queue that takes new events at the tail. An event
     * without a deadline never expires. */
    dn_event *no_deadline = numbered_event(3);
    dn_queue_push_fresh(&q, no_deadline);
    CHECK(dn_queue_take_expired(&q, (int64_t)1 << 50, &next) == NULL);
    CHECK_INT_EQ(next, INT64_MAX);
    CHECK(dn_queue_pop_due(&q, 0) == no_deadline);
    dn_event_free(no_deadline);
    dn_event *expiring = numbered_event(1);
    dn_event_set_deadline(expiring, 4800, 0);
    dn_queue_push_fresh(&q, expiring);
    chain = dn_queue_take_expired(&q, 4800, &next);
    CHECK_INT_EQ(next, INT64_MAX);
    if (CHECK(chain != NULL)) dn_event_free(chain);
    check_empty(&q);
    dn_queue_push_fresh(&q, numbered_event(2));
    dn_event *e = dn_queue_pop_due(&q, 0);
    if (CHECK(e != NULL)) {
        CHECK_INT_EQ(number_of(e), 2);
        dn_event_free(e);
    }
    dn_queue_free(&q);
}

/* Deadlines in 16 ms ticks: never early, at most a tick late, compared across the
 * wrap of 32 bits, and an event without one never expires. */
static void test_deadlines(void)
{
    dn_event *e = numbered_event(1);
    if (!CHECK(e != NULL)) return;
    CHECK(!dn_event_expired(e, INT64_MAX / 2));
    CHECK_INT_EQ(dn_event_deadline_ms(e, 0), INT64_MAX);
    const int64_t nows[] = {0, 5, 1000, ((int64_t)1 << 36) - 3, ((int64_t)1 << 40) + 7};
    const int64_t ages[] = {1, 15, 16, 17, 500, 86400000, 365LL * 86400000, DN_EXPIRY_AHEAD_MS};
    for (size_t n = 0; n < sizeof nows / sizeof nows[0]; n++) {
        for (size_t a = 0; a < sizeof ages / sizeof ages[0]; a++) {
            int64_t now = nows[n], deadline = now + ages[a];
            dn_event_set_deadline(e, deadline, now);
            int64_t kept = dn_event_deadline_ms(e, now);
            if (kept < deadline || kept >= deadline + DN_EXPIRY_TICK_MS)
                FAIL("deadline %lld kept as %lld", (long long)deadline, (long long)kept);
            if (dn_event_expired(e, deadline - 1)) FAIL("expired before %lld", (long long)deadline);
            if (!dn_event_expired(e, kept)) FAIL("not expired at %lld", (long long)kept);
            if (!dn_event_expired(e, kept + ages[a])) FAIL("not expired later on");
        }
    }
    /* A deadline already past is due at once. */
    dn_event_set_deadline(e, 10, 5000);
    CHECK(dn_event_expired(e, 5000));
    /* An event stays small: 56 bytes besides its body and headers. */
    CHECK(sizeof(dn_event) <= 56);
    dn_event_free(e);
}

static void test_free_releases_everything(void)
{
    dn_queue q;
    dn_queue_init(&q);
    for (int i = 0; i < 100; i++) {
        dn_queue_push_fresh(&q, numbered_event(i));
        dn_queue_push_retry(&q, retry_event(i, i));
    }
    dn_queue_free(&q);
    check_empty(&q);
    dn_queue_free(&q);
}

static void test_event_holds_body_and_headers(void)
{
    const char body[] = "{\"event\":\"page_view\",\"x\":\"\0bin\xff\"}";
    const char ua[] = "Mozilla/5.0 (X11; Linux x86_64)";
    const char ip[] = "203.0.113.7, 10.0.0.1";
    dn_event *e = dn_event_new(body, sizeof body - 1, ua, sizeof ua - 1, ip, sizeof ip - 1, NULL);
    if (!CHECK(e != NULL)) return;
    CHECK_MEM_EQ(dn_event_body(e), e->body_len, body, sizeof body - 1);
    CHECK(dn_event_body(e)[e->body_len] == '\0');
    CHECK_STR_EQ(dn_event_user_agent(e), ua);
    CHECK_UINT_EQ(e->user_agent_len, sizeof ua - 1);
    CHECK_STR_EQ(dn_event_client_ip(e), ip);
    CHECK_UINT_EQ(e->client_ip_len, sizeof ip - 1);
    CHECK_INT_EQ(e->due_ms, 0);
    CHECK_UINT_EQ(e->attempts, 0);
    CHECK(e->next == NULL);
    CHECK_UINT_EQ(dn_event_size(e),
                  sizeof *e + (sizeof body - 1) + (sizeof ua - 1) + (sizeof ip - 1) + 3);
    dn_event_free(e);

    e = dn_event_new("{}", 2, NULL, 0, NULL, 0, NULL);
    if (!CHECK(e != NULL)) return;
    CHECK_STR_EQ(dn_event_body(e), "{}");
    CHECK(dn_event_user_agent(e) == NULL);
    CHECK(dn_event_client_ip(e) == NULL);
    dn_event_free(e);

    e = dn_event_new("{}", 2, NULL, 0, "::1", 3, NULL);
    if (!CHECK(e != NULL)) return;
    CHECK(dn_event_user_agent(e) == NULL);
    CHECK_STR_EQ(dn_event_client_ip(e), "::1");
    dn_event_free(e);
}

static void test_event_header_limits(void)
{
    size_t longest = UINT16_MAX;
    char *long_text = malloc(longest + 1);
    memset(long_text, 'u', longest + 1);
    dn_event *e = dn_event_new("{}", 2, long_text, longest, long_text, longest, NULL);
    if (CHECK(e != NULL)) {
        CHECK_UINT_EQ(strlen(dn_event_user_agent(e)), longest);
        CHECK_UINT_EQ(strlen(dn_event_client_ip(e)), longest);
        dn_event_free(e);
    }
    CHECK(dn_event_new("{}", 2, long_text, longest + 1, NULL, 0, NULL) == NULL);
    CHECK(dn_event_new("{}", 2, NULL, 0, long_text, longest + 1, NULL) == NULL);
    free(long_text);
}

static void test_idempotency_keys(void)
{
    enum { COUNT = 2000 };
    static uint8_t keys[COUNT][16];
    for (int i = 0; i < COUNT; i++) {
        dn_event *e = numbered_event(i);
        if (!CHECK(e != NULL)) return;
        memcpy(keys[i], e->idempotency_key, 16);
        dn_event_free(e);
        if (keys[i][6] >> 4 != 4) FAIL("event %d: version nibble %x", i, keys[i][6] >> 4);
        if ((keys[i][8] & 0xc0) != 0x80) FAIL("event %d: variant bits %02x", i, keys[i][8]);
    }
    size_t repeats = 0;
    for (int i = 0; i < COUNT; i++)
        for (int j = i + 1; j < COUNT; j++)
            if (memcmp(keys[i], keys[j], 16) == 0) repeats++;
    CHECK_UINT_EQ(repeats, 0);
}

int main(void)
{
    RUN_CASE(test_fresh_events_leave_in_order);
    RUN_CASE(test_retries_leave_by_due_time);
    RUN_CASE(test_retries_interleaved_with_pops);
    RUN_CASE(test_pop_due_respects_now);
    RUN_CASE(test_due_retries_before_fresh);
    RUN_CASE(test_count_and_bytes);
    RUN_CASE(test_take_all);
    RUN_CASE(test_take_expired);
    RUN_CASE(test_deadlines);
    RUN_CASE(test_free_releases_everything);
    RUN_CASE(test_event_holds_body_and_headers);
    RUN_CASE(test_event_header_limits);
    RUN_CASE(test_idempotency_keys);
    return check_report("test_queue");
}
