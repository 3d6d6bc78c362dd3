/* Ids as the browser client makes and accepts them, and the randomness behind them. */
#include "check.h"
#include "ids.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define USER_ID    "0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638"
#define SESSION_ID "SESSION-" USER_ID

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_dash_position(size_t i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

/* Checks one uuid and says whether it was well-formed, so a loop stops at the first bad
 * one instead of printing thousands of lines. */
static bool check_uuid_shape(const char *uuid)
{
    if (!CHECK_UINT_EQ(strlen(uuid), DN_UUID_LEN)) return false;
    for (size_t i = 0; i < DN_UUID_LEN; i++) {
        bool ok = is_dash_position(i) ? uuid[i] == '-' : is_lower_hex(uuid[i]);
        if (!ok) {
            FAIL("uuid %s: character %zu out of place", uuid, i);
            return false;
        }
    }
    if (!CHECK(uuid[14] == '4')) return false;
    return CHECK(strchr("89ab", uuid[19]) != NULL);
}

/* The `<ms>` after the last dash, as a number; -1 when it is not all digits. */
static long long trailing_ms(const char *id)
{
    const char *dash = strrchr(id, '-');
    if (!dash || dash[1] == '\0') return -1;
    char *end;
    long long ms = strtoll(dash + 1, &end, 10);
    return *end == '\0' ? ms : -1;
}

static void test_uuid_shape(void)
{
    for (int i = 0; i < 10000; i++) {
        char uuid[DN_UUID_LEN + 1];
        if (!CHECK(dn_uuid_v4(uuid))) return;
        if (!check_uuid_shape(uuid)) return;
    }
}

static int compare_uuids(const void *a, const void *b)
{
    return memcmp(a, b, DN_UUID_LEN + 1);
}

static void test_uuids_distinct(void)
{
    enum { COUNT = 100000 };
    char(*uuids)[DN_UUID_LEN + 1] = malloc(COUNT * sizeof *uuids);
    if (!CHECK(uuids != NULL)) return;
    for (size_t i = 0; i < COUNT; i++) CHECK(dn_uuid_v4(uuids[i]));
    qsort(uuids, COUNT, sizeof *uuids, compare_uuids);
    size_t repeats = 0;
    for (size_t i = 1; i < COUNT; i++)
        if (memcmp(uuids[i - 1], uuids[i], DN_UUID_LEN + 1) == 0) repeats++;
    CHECK_UINT_EQ(repeats, 0);
    free(uuids);
}

static void test_uuid_format_of_known_bytes(void)
{
    const uint8_t bytes[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                               0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    char uuid[DN_UUID_LEN + 1];
    dn_uuid_format(bytes, uuid);
    CHECK_STR_EQ(uuid, "00112233-4455-6677-8899-aabbccddeeff");

    uint8_t zeros[16] = {0};
    dn_uuid_mark_v4(zeros);
    dn_uuid_format(zeros, uuid);
    CHECK_STR_EQ(uuid, "00000000-0000-4000-8000-000000000000");

    uint8_t ones[16];
    memset(ones, 0xff, sizeof ones);
    dn_uuid_mark_v4(ones);
    dn_uuid_format(ones, uuid);
    CHECK_STR_EQ(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
}

static void test_user_id_make(void)
{
    const int64_t times[] = {0, 7, 1770181330638, 9999999999999999};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        char id[DN_ID_MAX + 1];
        size_t len = dn_user_id_make(id, times[i]);
        CHECK_UINT_EQ(len, strlen(id));
        CHECK(len > DN_UUID_LEN + 1);
        char uuid[DN_UUID_LEN + 1];
        memcpy(uuid, id, DN_UUID_LEN);
        uuid[DN_UUID_LEN] = '\0';
        check_uuid_shape(uuid);
        CHECK(id[DN_UUID_LEN] == '-');
        CHECK_INT_EQ(trailing_ms(id), times[i]);
        CHECK(dn_user_id_valid(id, len));
        CHECK(!dn_session_id_valid(id, len));
    }
}

static void test_session_id_make(void)
{
    const int64_t times[] = {0, 1770181330638, 9999999999999999};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        char id[DN_ID_MAX + 1];
        size_t len = dn_session_id_make(id, times[i]);
        CHECK_UINT_EQ(len, strlen(id));
        CHECK(strncmp(id, "SESSION-", 8) == 0);
        char uuid[DN_UUID_LEN + 1];
        memcpy(uuid, id + 8, DN_UUID_LEN);
        uuid[DN_UUID_LEN] = '\0';
        check_uuid_shape(uuid);
        CHECK(id[8 + DN_UUID_LEN] == '-');
        CHECK_INT_EQ(trailing_ms(id), times[i]);
        CHECK(dn_session_id_valid(id, len));
        CHECK(!dn_user_id_valid(id, len));
    }
}

static void test_made_ids_differ(void)
{
    char a[DN_ID_MAX + 1], b[DN_ID_MAX + 1];
    dn_user_id_make(a, 1770181330638);
    dn_user_id_make(b, 1770181330638);
    CHECK(strcmp(a, b) != 0);
    dn_session_id_make(a, 1770181330638);
    dn_session_id_make(b, 1770181330638);
    CHECK(strcmp(a, b) != 0);
}

static bool user_id_valid(const char *s)
{
    return dn_user_id_valid(s, strlen(s));
}

static bool session_id_valid(const char *s)
{
    return dn_session_id_valid(s, strlen(s));
}

/* crypto.randomUUID() is lowercase, but older browser code and hand-made ids are not. */
static void test_valid_accepts_browser_ids(void)
{
    CHECK(user_id_valid(USER_ID));
    CHECK(user_id_valid("0F8FAD5B-D9CB-469F-A165-70867728950E-1770181330638"));
    CHECK(user_id_valid("0f8fad5b-D9CB-469f-a165-70867728950E-1"));
    CHECK(user_id_valid("0f8fad5b-d9cb-469f-a165-70867728950e-0"));
    CHECK(user_id_valid("0f8fad5b-d9cb-469f-a165-70867728950e-1234567890123456"));
    /* Any version: the shape is what the service relies on. */
    CHECK(user_id_valid("0f8fad5b-d9cb-169f-0165-70867728950e-1770181330638"));

    CHECK(session_id_valid(SESSION_ID));
    CHECK(session_id_valid("SESSION-0F8FAD5B-D9CB-469F-A165-70867728950E-1770181330638"));
    CHECK(session_id_valid("SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-1234567890123456"));
}

static void test_user_id_rejects(void)
{
    const char *bad[] = {
        "",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "0f8fad5b-d9cb-469f-a165-70867728950e-",
        "0f8fad5b-d9cb-469f-a165-70867728950e--1770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e-+1770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e-17701813306x8",
        "0f8fad5b-d9cb-469f-a165-70867728950e-abc",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1.5",
        "0f8fad5b-d9cb-469f-a165-70867728950e-12345678901234567",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638 ",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638x",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638-1",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638\n",
        "0f8fad5b-d9cb-469f-a165-70867728950e-1770\r181330638",
        "0f8fad5b-d9cb-469f-a165-7086772\n950e-1770181330638",
        " 0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638",
        "0f8fad5-bd9cb-469f-a165-70867728950e-1770181330638",
        "0f8fad5bd-9cb-469f-a165-70867728950e-1770181330638",
        "0f8fad5b-d9cb-469fa-165-70867728950e-1770181330638",
        "0f8fad5b-d9cb-469f-a16570867728950e--1770181330638",
        "0f8fad5b_d9cb_469f_a165_70867728950e-1770181330638",
        "0f8fad5g-d9cb-469f-a165-70867728950e-1770181330638",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}-1770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e1-770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e_1770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e01770181330638",
        "0f8fad5b-d9cb-469f-a165-70867728950e 1770181330638",
        SESSION_ID,
        "session-" USER_ID,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (user_id_valid(bad[i])) FAIL("user id accepted: \"%s\"", bad[i]);
}

static void test_session_id_rejects(void)
{
    const char *bad[] = {
        "",
        "SESSION-",
        "SESSION",
        USER_ID,
        "session-" USER_ID,
        "Session-" USER_ID,
        "SESSION_" USER_ID,
        "SESSION--" USER_ID,
        " SESSION-" USER_ID,
        "SESSION-SESSION-" USER_ID,
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-12345678901234567",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e--1770181330638",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638\r\n",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-1770181330638x",
        "SESSION-0f8fad5-bd9cb-469f-a165-70867728950e-1770181330638",
        "SESSION-0f8fad5b-d9cb-469f-a165-70867728950e_1770181330638",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (session_id_valid(bad[i])) FAIL("session id accepted: \"%s\"", bad[i]);
}

/* A C caller passes the length, so a NUL is just another byte that must not pass. */
static void test_valid_rejects_nul_inside(void)
{
    char user_with_nul[] = USER_ID;
    user_with_nul[DN_UUID_LEN + 4] = '\0';
    CHECK(!dn_user_id_valid(user_with_nul, sizeof user_with_nul - 1));
    char session_with_nul[] = SESSION_ID;
    session_with_nul[20] = '\0';
    CHECK(!dn_session_id_valid(session_with_nul, sizeof session_with_nul - 1));

    const char user_nul_after[] = USER_ID "\0";
    CHECK(!dn_user_id_valid(user_nul_after, sizeof user_nul_after - 1));
    /* The same bytes without the NUL are a fine id: only the length makes them bad. */
    CHECK(dn_user_id_valid(user_nul_after, sizeof user_nul_after - 2));
}

static void test_valid_rejects_long_ids(void)
{
    char id[512];
    for (size_t len = DN_ID_MAX - 2; len < sizeof id; len++) {
        memcpy(id, USER_ID, strlen(USER_ID));
        memset(id + strlen(USER_ID), '1', len - strlen(USER_ID));
        CHECK(!dn_user_id_valid(id, len));
        memcpy(id, SESSION_ID, strlen(SESSION_ID));
        memset(id + strlen(SESSION_ID), '1', len - strlen(SESSION_ID));
        CHECK(!dn_session_id_valid(id, len));
    }
}

static void test_random_fill_differs(void)
{
    uint8_t a[32], b[32];
    CHECK(dn_random_fill(a, sizeof a));
    CHECK(dn_random_fill(b, sizeof b));
    CHECK(memcmp(a, b, sizeof a) != 0);

    /* Beyond the pool's size the bytes come straight from the kernel. */
    static uint8_t big_a[4096], big_b[4096];
    CHECK(dn_random_fill(big_a, sizeof big_a));
    CHECK(dn_random_fill(big_b, sizeof big_b));
    CHECK(memcmp(big_a, big_b, sizeof big_a) != 0);

    uint8_t zeros[4096] = {0};
    CHECK(memcmp(big_a, zeros, sizeof big_a) != 0);
    CHECK(dn_random_fill(a, 0));
    CHECK(dn_random_u64() != dn_random_u64());
}

static void test_random_fill_many_small_draws_differ(void)
{
    /* Small draws walk through the pool and past its refill. */
    enum { DRAWS = 200 };
    static uint8_t draws[DRAWS][16];
    for (size_t i = 0; i < DRAWS; i++) CHECK(dn_random_fill(draws[i], 16));
    size_t repeats = 0;
    for (size_t i = 0; i < DRAWS; i++)
        for (size_t j = i + 1; j < DRAWS; j++)
            if (memcmp(draws[i], draws[j], 16) == 0) repeats++;
    CHECK_UINT_EQ(repeats, 0);
}

/* A forked child inherits the parent's pool; if it handed out the same unused bytes,
 * parent and child would make the same ids and idempotency keys. */
static void test_random_after_fork(void)
{
    for (int round = 0; round < 3; round++) {
        uint8_t warm[16];
        dn_random_fill(warm, sizeof warm); /* the pool now holds unused bytes */

        int pipe_fds[2];
        if (!CHECK(pipe(pipe_fds) == 0)) return;
        fflush(NULL);
        pid_t pid = fork();
        if (!CHECK(pid >= 0)) return;
        if (pid == 0) {
            uint8_t child_bytes[16];
            bool ok = dn_random_fill(child_bytes, sizeof child_bytes);
            ssize_t written = write(pipe_fds[1], child_bytes, sizeof child_bytes);
            _exit(ok && written == (ssize_t)sizeof child_bytes ? 0 : 1);
        }
        uint8_t parent_bytes[16], child_bytes[16];
        CHECK(dn_random_fill(parent_bytes, sizeof parent_bytes));
        close(pipe_fds[1]);
        ssize_t got = read(pipe_fds[0], child_bytes, sizeof child_bytes);
        close(pipe_fds[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!CHECK_INT_EQ(got, sizeof child_bytes)) return;
        CHECK(memcmp(parent_bytes, child_bytes, sizeof parent_bytes) != 0);
    }
}

int main(void)
{
    RUN_CASE(test_uuid_shape);
    RUN_CASE(test_uuids_distinct);
    RUN_CASE(test_uuid_format_of_known_bytes);
    RUN_CASE(test_user_id_make);
    RUN_CASE(test_session_id_make);
    RUN_CASE(test_made_ids_differ);
    RUN_CASE(test_valid_accepts_browser_ids);
    RUN_CASE(test_user_id_rejects);
    RUN_CASE(test_session_id_rejects);
    RUN_CASE(test_valid_rejects_nul_inside);
    RUN_CASE(test_valid_rejects_long_ids);
    RUN_CASE(test_random_fill_differs);
    RUN_CASE(test_random_fill_many_small_draws_differ);
    RUN_CASE(test_random_after_fork);
    return check_report("test_ids");
}
