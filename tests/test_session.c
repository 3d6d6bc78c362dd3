/* The stored visitor and session records, byte-compatible with the browser client. */
#include "check.h"
#include "session.h"

#include <stdlib.h>

#define UUID       "0f8fad5b-d9cb-469f-a165-70867728950e"
#define USER_ID    UUID "-1770179530638"
#define SESSION_ID "SESSION-" UUID "-1770179530638"
#define OTHER_ID   "SESSION-6ba7b810-9dad-41d1-80b4-00c04fd430c8-1770179000000"
#define EXPIRES    1770181330638
/* What the browser stores: JSON.stringify({id, expires}). */
#define BROWSER_RECORD "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638}"

#define TTL_MS (30 * 60 * 1000)

static bool parse(const char *text, dn_session *out)
{
    return dn_session_record_parse(text, strlen(text), out);
}

static long long trailing_ms(const char *id)
{
    const char *dash = strrchr(id, '-');
    return dash ? strtoll(dash + 1, NULL, 10) : -1;
}

static void test_parse_browser_record(void)
{
    dn_session s;
    if (!CHECK(parse(BROWSER_RECORD, &s))) return;
    CHECK_STR_EQ(s.id, SESSION_ID);
    CHECK_UINT_EQ(s.id_len, strlen(SESSION_ID));
    CHECK_INT_EQ(s.expires_ms, EXPIRES);
    CHECK(s.start_page == NULL);
    dn_session_clear(&s);

    CHECK(parse(" {\n  \"expires\": 1770181330638,\n  \"id\": \"" SESSION_ID "\"\n}\n", &s));
    CHECK_STR_EQ(s.id, SESSION_ID);
    CHECK_INT_EQ(s.expires_ms, EXPIRES);
    dn_session_clear(&s);
}

static void test_parse_start_page(void)
{
    dn_session s;
    const char *record = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,"
                         "\"startPage\":\"https://shop.example/caf\\u00e9?q=\\\"x\\\"\\n\"}";
    if (!CHECK(parse(record, &s))) return;
    const char page[] = "https://shop.example/caf\xc3\xa9?q=\"x\"\n";
    CHECK_MEM_EQ(s.start_page, s.start_page_len, page, sizeof page - 1);
    CHECK_INT_EQ(s.expires_ms, EXPIRES);
    dn_session_clear(&s);

    if (!CHECK(parse("{\"id\":\"" SESSION_ID "\",\"expires\":1,\"startPage\":\"\"}", &s))) return;
    CHECK(s.start_page != NULL);
    CHECK_UINT_EQ(s.start_page_len, 0);
    dn_session_clear(&s);
}

static void test_parse_ignores_unknown_members(void)
{
    dn_session s;
    const char *record = "{\"v\":2,\"id\":\"" SESSION_ID "\",\"nested\":{\"id\":5,\"a\":[1,{}]},"
                         "\"expires\":1770181330638,\"x\":null,\"ID\":\"no\"}";
    if (!CHECK(parse(record, &s))) return;
    CHECK_STR_EQ(s.id, SESSION_ID);
    CHECK_INT_EQ(s.expires_ms, EXPIRES);
    dn_session_clear(&s);
}

