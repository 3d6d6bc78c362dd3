/* What an attempt's answer means, the retry schedule, and the code of an error answer. */
#include "check.h"
#include "policy.h"

static uint64_t rng_state = 0x2545f4914f6cdd1du;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *verdict_name(dn_verdict v)
{
    switch (v) {
    case DN_VERDICT_DELIVERED:
        return "DELIVERED";
    case DN_VERDICT_RETRY:
        return "RETRY";
    case DN_VERDICT_OFFLINE:
        return "OFFLINE";
    case DN_VERDICT_FAILED:
        return "FAILED";
    }
    return "?";
}

static void test_verdict_for_status(void)
{
    struct {
        long status;
        dn_verdict verdict;
    } cases[] = {
        {200, DN_VERDICT_DELIVERED}, {201, DN_VERDICT_DELIVERED}, {202, DN_VERDICT_DELIVERED},
        {204, DN_VERDICT_DELIVERED}, {299, DN_VERDICT_DELIVERED}, {0, DN_VERDICT_FAILED},
        {100, DN_VERDICT_FAILED},    {199, DN_VERDICT_FAILED},    {300, DN_VERDICT_FAILED},
        {301, DN_VERDICT_FAILED},    {302, DN_VERDICT_FAILED},    {304, DN_VERDICT_FAILED},
        {400, DN_VERDICT_FAILED},    {401, DN_VERDICT_FAILED},    {403, DN_VERDICT_FAILED},
        {404, DN_VERDICT_FAILED},    {408, DN_VERDICT_RETRY},     {409, DN_VERDICT_FAILED},
        {413, DN_VERDICT_FAILED},    {422, DN_VERDICT_FAILED},    {429, DN_VERDICT_RETRY},
        {499, DN_VERDICT_FAILED},    {500, DN_VERDICT_RETRY},     {501, DN_VERDICT_FAILED},
        {502, DN_VERDICT_RETRY},     {503, DN_VERDICT_RETRY},     {504, DN_VERDICT_RETRY},
        {505, DN_VERDICT_FAILED},    {507, DN_VERDICT_RETRY},     {599, DN_VERDICT_RETRY},
        {600, DN_VERDICT_FAILED},    {999, DN_VERDICT_FAILED},    {-1, DN_VERDICT_FAILED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dn_verdict got = dn_verdict_for_status(cases[i].status);
        if (got != cases[i].verdict)
            FAIL("status %ld: %s, expected %s", cases[i].status, verdict_name(got),
                 verdict_name(cases[i].verdict));
    }
}

static void test_verdict_for_curl(void)
{
    struct {
        CURLcode code;
        dn_verdict verdict;
    } cases[] = {
        {CURLE_COULDNT_CONNECT, DN_VERDICT_OFFLINE},
        {CURLE_OPERATION_TIMEDOUT, DN_VERDICT_OFFLINE},
        {CURLE_GOT_NOTHING, DN_VERDICT_OFFLINE},
        {CURLE_COULDNT_RESOLVE_HOST, DN_VERDICT_OFFLINE},
        {CURLE_COULDNT_RESOLVE_PROXY, DN_VERDICT_OFFLINE},
        {CURLE_RECV_ERROR, DN_VERDICT_OFFLINE},
        {CURLE_SEND_ERROR, DN_VERDICT_OFFLINE},
        {CURLE_PARTIAL_FILE, DN_VERDICT_OFFLINE},
        {CURLE_SSL_CONNECT_ERROR, DN_VERDICT_RETRY},
        {CURLE_OUT_OF_MEMORY, DN_VERDICT_RETRY},
        {CURLE_PEER_FAILED_VERIFICATION, DN_VERDICT_FAILED},
        {CURLE_SSL_CACERT_BADFILE, DN_VERDICT_FAILED},
        {CURLE_UNSUPPORTED_PROTOCOL, DN_VERDICT_FAILED},
        {CURLE_TOO_MANY_REDIRECTS, DN_VERDICT_FAILED},
        {CURLE_URL_MALFORMAT, DN_VERDICT_FAILED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dn_verdict got = dn_verdict_for_curl(cases[i].code);
        if (got != cases[i].verdict)
            FAIL("curl code %d (%s): %s, expected %s", (int)cases[i].code,
                 curl_easy_strerror(cases[i].code), verdict_name(got),
                 verdict_name(cases[i].verdict));
    }
}

static void test_curl_error_code(void)
{
    struct {
        CURLcode code;
        const char *name;
    } cases[] = {
        {CURLE_COULDNT_RESOLVE_HOST, "DNS_ERROR"},
        {CURLE_COULDNT_RESOLVE_PROXY, "DNS_ERROR"},
        {CURLE_COULDNT_CONNECT, "CONNECT_ERROR"},
        {CURLE_OPERATION_TIMEDOUT, "TIMEOUT"},
        {CURLE_SSL_CONNECT_ERROR, "TLS_ERROR"},
        {CURLE_PEER_FAILED_VERIFICATION, "TLS_ERROR"},
        {CURLE_SSL_CACERT_BADFILE, "TLS_ERROR"},
        {CURLE_UNSUPPORTED_PROTOCOL, "PROTOCOL_ERROR"},
        {CURLE_TOO_MANY_REDIRECTS, "REDIRECT_ERROR"},
        {CURLE_URL_MALFORMAT, "URL_ERROR"},
        {CURLE_OUT_OF_MEMORY, "OUT_OF_MEMORY"},
        {CURLE_GOT_NOTHING, "NETWORK_ERROR"},
        {CURLE_RECV_ERROR, "NETWORK_ERROR"},
        {CURLE_SEND_ERROR, "NETWORK_ERROR"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_STR_EQ(dn_curl_error_code(cases[i].code), cases[i].name);
}

/* Waiting for the network and the code on_error names the failure by agree on every
 * curl code: no-network codes wait, and nothing else does. */
static void test_offline_codes_agree(void)
{
    static const char *const no_network[] = {"DNS_ERROR", "CONNECT_ERROR", "TIMEOUT",
                                             "NETWORK_ERROR"};
    for (int code = 1; code < CURL_LAST; code++) {
        const char *name = dn_curl_error_code((CURLcode)code);
        bool named_offline = false;
        for (size_t i = 0; i < sizeof no_network / sizeof no_network[0]; i++)
            if (strcmp(name, no_network[i]) == 0) named_offline = true;
        dn_verdict got = dn_verdict_for_curl((CURLcode)code);
        bool waits = got == DN_VERDICT_OFFLINE;
        if (got != DN_VERDICT_FAILED && waits != named_offline)
            FAIL("curl code %d (%s): %s, named %s", code, curl_easy_strerror((CURLcode)code),
                 verdict_name(got), name);
    }
}

/* min(max, base * 2^(retry-1)), worked out without overflow; retry 0 counts as 1. */
static int64_t backoff_ceiling(unsigned retry, int64_t base_ms, int64_t max_ms)
{
    if (base_ms <= 0 || max_ms <= 0) return 0;
    if (base_ms >= max_ms) return max_ms;
    int64_t ceiling = base_ms;
    for (unsigned i = 1; i < retry; i++) {
        if (ceiling > max_ms / 2) return max_ms;
        ceiling *= 2;
    }
    return ceiling;
}

static void test_backoff_within_bounds(void)
{
    for (int i = 0; i < 200000; i++) {
        unsigned retry = 1 + (unsigned)(next_random() % 40);
        int64_t base = (int64_t)(next_random() % 10001);
        int64_t max = (int64_t)(next_random() % 1000000001);
        uint64_t random = next_random();
        int64_t delay = dn_backoff_ms(retry, base, max, random);
        int64_t ceiling = backoff_ceiling(retry, base, max);
        if (delay < 0 || delay > ceiling) {
            FAIL("dn_backoff_ms(%u, %lld, %lld, %llu) = %lld, outside [0, %lld]", retry,
                 (long long)base, (long long)max, (unsigned long long)random, (long long)delay,
                 (long long)ceiling);
            return;
        }
    }
}

/* The largest of many draws: with full jitter, the ceiling itself when it is small
 * (20000 draws miss one of 1001 values with odds of 2e-9), else within 1% under it. */
static int64_t highest_draw(unsigned retry, int64_t base_ms, int64_t max_ms)
{
    int64_t highest = -1;
    for (int i = 0; i < 20000; i++) {
        int64_t delay = dn_backoff_ms(retry, base_ms, max_ms, next_random());
        if (delay > highest) highest = delay;
    }
    return highest;
}

static bool check_ceiling(const char *file, int line, unsigned retry, int64_t base_ms,
                          int64_t max_ms, int64_t ceiling)
{
    int64_t highest = highest_draw(retry, base_ms, max_ms);
    int64_t lowest_accepted = ceiling <= 1000 ? ceiling : ceiling - ceiling / 100;
    if (highest <= ceiling && highest >= lowest_accepted) return true;
    check_fail_with(file, line, "dn_backoff_ms(%u, %lld, %lld, r): highest draw %lld, ceiling %lld",
                    retry, (long long)base_ms, (long long)max_ms, (long long)highest,
                    (long long)ceiling);
    return false;
}

#define CHECK_CEILING(retry, base_ms, max_ms, ceiling)                                             \
    check_ceiling(__FILE__, __LINE__, retry, base_ms, max_ms, ceiling)

static void test_backoff_ceiling_doubles_up_to_max(void)
{
    CHECK_CEILING(1, 1, 60000, 1);
    CHECK_CEILING(2, 1, 60000, 2);
    CHECK_CEILING(1, 1, 1, 1);
    CHECK_CEILING(1, 500, 60000, 500);
    CHECK_CEILING(2, 500, 60000, 1000);
    CHECK_CEILING(3, 500, 60000, 2000);
    CHECK_CEILING(7, 500, 60000, 32000);
    CHECK_CEILING(8, 500, 60000, 60000);
    CHECK_CEILING(3, 500, 1200, 1200);
    CHECK_CEILING(1, 5000, 1200, 1200);
    /* Retry 0 is taken as the first. */
    CHECK_CEILING(0, 500, 60000, 500);
}

/* Full jitter: draws spread over the whole of [0, ceiling], not a part of it. */
static void test_backoff_spreads_over_range(void)
{
    const int64_t ceiling = 60000;
    int64_t lowest = INT64_MAX, highest = -1;
    double sum = 0;
    enum { DRAWS = 20000 };
    for (int i = 0; i < DRAWS; i++) {
        int64_t delay = dn_backoff_ms(10, 500, ceiling, next_random());
        if (delay < lowest) lowest = delay;
        if (delay > highest) highest = delay;
        sum += (double)delay;
    }
    CHECK(lowest < ceiling / 100);
    CHECK(highest > ceiling - ceiling / 100);
    CHECK(highest <= ceiling);
    double mean = sum / DRAWS;
    CHECK(mean > ceiling * 0.48 && mean < ceiling * 0.52);
}

/* The top of the random range must not round past the ceiling. */
static void test_backoff_random_near_top(void)
{
    const int64_t ceilings[][2] = {{1, 1}, {500, 60000}, {1, 1000000000}, {7, 7}};
    for (size_t c = 0; c < sizeof ceilings / sizeof ceilings[0]; c++) {
        int64_t base = ceilings[c][0], max = ceilings[c][1];
        for (uint64_t k = 0; k < 1000; k++) {
            int64_t delay = dn_backoff_ms(40, base, max, UINT64_MAX - k);
            if (delay < 0 || delay > max) {
                FAIL("dn_backoff_ms(40, %lld, %lld, UINT64_MAX - %llu) = %lld", (long long)base,
                     (long long)max, (unsigned long long)k, (long long)delay);
                break;
            }
        }
    }
}

static void test_backoff_caps_large_retry_counts(void)
{
    const unsigned retries[] = {20, 63, 64, 65, 100, 1000, 100000, UINT32_MAX};
    for (size_t i = 0; i < sizeof retries / sizeof retries[0]; i++) {
        CHECK_CEILING(retries[i], 500, 60000, 60000);
        CHECK_CEILING(retries[i], 1000000, 1000000000, 1000000000);
    }
}

/* No positive ceiling, no delay, however many retries. */
static void test_backoff_zero_or_negative_base(void)
{
    const int64_t bases[] = {0, -1, -5, -60000, INT64_MIN};
    const unsigned retries[] = {1, 2, 10, 62, 63, 64, 65, 100, 1000};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++)
        for (size_t r = 0; r < sizeof retries / sizeof retries[0]; r++) {
            int64_t delay = dn_backoff_ms(retries[r], bases[b], 60000, 12345);
            if (delay != 0)
                FAIL("dn_backoff_ms(%u, %lld, 60000, 12345) = %lld, expected 0", retries[r],
                     (long long)bases[b], (long long)delay);
        }
    CHECK_INT_EQ(dn_backoff_ms(5, 500, 0, 12345), 0);
    CHECK_INT_EQ(dn_backoff_ms(5, 500, -1, 12345), 0);
}

/* The header allows any int64_t max; doubling toward a max above INT64_MAX / 2 must
 * saturate instead of overflowing. */
static void test_backoff_huge_max(void)
{
    CHECK_CEILING(100, 1, INT64_MAX, INT64_MAX);
    CHECK_CEILING(2, INT64_MAX / 2 + 1, INT64_MAX, INT64_MAX);
    CHECK_CEILING(1000, 1000, INT64_MAX - 1, INT64_MAX - 1);
}

static bool answer_code(const char *body, char out[DN_CODE_MAX + 1])
{
    return dn_answer_code(body, strlen(body), out);
}

static void test_answer_code_extracted(void)
{
    char code[DN_CODE_MAX + 1];
    if (CHECK(answer_code("{\"status\":\"error\",\"code\":\"INVALID_EVENT\"}", code)))
        CHECK_STR_EQ(code, "INVALID_EVENT");
    if (CHECK(answer_code(" {\n \"code\" : \"RATE_LIMITED\" ,\"message\":\"slow\",\"n\":[1]}\n",
                          code)))
        CHECK_STR_EQ(code, "RATE_LIMITED");
    if (CHECK(answer_code("{\"code\":\"A\",\"code\":\"B_2\"}", code))) CHECK_STR_EQ(code, "B_2");
    if (CHECK(answer_code("{\"code\":\"E404\"}", code))) CHECK_STR_EQ(code, "E404");

    char longest[DN_CODE_MAX + 16];
    memset(longest, 'A', sizeof longest);
    char body[256];
    snprintf(body, sizeof body, "{\"code\":\"%.*s\"}", DN_CODE_MAX, longest);
    if (CHECK(answer_code(body, code))) CHECK_UINT_EQ(strlen(code), DN_CODE_MAX);
}

static void test_answer_code_refused(void)
{
    const char *refused[] = {
        "{\"status\":\"error\",\"code\":\"invalid_event\"}",
        "{\"code\":\"Invalid_Event\"}",
        "{\"code\":\"\"}",
        "{\"code\":\"INVALID EVENT\"}",
        "{\"code\":\"INVALID-EVENT\"}",
        "{\"code\":\"INVALID_EVENT\\n\"}",
        "{\"code\":\"\\u0041\"}",
        "{\"code\":\"\xc3\x89VENT\"}",
        "{\"code\":42}",
        "{\"code\":null}",
        "{\"code\":true}",
        "{\"code\":[\"INVALID_EVENT\"]}",
        "{\"code\":{\"code\":\"INVALID_EVENT\"}}",
        "{\"error\":{\"code\":\"INVALID_EVENT\"}}",
        "{\"status\":\"error\"}",
        "{\"CODE\":\"INVALID_EVENT\"}",
        "{}",
        "",
        "INVALID_EVENT",
        "\"INVALID_EVENT\"",
        "[{\"code\":\"INVALID_EVENT\"}]",
        "<html><body>Bad Gateway</body></html>",
        "{\"code\":\"INVALID_EVENT\"",
        "{\"code\":\"INVALID_EVENT\"} trailing",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char code[DN_CODE_MAX + 1] = "";
        if (answer_code(refused[i], code)) FAIL("code \"%s\" taken from %s", code, refused[i]);
    }

    char too_long[DN_CODE_MAX + 2];
    memset(too_long, 'A', DN_CODE_MAX + 1);
    too_long[DN_CODE_MAX + 1] = '\0';
    char body[256];
    snprintf(body, sizeof body, "{\"code\":\"%s\"}", too_long);
    char code[DN_CODE_MAX + 1];
    CHECK(!answer_code(body, code));
    CHECK(!dn_answer_code(NULL, 0, code));
}

/* The answer is kept up to a limit, so its end may be cut off anywhere. */
static void test_answer_code_cut_answer(void)
{
    const char *answer = "{\"status\":\"error\",\"code\":\"INVALID_EVENT\",\"message\":\"x\"}";
    for (size_t len = 0; len < strlen(answer); len++) {
        char code[DN_CODE_MAX + 1];
        if (dn_answer_code(answer, len, code)) FAIL("code taken from the first %zu bytes", len);
    }
}

int main(void)
{
    RUN_CASE(test_verdict_for_status);
    RUN_CASE(test_verdict_for_curl);
    RUN_CASE(test_curl_error_code);
    RUN_CASE(test_offline_codes_agree);
    RUN_CASE(test_backoff_within_bounds);
    RUN_CASE(test_backoff_ceiling_doubles_up_to_max);
    RUN_CASE(test_backoff_spreads_over_range);
    RUN_CASE(test_backoff_random_near_top);
    RUN_CASE(test_backoff_caps_large_retry_counts);
    RUN_CASE(test_backoff_zero_or_negative_base);
    RUN_CASE(test_backoff_huge_max);
    RUN_CASE(test_answer_code_extracted);
    RUN_CASE(test_answer_code_refused);
    RUN_CASE(test_answer_code_cut_answer);
    return check_report("test_policy");
}