/* JSON.parse keeps the last of duplicate keys. */
static void test_parse_duplicate_keys_last_wins(void)
{
    dn_session s;
    const char *two_ids = "{\"id\":\"" SESSION_ID "\",\"expires\":1,\"id\":\"" OTHER_ID "\","
                          "\"expires\":2,\"startPage\":\"a\",\"startPage\":\"b\"}";
    if (CHECK(parse(two_ids, &s))) {
        CHECK_STR_EQ(s.id, OTHER_ID);
        CHECK_INT_EQ(s.expires_ms, 2);
        CHECK_STR_EQ(s.start_page, "b");
        dn_session_clear(&s);
    }
    CHECK(!parse("{\"id\":\"" SESSION_ID "\",\"expires\":1,\"id\":5}", &s));
    CHECK(!parse("{\"id\":\"" SESSION_ID "\",\"expires\":1,\"expires\":\"1\"}", &s));
    CHECK(parse("{\"id\":\"" SESSION_ID "\",\"expires\":\"1\",\"expires\":1}", &s));
    dn_session_clear(&s);
    /* A later startPage of the wrong type makes the page forgotten. */
    if (CHECK(parse("{\"id\":\"" SESSION_ID "\",\"expires\":1,\"startPage\":\"a\","
                    "\"startPage\":1}",
                    &s)))
        CHECK(s.start_page == NULL);
    dn_session_clear(&s);
}

static void test_parse_escaped_id(void)
{
    dn_session s;
    /* JSON.parse reads the escaped form as the same id. */
    if (CHECK(parse("{\"id\":\"\\u0053ESSION\\u002d" UUID "-1770179530638\",\"expires\":1}", &s)))
        CHECK_STR_EQ(s.id, SESSION_ID);
    dn_session_clear(&s);
    CHECK(!parse("{\"id\":\"" SESSION_ID "\\n\",\"expires\":1}", &s));
    CHECK(!parse("{\"id\":\"" SESSION_ID "\\u0000\",\"expires\":1}", &s));
}

static void test_parse_rejects_bad_id(void)
{
    const char *bad[] = {
        "{\"expires\":1770181330638}",
        "{\"id\":null,\"expires\":1770181330638}",
        "{\"id\":12,\"expires\":1770181330638}",
        "{\"id\":[\"" SESSION_ID "\"],\"expires\":1770181330638}",
        "{\"id\":{\"id\":\"" SESSION_ID "\"},\"expires\":1770181330638}",
        "{\"id\":true,\"expires\":1770181330638}",
        "{\"id\":\"\",\"expires\":1770181330638}",
        "{\"id\":\"" USER_ID "\",\"expires\":1770181330638}",
        "{\"id\":\"session-" USER_ID "\",\"expires\":1770181330638}",
        "{\"id\":\"SESSION-" UUID "\",\"expires\":1770181330638}",
        "{\"id\":\"SESSION-" UUID "-\",\"expires\":1770181330638}",
        "{\"id\":\"SESSION-" UUID "-12345678901234567\",\"expires\":1770181330638}",
        "{\"id\":\" " SESSION_ID "\",\"expires\":1770181330638}",
        "{\"Id\":\"" SESSION_ID "\",\"expires\":1770181330638}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dn_session s;
        if (parse(bad[i], &s)) {
            FAIL("accepted: %s", bad[i]);
            dn_session_clear(&s);
        }
    }
}

static void test_parse_rejects_bad_expires(void)
{
    const char *bad[] = {
        "{\"id\":\"" SESSION_ID "\"}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":\"1770181330638\"}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":null}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":true}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":NaN}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":\"NaN\"}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":Infinity}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":1e300}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":-1e300}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":1e400}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":{}}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":[1770181330638]}",
        "{\"id\":\"" SESSION_ID "\",\"Expires\":1770181330638}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dn_session s;
        if (parse(bad[i], &s)) {
            FAIL("accepted: %s", bad[i]);
            dn_session_clear(&s);
        }
    }
}

static void test_parse_reads_expires_numbers(void)
{
    struct {
        const char *expires;
        int64_t ms;
    } cases[] = {
        {"0", 0},
        {"-5", -5},
        {"1770181330638.9", 1770181330638},
        {"1.770181330638e12", 1770181330638},
        {"9007199254740992", 9007199254740992},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char record[256];
        snprintf(record, sizeof record, "{\"id\":\"%s\",\"expires\":%s}", SESSION_ID,
                 cases[i].expires);
        dn_session s;
        if (!parse(record, &s)) {
            FAIL("refused: %s", record);
            continue;
        }
        CHECK_INT_EQ(s.expires_ms, cases[i].ms);
        dn_session_clear(&s);
    }
}

static void test_parse_forgets_start_page_of_wrong_type(void)
{
    const char *pages[] = {"1", "null", "true", "{\"url\":\"/\"}", "[\"/\"]"};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        char record[256];
        snprintf(record, sizeof record, "{\"id\":\"%s\",\"expires\":%lld,\"startPage\":%s}",
                 SESSION_ID, (long long)EXPIRES, pages[i]);
        dn_session s;
        if (!parse(record, &s)) {
            FAIL("session lost for startPage %s", pages[i]);
            continue;
        }
        CHECK_STR_EQ(s.id, SESSION_ID);
        CHECK_INT_EQ(s.expires_ms, EXPIRES);
        CHECK(s.start_page == NULL);
        dn_session_clear(&s);
    }
}

static void test_parse_rejects_non_records(void)
{
    const char *bad[] = {
        "",
        "null",
        "[]",
        "\"" SESSION_ID "\"",
        SESSION_ID,
        "{}",
        BROWSER_RECORD " x",
        BROWSER_RECORD BROWSER_RECORD,
        "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dn_session s;
        if (parse(bad[i], &s)) {
            FAIL("accepted: %s", bad[i]);
            dn_session_clear(&s);
        }
    }
    size_t full = strlen(BROWSER_RECORD);
    for (size_t len = 0; len < full; len++) {
        char *prefix = malloc(len ? len : 1);
        memcpy(prefix, BROWSER_RECORD, len);
        dn_session s;
        if (dn_session_record_parse(prefix, len, &s)) {
            FAIL("accepted the first %zu bytes", len);
            dn_session_clear(&s);
        }
        free(prefix);
    }
}

/* A record of exactly `size` bytes, padded by its start page. */
static char *record_of_size(size_t size)
{
    const char *head = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,\"startPage\":\"";
    size_t head_len = strlen(head);
    char *text = malloc(size + 1);
    memcpy(text, head, head_len);
    memset(text + head_len, 'p', size - head_len - 2);
    memcpy(text + size - 2, "\"}", 3);
    return text;
}

static void test_parse_size_limit(void)
{
    char *at_limit = record_of_size(DN_SESSION_RECORD_MAX);
    char *beyond = record_of_size(DN_SESSION_RECORD_MAX + 1);
    CHECK_UINT_EQ(strlen(at_limit), DN_SESSION_RECORD_MAX);
    dn_session s;
    if (CHECK(dn_session_record_parse(at_limit, DN_SESSION_RECORD_MAX, &s))) {
        CHECK_STR_EQ(s.id, SESSION_ID);
        dn_session_clear(&s);
    }
    if (!CHECK(!dn_session_record_parse(beyond, DN_SESSION_RECORD_MAX + 1, &s)))
        dn_session_clear(&s);
    free(at_limit);
    free(beyond);
}

static void format_record(const dn_session *s, dn_buf *out)
{
    dn_buf_clear(out);
    dn_session_record_format(s, out);
}

static dn_session session_of(const char *id, int64_t expires_ms)
{
    dn_session s = {0};
    memcpy(s.id, id, strlen(id) + 1);
    s.id_len = strlen(id);
    s.expires_ms = expires_ms;
    return s;
}

static void test_format_matches_browser(void)
{
    dn_buf out;
    dn_buf_init(&out);
    dn_session s = session_of(SESSION_ID, EXPIRES);
    format_record(&s, &out);
    CHECK_MEM_EQ(out.data, out.len, BROWSER_RECORD, strlen(BROWSER_RECORD));

    s.expires_ms = 0;
    format_record(&s, &out);
    const char zero[] = "{\"id\":\"" SESSION_ID "\",\"expires\":0}";
    CHECK_MEM_EQ(out.data, out.len, zero, sizeof zero - 1);

    s.expires_ms = EXPIRES;
    const char page[] = "https://shop.example/?q=\"x\"";
    dn_session_set_start_page(&s, page, sizeof page - 1);
    format_record(&s, &out);
    const char with_page[] = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,"
                             "\"startPage\":\"https://shop.example/?q=\\\"x\\\"\"}";
    CHECK_MEM_EQ(out.data, out.len, with_page, sizeof with_page - 1);

    dn_session_set_start_page(&s, "", 0);
    format_record(&s, &out);
    const char empty_page[] = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,"
                              "\"startPage\":\"\"}";
    CHECK_MEM_EQ(out.data, out.len, empty_page, sizeof empty_page - 1);
    dn_session_clear(&s);
    dn_buf_free(&out);
}

/* Splicing a new expiry into a formatted record gives what formatting with that
 * expiry gives, with and without a start page, for expiries of other lengths too. */
static void test_record_with_expiry_matches_format(void)
{
    const long long expiries[] = {EXPIRES, EXPIRES + 1, 0, 99999999999999LL, 7};
    const char *pages[] = {NULL, "/products/shoes", "https://shop.example/?q=\"x\"", ""};
    for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
        dn_session s = session_of(SESSION_ID, EXPIRES);
        if (pages[p]) dn_session_set_start_page(&s, pages[p], strlen(pages[p]));
        dn_buf before, want;
        dn_buf_init(&before);
        dn_buf_init(&want);
        format_record(&s, &before);
        for (size_t e = 0; e < sizeof expiries / sizeof expiries[0]; e++) {
            s.expires_ms = expiries[e];
            format_record(&s, &want);
            char out[256];
            size_t len = dn_session_record_with_expiry(before.data, before.len, s.id_len,
                                                       expiries[e], out, sizeof out);
            CHECK_MEM_EQ(out, len, want.data, want.len);
        }
        /* Too small a buffer, or a record of another shape: 0, nothing claimed. */
        char tiny[8];
        CHECK_UINT_EQ(dn_session_record_with_expiry(before.data, before.len, s.id_len, EXPIRES,
                                                    tiny, sizeof tiny),
                      0);
        CHECK_UINT_EQ(dn_session_record_with_expiry(before.data, before.len, s.id_len + 1, EXPIRES,
                                                    tiny, sizeof tiny),
                      0);
        dn_buf_free(&before);
        dn_buf_free(&want);
        dn_session_clear(&s);
    }
    const char browser_order[] = "{\"expires\":1770181330638,\"id\":\"" SESSION_ID "\"}";
    char out[256];
    CHECK_UINT_EQ(dn_session_record_with_expiry(browser_order, sizeof browser_order - 1,
                                                strlen(SESSION_ID), EXPIRES, out, sizeof out),
                  0);
}

static void test_format_parse_round_trip(void)
{
    const char page[] = "https://shop.example/caf\xc3\xa9/\xf0\x9f\x98\x80?q=\"a\\b\"\n\r\t\x01"
                        "&x=</script>";
    dn_session s = session_of(SESSION_ID, EXPIRES);
    if (!CHECK(dn_session_set_start_page(&s, page, sizeof page - 1))) return;
    dn_buf out;
    dn_buf_init(&out);
    format_record(&s, &out);
    dn_session back;
    if (CHECK(dn_session_record_parse(out.data, out.len, &back))) {
        CHECK_STR_EQ(back.id, SESSION_ID);
        CHECK_UINT_EQ(back.id_len, s.id_len);
        CHECK_INT_EQ(back.expires_ms, EXPIRES);
        CHECK_MEM_EQ(back.start_page, back.start_page_len, page, sizeof page - 1);
        dn_session_clear(&back);
    }
    dn_session_clear(&s);
    dn_buf_free(&out);
}

static void test_start_page_set_and_replace(void)
{
    dn_session s = session_of(SESSION_ID, EXPIRES);
    CHECK(dn_session_set_start_page(&s, "/first", 6));
    CHECK(dn_session_set_start_page(&s, "/second\0x", 9));
    CHECK_MEM_EQ(s.start_page, s.start_page_len, "/second\0x", 9);
    CHECK(s.start_page[9] == '\0');
    dn_session_clear(&s);
    CHECK(s.start_page == NULL);
    CHECK_UINT_EQ(s.id_len, 0);
}

static void check_new_session(const dn_session *s, int64_t now_ms)
{
    CHECK(dn_session_id_valid(s->id, s->id_len));
    CHECK_UINT_EQ(strlen(s->id), s->id_len);
    CHECK_INT_EQ(trailing_ms(s->id), now_ms);
    CHECK(strcmp(s->id, SESSION_ID) != 0);
    CHECK_INT_EQ(s->expires_ms, now_ms + TTL_MS);
    CHECK(s->start_page == NULL);
}

static void test_resolve_alive_session_kept(void)
{
    const char *record = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,"
                         "\"startPage\":\"/landing\"}";
    const int64_t nows[] = {EXPIRES - 1, EXPIRES - TTL_MS, 0};
    for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
        dn_session s = {0};
        CHECK_INT_EQ(dn_session_resolve(record, strlen(record), nows[i], TTL_MS, &s), DN_ID_KEPT);
        CHECK_STR_EQ(s.id, SESSION_ID);
        CHECK_INT_EQ(s.expires_ms, nows[i] + TTL_MS);
        CHECK_STR_EQ(s.start_page, "/landing");
        dn_session_clear(&s);
    }
}

/* The browser keeps a session only while Date.now() < expires. */
static void test_resolve_expired_session_replaced(void)
{
    const char *record = "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638,"
                         "\"startPage\":\"/landing\"}";
    const int64_t nows[] = {EXPIRES, EXPIRES + 1, EXPIRES + 86400000};
    for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
        dn_session s = {0};
        CHECK_INT_EQ(dn_session_resolve(record, strlen(record), nows[i], TTL_MS, &s),
                     DN_ID_CREATED);
        check_new_session(&s, nows[i]);
        dn_session_clear(&s);
    }
}

static void test_resolve_missing_or_corrupt_replaced(void)
{
    const int64_t now = EXPIRES - 1000;
    dn_session s = {0};
    CHECK_INT_EQ(dn_session_resolve(NULL, 0, now, TTL_MS, &s), DN_ID_CREATED);
    check_new_session(&s, now);
    dn_session_clear(&s);

    const char *corrupt[] = {
        "",
        "garbage",
        "{\"id\":\"" USER_ID "\",\"expires\":1770181330638}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":\"1770181330638\"}",
        "{\"id\":\"" SESSION_ID "\",\"expires\":1770181330638",
        "{\"id\":\"" SESSION_ID "\"}",
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        dn_session fresh = {0};
        CHECK_INT_EQ(dn_session_resolve(corrupt[i], strlen(corrupt[i]), now, TTL_MS, &fresh),
                     DN_ID_CREATED);
        check_new_session(&fresh, now);
        dn_session_clear(&fresh);
    }

    char *too_large = record_of_size(DN_SESSION_RECORD_MAX + 1);
    CHECK_INT_EQ(dn_session_resolve(too_large, DN_SESSION_RECORD_MAX + 1, now, TTL_MS, &s),
                 DN_ID_CREATED);
    check_new_session(&s, now);
    dn_session_clear(&s);
    free(too_large);
}

static void test_resolve_created_sessions_differ(void)
{
    dn_session a = {0}, b = {0};
    dn_session_resolve(NULL, 0, EXPIRES, TTL_MS, &a);
    dn_session_resolve(NULL, 0, EXPIRES, TTL_MS, &b);
    CHECK(strcmp(a.id, b.id) != 0);
    dn_session_clear(&a);
    dn_session_clear(&b);
}

static void test_user_id_resolve_kept(void)
{
    const char *kept[] = {USER_ID, "0F8FAD5B-D9CB-469F-A165-70867728950E-1"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        char out[DN_ID_MAX + 1];
        size_t out_len = 0;
        CHECK_INT_EQ(dn_user_id_resolve(kept[i], strlen(kept[i]), EXPIRES, out, &out_len),
                     DN_ID_KEPT);
        CHECK_STR_EQ(out, kept[i]);
        CHECK_UINT_EQ(out_len, strlen(kept[i]));
    }
}

static void test_user_id_resolve_created(void)
{
    const char *replaced[] = {NULL, "", "garbage", SESSION_ID, USER_ID "\n", UUID};
    for (size_t i = 0; i < sizeof replaced / sizeof replaced[0]; i++) {
        char out[DN_ID_MAX + 1];
        size_t out_len = 0;
        size_t len = replaced[i] ? strlen(replaced[i]) : 0;
        CHECK_INT_EQ(dn_user_id_resolve(replaced[i], len, EXPIRES, out, &out_len), DN_ID_CREATED);
        CHECK(dn_user_id_valid(out, out_len));
        CHECK_UINT_EQ(strlen(out), out_len);
        CHECK_INT_EQ(trailing_ms(out), EXPIRES);
        CHECK(strcmp(out, USER_ID) != 0);
    }
    /* The stored bytes up to len are what count, not a NUL-terminated string. */
    const char stored[] = USER_ID "\0garbage";
    char out[DN_ID_MAX + 1];
    size_t out_len = 0;
    CHECK_INT_EQ(dn_user_id_resolve(stored, sizeof stored - 1, EXPIRES, out, &out_len),
                 DN_ID_CREATED);
    CHECK_INT_EQ(dn_user_id_resolve(stored, strlen(USER_ID), EXPIRES, out, &out_len), DN_ID_KEPT);
    CHECK_STR_EQ(out, USER_ID);
}

/* xorshift64*: the same cases on every run. */
static uint64_t memo_rng = 0x9e3779b97f4a7c15ull;

static uint64_t memo_random(void)
{
    memo_rng ^= memo_rng >> 12;
    memo_rng ^= memo_rng << 25;
    memo_rng ^= memo_rng >> 27;
    return memo_rng * 0x2545f4914f6cdd1dull;
}

/* A start page of any bytes, often printable ASCII, sometimes missing or empty. */
static void random_start_page(dn_session *s)
{
    uint64_t kind = memo_random() % 5;
    if (kind == 0) return;
    char page[64];
    size_t len = kind == 1 ? 0 : (size_t)(memo_random() % sizeof page);
    for (size_t i = 0; i < len; i++)
        page[i] = (char)(kind == 2 ? memo_random() % 256 : 0x20 + memo_random() % 0x5f);
    dn_session_set_start_page(s, page, len);
}

/* Expiries around now, and beyond what a double holds exactly. */
static int64_t random_expiry(int64_t now_ms)
{
    switch (memo_random() % 4) {
    case 0:
        return now_ms + (int64_t)(memo_random() % 2);
    case 1:
        return now_ms - (int64_t)(memo_random() % 3);
    case 2:
        return 9007199254740992LL + (int64_t)(memo_random() % 3) - 1;
    default:
        return now_ms + (int64_t)(memo_random() % TTL_MS);
    }
}

static bool same_session(const dn_session *a, const dn_session *b)
{
    bool same_page =
        (a->start_page == NULL) == (b->start_page == NULL) &&
        (!a->start_page || (a->start_page_len == b->start_page_len &&
                            memcmp(a->start_page, b->start_page, a->start_page_len) == 0));
    return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0 &&
           a->expires_ms == b->expires_ms && same_page;
}

/* The memo is only a shortcut: for any record it remembered, any bytes the storage
 * gives back and any clock, it answers what dn_session_resolve answers, and the record
 * it splices is the one formatting that answer gives. */
static void test_memo_answers_as_resolve(void)
{
    dn_session_memo memo = {0};
    dn_buf record, formatted;
    dn_buf_init(&record);
    dn_buf_init(&formatted);
    int64_t base_ms = EXPIRES;
    for (int i = 0; i < 20000; i++) {
        dn_session written = {0};
        written.id_len = dn_session_id_make(written.id, base_ms);
        written.expires_ms = random_expiry(base_ms);
        random_start_page(&written);
        format_record(&written, &record);
        dn_session_memo_remember(&memo, &written, record.data, record.len);

        /* The record as written, one byte changed, or nothing. */
        uint64_t stored_kind = memo_random() % 4;
        if (stored_kind == 1 && record.len) record.data[memo_random() % record.len] ^= 1;
        const char *stored = stored_kind == 2 ? NULL : record.data;
        int64_t now_ms = written.expires_ms - 2 + (int64_t)(memo_random() % 4);

        dn_session from_memo = {0}, from_rule = {0};
        bool as_written;
        dn_id_outcome memo_outcome = dn_session_memo_resolve(&memo, stored, record.len, now_ms,
                                                             TTL_MS, &from_memo, &as_written);
        dn_id_outcome rule_outcome =
            dn_session_resolve(stored, record.len, now_ms, TTL_MS, &from_rule);
        if (!CHECK_INT_EQ(memo_outcome, rule_outcome)) {
            fprintf(stderr, "  case %d: ", i);
            check_print_bytes(record.data, record.len);
            fputc('\n', stderr);
        }
        if (memo_outcome == DN_ID_KEPT && !CHECK(same_session(&from_memo, &from_rule)))
            fprintf(stderr, "  case %d\n", i);
        if (as_written) {
            char spliced[512];
            size_t spliced_len = dn_session_memo_record_with_expiry(&memo, from_memo.expires_ms,
                                                                    spliced, sizeof spliced);
            format_record(&from_rule, &formatted);
            if (spliced_len) CHECK_MEM_EQ(spliced, spliced_len, formatted.data, formatted.len);
        }
        dn_session_clear(&from_memo);
        dn_session_clear(&from_rule);
        dn_session_clear(&written);
        base_ms += (int64_t)(memo_random() % 1000);
    }
    dn_session_memo_free(&memo);
    dn_buf_free(&record);
    dn_buf_free(&formatted);
}

int main(void)
{
    RUN_CASE(test_parse_browser_record);
    RUN_CASE(test_parse_start_page);
    RUN_CASE(test_parse_ignores_unknown_members);
    RUN_CASE(test_parse_duplicate_keys_last_wins);
    RUN_CASE(test_parse_escaped_id);
    RUN_CASE(test_parse_rejects_bad_id);
    RUN_CASE(test_parse_rejects_bad_expires);
    RUN_CASE(test_parse_reads_expires_numbers);
    RUN_CASE(test_parse_forgets_start_page_of_wrong_type);
    RUN_CASE(test_parse_rejects_non_records);
    RUN_CASE(test_parse_size_limit);
    RUN_CASE(test_format_matches_browser);
    RUN_CASE(test_format_parse_round_trip);
    RUN_CASE(test_start_page_set_and_replace);
    RUN_CASE(test_resolve_alive_session_kept);
    RUN_CASE(test_record_with_expiry_matches_format);
    RUN_CASE(test_resolve_expired_session_replaced);
    RUN_CASE(test_resolve_missing_or_corrupt_replaced);
    RUN_CASE(test_resolve_created_sessions_differ);
    RUN_CASE(test_user_id_resolve_kept);
    RUN_CASE(test_user_id_resolve_created);
    RUN_CASE(test_memo_answers_as_resolve);
    return check_report("test_session");
}
