/* The durable spool: record format, adoption of gone writers, torn and corrupt tails,
 * limits, write failures, locking across fork, space reclamation, and kill -9. */
#include "os.h"
#include "spool.h"
#include "folders.h"
#include "spool_format.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

/* Counts the spool's data syncs, since the sync option is part of the contract: this
 * definition in the test program takes the place of the C library's. */
static int data_syncs;
/* While positive, data syncs fail with EIO (a failing disk) and count it down. */
static int failing_syncs;

int fdatasync(int fd)
{
    data_syncs++;
    if (failing_syncs > 0) {
        failing_syncs--;
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* Stops the current test: what follows would only fail confusingly. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: requirement failed: %s\n", __FILE__, __LINE__, #cond);         \
            failures++;                                                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* A forked child that dies on purpose leaves its memory as it is; pointing at it from
 * here makes valgrind's leak check in the child count it as reachable, not lost. */
static void *volatile child_keeps[2];

#define PLAIN_BODY 100
#define PLAIN_SIZE (HEADER + 16 + 8 + 4 + PLAIN_BODY + 2 + 2)
#define MAX_RECORD 1024

typedef struct test_event {
    uint8_t key[16];
    char body[400];
    size_t body_len;
    bool has_ua;
    char ua[64];
    size_t ua_len;
    bool has_ip;
    char ip[32];
    size_t ip_len;
} test_event;

/* A key that names (salt, n), so a replayed event tells which one it is. */
static void make_key(uint8_t key[16], uint32_t salt, uint32_t n)
{
    put_u32(key, n);
    put_u32(key + 4, salt);
    for (int i = 8; i < 16; i++) key[i] = (uint8_t)(0xa5 ^ i ^ n);
}

/* Bodies of varied length with every byte value (NUL included) in them; no user agent
 * for every third event, no ip for every fourth. */
static void make_event(uint32_t salt, uint32_t n, test_event *e)
{
    memset(e, 0, sizeof *e);
    make_key(e->key, salt, n);
    int len = snprintf(e->body, sizeof e->body, "{\"n\":%u,\"salt\":%u,\"pad\":\"", n, salt);
    size_t pad = (n * 37u + salt) % 200;
    for (size_t i = 0; i < pad; i++) e->body[(size_t)len + i] = (char)((n + i * 7) & 0xff);
    e->body_len = (size_t)len + pad;
    e->has_ua = n % 3 != 0;
    if (e->has_ua) e->ua_len = (size_t)snprintf(e->ua, sizeof e->ua, "Mozilla/5.0 (test %u)", n);
    e->has_ip = n % 4 != 0;
    if (e->has_ip)
        e->ip_len = (size_t)snprintf(e->ip, sizeof e->ip, "10.0.%u.%u", n / 256, n % 256);
}

/* Always PLAIN_SIZE bytes on disk, to lay segments out exactly. */
static void make_plain_event(uint32_t salt, uint32_t n, test_event *e)
{
    memset(e, 0, sizeof *e);
    make_key(e->key, salt, n);
    memset(e->body, 'a' + (int)(n % 26), PLAIN_BODY);
    e->body_len = PLAIN_BODY;
}

static bool same_event(const test_event *a, const test_event *b)
{
    return memcmp(a->key, b->key, 16) == 0 && a->body_len == b->body_len &&
           memcmp(a->body, b->body, a->body_len) == 0 && a->has_ua == b->has_ua &&
           a->ua_len == b->ua_len && memcmp(a->ua, b->ua, a->ua_len) == 0 &&
           a->has_ip == b->has_ip && a->ip_len == b->ip_len && memcmp(a->ip, b->ip, a->ip_len) == 0;
}

/* An EVENT record; order is the writer's count of the event (its id). */
static size_t encode_event(uint8_t *out, const test_event *e, uint64_t order)
{
    uint32_t payload = (uint32_t)(16 + 8 + 4 + e->body_len + 2 + e->ua_len + 2 + e->ip_len);
    uint8_t *p = out + HEADER;
    memcpy(p, e->key, 16);
    p += 16;
    put_u64(p, order);
    p += 8;
    put_u32(p, (uint32_t)e->body_len);
    p += 4;
    memcpy(p, e->body, e->body_len);
    p += e->body_len;
    *p++ = (uint8_t)e->ua_len;
    *p++ = (uint8_t)(e->ua_len >> 8);
    memcpy(p, e->ua, e->ua_len);
    p += e->ua_len;
    *p++ = (uint8_t)e->ip_len;
    *p++ = (uint8_t)(e->ip_len >> 8);
    memcpy(p, e->ip, e->ip_len);
    return seal_record(out, TYPE_EVENT, payload);
}

static size_t encode_done(uint8_t *out, const uint8_t key[16])
{
    return encode_raw(out, TYPE_DONE, key, 16);
}

static size_t record_size(const test_event *e)
{
    uint8_t scratch[MAX_RECORD];
    return encode_event(scratch, e, 0);
}

/* Files and folders. */

static char *make_temp_dir(void)
{
    char templ[] = "/tmp/dn-spool-test-XXXXXX";
    if (!mkdtemp(templ)) return NULL;
    return strdup(templ);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static size_t count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL)
        if (entry->d_name[0] != '.' && ends_with(entry->d_name, suffix)) count++;
    closedir(d);
    return count;
}

/* The first file name ending in suffix and other than except (when given), into out. */
static bool find_other_file(const char *dir, const char *suffix, const char *except, char *out,
                            size_t out_size)
{
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.' || !ends_with(entry->d_name, suffix)) continue;
        if (except && strcmp(entry->d_name, except) == 0) continue;
        snprintf(out, out_size, "%s", entry->d_name);
        found = true;
    }
    closedir(d);
    return found;
}

static bool find_file(const char *dir, const char *suffix, char *out, size_t out_size)
{
    return find_other_file(dir, suffix, NULL, out, out_size);
}

static bool file_exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static uint64_t log_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    uint64_t total = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (!ends_with(entry->d_name, ".log")) continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        if (stat(path, &st) == 0) total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

/* The writer prefix of the only lock file in dir, and whether every segment there
 * belongs to it: after an adoption, nothing of the gone writers may remain. */
static bool only_one_writer(const char *dir)
{
    char lock[256];
    if (count_files(dir, ".lock") != 1 || !find_file(dir, ".lock", lock, sizeof lock)) return false;
    lock[strlen(lock) - strlen(".lock")] = '\0';
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (!ends_with(entry->d_name, ".log")) continue;
        if (strncmp(entry->d_name, lock, strlen(lock)) != 0 || entry->d_name[strlen(lock)] != '.')
            ok = false;
    }
    closedir(d);
    return ok;
}

static bool read_file(const char *dir, const char *name, uint8_t **data, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(size > 0 ? (size_t)size : 1);
    *len = size > 0 ? fread(*data, 1, (size_t)size, f) : 0;
    fclose(f);
    return size >= 0 && *len == (size_t)size;
}

static bool write_file(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = len == 0 || fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* Spools and replays. */

static dn_spool *open_spool(const char *dir, dn_spool_sync sync, uint64_t max_bytes,
                            uint64_t segment_bytes)
{
    dn_spool_options options = {.dir = dir,
                                .sync = sync,
                                .interval_ms = 20,
                                .max_bytes = max_bytes,
                                .segment_bytes = segment_bytes};
    char err[256] = "";
    dn_spool *s = dn_spool_open(&options, err, sizeof err);
    if (!s) fprintf(stderr, "dn_spool_open(%s): %s\n", dir, err);
    return s;
}

static dn_spool *open_default(const char *dir)
{
    return open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 26, 0);
}

static dn_spool_status append_event(dn_spool *s, const test_event *e, uint64_t *id)
{
    return dn_spool_append(s, e->key, e->body, e->body_len, e->has_ua ? e->ua : NULL, e->ua_len,
                           e->has_ip ? e->ip : NULL, e->ip_len, id);
}

typedef struct replayed {
    test_event *events;
    uint64_t *ids;
    size_t count, cap;
    bool malformed; /* an event that cannot be one we appended */
} replayed;

static void on_replay(void *ud, const dn_spool_event *ev)
{
    replayed *r = ud;
    if (r->count == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->events = realloc(r->events, r->cap * sizeof *r->events);
        r->ids = realloc(r->ids, r->cap * sizeof *r->ids);
    }
    test_event *e = &r->events[r->count];
    memset(e, 0, sizeof *e);
    r->ids[r->count++] = ev->id;
    if (ev->body_len > sizeof e->body || ev->user_agent_len > sizeof e->ua ||
        ev->client_ip_len > sizeof e->ip || (ev->user_agent == NULL) != (ev->user_agent_len == 0) ||
        (ev->client_ip == NULL) != (ev->client_ip_len == 0)) {
        r->malformed = true;
        return;
    }
    memcpy(e->key, ev->idempotency_key, 16);
    memcpy(e->body, ev->body, ev->body_len);
    e->body_len = ev->body_len;
    e->has_ua = ev->user_agent != NULL;
    if (e->has_ua) memcpy(e->ua, ev->user_agent, ev->user_agent_len);
    e->ua_len = ev->user_agent_len;
    e->has_ip = ev->client_ip != NULL;
    if (e->has_ip) memcpy(e->ip, ev->client_ip, ev->client_ip_len);
    e->ip_len = ev->client_ip_len;
}

static void replayed_free(replayed *r)
{
    free(r->events);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

static bool replay(dn_spool *s, replayed *r)
{
    replayed_free(r);
    return dn_spool_replay(s, on_replay, r) && !r->malformed;
}

/* Whether r holds exactly the events (salt, n) for the listed n, in that order. */
static bool replayed_exactly(const replayed *r, uint32_t salt, const uint32_t *ns, size_t count,
                             void (*make)(uint32_t, uint32_t, test_event *))
{
    if (r->count != count) {
        fprintf(stderr, "  replayed %zu events, expected %zu\n", r->count, count);
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        test_event want;
        make(salt, ns[i], &want);
        if (!same_event(&r->events[i], &want)) {
            fprintf(stderr, "  replayed event %zu differs from event %u\n", i, ns[i]);
            return false;
        }
    }
    return true;
}

static bool replayed_first(const replayed *r, uint32_t salt, uint32_t count)
{
    uint32_t *ns = malloc((count ? count : 1) * sizeof *ns);
    for (uint32_t i = 0; i < count; i++) ns[i] = i;
    bool ok = replayed_exactly(r, salt, ns, count, make_event);
    free(ns);
    return ok;
}

/* Tests. */

static void test_crc32c_vectors(void)
{
    uint8_t zeros[32] = {0}, ones[32], ascending[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++) ascending[i] = (uint8_t)i;
    CHECK(crc32c("123456789", 9) == 0xe3069283u);
    /* RFC 3720, B.4 */
    CHECK(crc32c(zeros, 32) == 0x8a9136aau);
    CHECK(crc32c(ones, 32) == 0x62a8ab43u);
    CHECK(crc32c(ascending, 32) == 0x46dd794eu);
    CHECK(crc32c("", 0) == 0);
}

/* The spool writes exactly the bytes of the format, CRC-32C included: the CRC above is
 * checked against known vectors, so this checks the spool's own CRC against them. */
static void test_on_disk_format(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    uint64_t ids[6];
    test_event events[6];
    for (uint32_t n = 0; n < 6; n++) {
        make_event(1, n, &events[n]);
        CHECK(append_event(s, &events[n], &ids[n]) == DN_SPOOL_OK);
    }
    CHECK(dn_spool_mark_done(s, ids[2]) == DN_SPOOL_OK);
    dn_spool_close(s);

    static uint8_t want[8 * MAX_RECORD];
    size_t want_len = 0;
    for (int n = 0; n < 6; n++) want_len += encode_event(want + want_len, &events[n], ids[n]);
    want_len += encode_done(want + want_len, events[2].key);

    char name[256];
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK(count_files(dir, ".log") == 1);
    REQUIRE(find_file(dir, ".1.log", name, sizeof name));
    REQUIRE(read_file(dir, name, &data, &len));
    CHECK(len == want_len);
    CHECK(len == want_len && memcmp(data, want, len) == 0);
    free(data);
    remove_tree(dir);
    free(dir);
}

/* Round trip through close and reopen, for every sync mode: a new writer adopts the
 * closed one (its lock is free), byte for byte, in order, and removes its files. */
static void test_round_trip(void)
{
    dn_spool_sync modes[] = {DN_SPOOL_SYNC_ALWAYS, DN_SPOOL_SYNC_INTERVAL, DN_SPOOL_SYNC_NEVER};
    for (size_t m = 0; m < 3; m++) {
        char *dir = make_temp_dir();
        REQUIRE(dir);
        dn_spool *s = open_spool(dir, modes[m], 1 << 26, 0);
        REQUIRE(s);
        replayed r = {0};
        CHECK(replay(s, &r) && r.count == 0);
        uint64_t ids[40];
        for (uint32_t n = 0; n < 40; n++) {
            test_event e;
            make_event(2, n, &e);
            CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
            CHECK(ids[n] != 0 && (n == 0 || ids[n] != ids[n - 1]));
            if (n % 10 == 9) dn_spool_tick(s, 1000 * n);
        }
        uint8_t empty_key[16] = {0xee};
        uint64_t empty_id;
        CHECK(dn_spool_append(s, empty_key, "", 0, NULL, 0, NULL, 0, &empty_id) == DN_SPOOL_OK);
        CHECK(dn_spool_pending(s) == 41);
        CHECK(dn_spool_bytes(s) == log_bytes(dir));
        dn_spool_close(s);

        int syncs = data_syncs;
        s = open_spool(dir, modes[m], 1 << 26, 0);
        REQUIRE(s);
        CHECK(data_syncs > syncs); /* the adopted copies, whatever the mode */
        CHECK(dn_spool_pending(s) == 41);
        CHECK(replay(s, &r));
        CHECK(r.count == 41);
        r.count = r.count ? r.count - 1 : 0;
        CHECK(replayed_first(&r, 2, 40));
        if (r.count == 40) {
            test_event *last = &r.events[40];
            CHECK(memcmp(last->key, empty_key, 16) == 0 && last->body_len == 0 && !last->has_ua &&
                  !last->has_ip);
        }
        CHECK(only_one_writer(dir));
        CHECK(dn_spool_bytes(s) == log_bytes(dir));
        dn_spool_close(s);
        replayed_free(&r);
        remove_tree(dir);
        free(dir);
    }
}

static void test_done_not_replayed(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    uint64_t ids[10];
    for (uint32_t n = 0; n < 10; n++) {
        test_event e;
        make_event(3, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
    }
    CHECK(dn_spool_mark_done(s, ids[0]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[3]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[9]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[3]) == DN_SPOOL_ERROR);
    CHECK(dn_spool_mark_done(s, 0) == DN_SPOOL_ERROR);
    CHECK(dn_spool_mark_done(s, ids[9] + 1000) == DN_SPOOL_ERROR);
    CHECK(strlen(dn_spool_error(s)) > 0);
    CHECK(dn_spool_pending(s) == 7);
    replayed r = {0};
    uint32_t want[] = {1, 2, 4, 5, 6, 7, 8};
    CHECK(replay(s, &r) && replayed_exactly(&r, 3, want, 7, make_event));
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    CHECK(replay(s, &r));
    CHECK(replayed_exactly(&r, 3, want, 7, make_event));
    /* The adopter's ids are its own and work as well. */
    for (size_t i = 0; i < r.count; i++) CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
    CHECK(dn_spool_pending(s) == 0);
    dn_spool_close(s);
    s = open_default(dir);
    REQUIRE(s);
    CHECK(replay(s, &r) && r.count == 0);
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Long use: many events done out of order, the bookkeeping squeezed, segments
 * compacted, more appended; every id still finds its event, and replay, here and
 * after a restart, lists exactly the pending ones in the order they were appended. */
static void test_ids_over_long_use(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 4096);
    REQUIRE(s);
    static uint64_t ids[900];
    test_event e;
    for (uint32_t n = 0; n < 600; n++) {
        make_event(22, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
        if (n >= 3 && n % 3 != 0) CHECK(dn_spool_mark_done(s, ids[n - 3]) == DN_SPOOL_OK);
    }
    dn_spool_tick(s, 0);
    for (uint32_t n = 600; n < 900; n++) {
        make_event(22, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
        if (n % 3 == 0) CHECK(dn_spool_mark_done(s, ids[n]) == DN_SPOOL_OK);
        if (n % 50 == 0) dn_spool_tick(s, 0);
    }
    /* Pending: n % 3 == 0 below 600, and n % 3 != 0 from 597 on. */
    static uint32_t want[900];
    size_t count = 0;
    for (uint32_t n = 0; n < 900; n++)
        if (n % 3 == 0 ? n < 600 : n >= 597) want[count++] = n;
    CHECK(dn_spool_pending(s) == count);
    replayed r = {0};
    CHECK(replay(s, &r) && replayed_exactly(&r, 22, want, count, make_event));
    bool same_ids = r.count == count;
    for (size_t i = 0; same_ids && i < count; i++) same_ids = r.ids[i] == ids[want[i]];
    CHECK(same_ids);
    for (size_t i = 0; i < count; i += 2) CHECK(dn_spool_mark_done(s, ids[want[i]]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[1]) == DN_SPOOL_ERROR);
    for (int t = 0; t < 20; t++) dn_spool_tick(s, 0);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    size_t odd = 0;
    for (size_t i = 1; i < count; i += 2) want[odd++] = want[i];
    CHECK(replay(s, &r) && replayed_exactly(&r, 22, want, odd, make_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Many events over many segments, adopted twice over: order and content survive. */
static void test_order_over_segments(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 1024);
    REQUIRE(s);
    for (uint32_t n = 0; n < 500; n++) {
        test_event e;
        make_event(4, n, &e);
        CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    }
    CHECK(count_files(dir, ".log") > 20);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    replayed r = {0};
    /* Adoption deletes the originals, so it syncs the copies whatever the sync mode. */
    int syncs = data_syncs;
    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 1024);
    REQUIRE(s);
    CHECK(data_syncs > syncs);
    CHECK(replay(s, &r));
    CHECK(replayed_first(&r, 4, 500));
    CHECK(only_one_writer(dir));
    dn_spool_close(s);

    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 1024);
    REQUIRE(s);
    CHECK(replay(s, &r));
    CHECK(replayed_first(&r, 4, 500));
    /* Half done, by the ids this writer handed out for adopted events. */
    for (size_t i = 0; i < r.count; i += 2) CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
    dn_spool_close(s);

    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 1024);
    REQUIRE(s);
    CHECK(replay(s, &r));
    uint32_t odd[250];
    for (uint32_t i = 0; i < 250; i++) odd[i] = 2 * i + 1;
    CHECK(replayed_exactly(&r, 4, odd, 250, make_event));

    /* Most done and more appended: compaction moves the few left in old segments
     * behind the new ones, and the next writer still replays them first. */
    static uint32_t want[150];
    size_t count = 0;
    for (size_t i = 0; i < r.count; i++) {
        if (i % 5 == 0)
            want[count++] = 2 * (uint32_t)i + 1;
        else
            CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
    }
    for (uint32_t n = 500; n < 600; n++) {
        test_event e;
        make_event(4, n, &e);
        CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
        want[count++] = n;
        if (n % 5 == 0) dn_spool_tick(s, 0);
    }
    CHECK(count == 150);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 1024);
    REQUIRE(s);
    CHECK(replay(s, &r));
    CHECK(replayed_exactly(&r, 4, want, count, make_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Writes a spool of three events with the spool itself and hands back its segment. */
static bool three_event_segment(uint32_t salt, char *writer, size_t writer_size, uint8_t **data,
                                size_t *len)
{
    char *dir = make_temp_dir();
    if (!dir) return false;
    dn_spool *s = open_default(dir);
    bool ok = s != NULL;
    for (uint32_t n = 0; ok && n < 3; n++) {
        test_event e;
        make_event(salt, n, &e);
        ok = append_event(s, &e, NULL) == DN_SPOOL_OK;
    }
    dn_spool_close(s);
    char name[256];
    ok = ok && find_file(dir, ".1.log", name, sizeof name) && read_file(dir, name, data, len);
    if (ok) {
        name[strlen(name) - strlen(".1.log")] = '\0';
        snprintf(writer, writer_size, "%s", name);
    }
    remove_tree(dir);
    free(dir);
    return ok;
}

/* Leaves a gone writer's segment (and, when asked, its free lock file) in a fresh
 * folder, opens a spool there and replays. */
static bool adopt_segment(const char *writer, const uint8_t *data, size_t len, bool with_lock,
                          replayed *r, bool *files_removed)
{
    char *dir = make_temp_dir();
    if (!dir) return false;
    char name[256];
    snprintf(name, sizeof name, "%s.1.log", writer);
    bool ok = write_file(dir, name, data, len);
    char lock[256];
    snprintf(lock, sizeof lock, "%s.lock", writer);
    if (with_lock) ok = ok && write_file(dir, lock, NULL, 0);
    dn_spool *s = ok ? open_default(dir) : NULL;
    ok = s && replay(s, r);
    *files_removed = !file_exists(dir, name) && !file_exists(dir, lock) && only_one_writer(dir);
    dn_spool_close(s);
    remove_tree(dir);
    free(dir);
    return ok;
}

static void test_torn_tail(void)
{
    char writer[256];
    uint8_t *data = NULL;
    size_t len = 0;
    REQUIRE(three_event_segment(5, writer, sizeof writer, &data, &len));
    test_event last;
    make_event(5, 2, &last);
    size_t last_start = len - record_size(&last);
    replayed r = {0};
    for (size_t cut = last_start; cut < len; cut++) {
        bool removed = false;
        CHECK(adopt_segment(writer, data, cut, cut % 2 == 0, &r, &removed));
        CHECK(replayed_first(&r, 5, 2));
        CHECK(removed);
    }
    bool removed = false;
    CHECK(adopt_segment(writer, data, len, true, &r, &removed));
    CHECK(replayed_first(&r, 5, 3));
    replayed_free(&r);
    free(data);
}

static void test_garbage_after_records(void)
{
    char writer[256];
    uint8_t *data = NULL;
    size_t len = 0;
    REQUIRE(three_event_segment(6, writer, sizeof writer, &data, &len));
    uint8_t *grown = malloc(len + 4096);
    REQUIRE(grown);
    memcpy(grown, data, len);
    replayed r = {0};
    bool removed;

    for (size_t i = 0; i < 200; i++) grown[len + i] = (uint8_t)rand();
    CHECK(adopt_segment(writer, grown, len + 200, true, &r, &removed) && replayed_first(&r, 6, 3));

    memset(grown + len, 0, 4096); /* what a power cut can leave after a file's end */
    CHECK(adopt_segment(writer, grown, len + 4096, true, &r, &removed) && replayed_first(&r, 6, 3));

    /* A plausible header claiming more than the file holds. */
    put_u32(grown + len, MAGIC);
    put_u32(grown + len + 4, 1000);
    CHECK(adopt_segment(writer, grown, len + 300, true, &r, &removed) && replayed_first(&r, 6, 3));

    /* A whole record whose CRC is off by one bit. */
    test_event extra;
    make_event(6, 3, &extra);
    size_t extra_len = encode_event(grown + len, &extra, 4);
    grown[len + 8] ^= 1;
    CHECK(adopt_segment(writer, grown, len + extra_len, true, &r, &removed) &&
          replayed_first(&r, 6, 3));
    grown[len + 8] ^= 1;
    CHECK(adopt_segment(writer, grown, len + extra_len, true, &r, &removed) &&
          replayed_first(&r, 6, 4));

    replayed_free(&r);
    free(grown);
    free(data);
}

/* Any byte of the middle record changed: the CRC (or a length check) catches it, and
 * nothing from that record on is replayed. */
static void test_flipped_byte_in_middle(void)
{
    char writer[256];
    uint8_t *data = NULL;
    size_t len = 0;
    REQUIRE(three_event_segment(7, writer, sizeof writer, &data, &len));
    test_event first, middle;
    make_event(7, 0, &first);
    make_event(7, 1, &middle);
    size_t start = record_size(&first), end = start + record_size(&middle);
    replayed r = {0};
    for (size_t at = start; at < end; at++) {
        bool removed;
        data[at] ^= 0x40;
        CHECK(adopt_segment(writer, data, len, true, &r, &removed));
        if (!replayed_first(&r, 7, 1)) fprintf(stderr, "  with byte %zu flipped\n", at - start);
        CHECK(replayed_first(&r, 7, 1));
        data[at] ^= 0x40;
    }
    replayed_free(&r);
    free(data);
}

/* Records whose CRC is right but whose inner lengths do not add up to the record's,
 * or whose type is unknown: corrupt all the same, and nothing after them is read. */
static void test_inner_lengths(void)
{
    test_event first, middle, last;
    make_event(19, 0, &first);
    make_event(19, 1, &middle);
    make_event(19, 2, &last);
    middle.has_ua = middle.has_ip = true;
    middle.ua_len = (size_t)snprintf(middle.ua, sizeof middle.ua, "agent");
    middle.ip_len = (size_t)snprintf(middle.ip, sizeof middle.ip, "10.1.2.3");
    static uint8_t good[MAX_RECORD], bad[MAX_RECORD], seg[4 * MAX_RECORD];
    size_t good_len = encode_event(good, &middle, 2) - HEADER;
    uint8_t *payload = good + HEADER;
    size_t body_at = 24, ua_at = 28 + middle.body_len, ip_at = ua_at + 2 + middle.ua_len;
    struct {
        const char *what;
        size_t at; /* where the length to change lies in the payload */
        int delta; /* added to it */
        int trim;  /* bytes cut from the payload's end */
        uint8_t type;
    } cases[] = {
        {"body longer than the record", body_at, 1, 0, TYPE_EVENT},
        {"body much longer than the record", body_at + 2, 1, 0, TYPE_EVENT},
        {"user agent longer than the record", ua_at, 40, 0, TYPE_EVENT},
        {"ip shorter than the rest", ip_at, -1, 0, TYPE_EVENT},
        {"ip longer than the rest", ip_at, 1, 0, TYPE_EVENT},
        {"payload cut short", 0, 0, 3, TYPE_EVENT},
        {"payload shorter than the fixed part", 0, 0, (int)good_len - 10, TYPE_EVENT},
        {"unknown type", 0, 0, 0, 4},
        {"EVENT of the format before orders", 0, 0, 0, 1},
        {"DONE of the wrong length", 0, 0, (int)good_len - 17, TYPE_DONE},
    };
    replayed r = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, payload, good_len);
        if (cases[c].delta) {
            uint16_t v = (uint16_t)(bad[cases[c].at] | bad[cases[c].at + 1] << 8);
            v = (uint16_t)(v + cases[c].delta);
            bad[cases[c].at] = (uint8_t)v;
            bad[cases[c].at + 1] = (uint8_t)(v >> 8);
        }
        size_t len = encode_event(seg, &first, 1);
        len +=
            encode_raw(seg + len, cases[c].type, bad, (uint32_t)(good_len - (size_t)cases[c].trim));
        len += encode_event(seg + len, &last, 3);
        bool removed;
        CHECK(adopt_segment("77-0123456789abcdef", seg, len, true, &r, &removed));
        if (!replayed_first(&r, 19, 1)) fprintf(stderr, "  case: %s\n", cases[c].what);
        CHECK(replayed_first(&r, 19, 1));
    }
    /* A whole EVENT record of the format before orders (type 1, no order) is damage
     * too: nothing from it on is replayed. */
    uint8_t old[64] = {0};
    memcpy(old, middle.key, 16);
    put_u32(old + 16, 2);
    memcpy(old + 20, "{}", 2);
    size_t old_len = encode_event(seg, &first, 1);
    old_len += encode_raw(seg + old_len, 1, old, 16 + 4 + 2 + 2 + 2);
    old_len += encode_event(seg + old_len, &last, 3);
    bool old_removed;
    CHECK(adopt_segment("77-0123456789abcdef", seg, old_len, true, &r, &old_removed));
    CHECK(replayed_first(&r, 19, 1));
    /* The unchanged middle record is accepted: the cases above fail for their change. */
    size_t len = encode_event(seg, &first, 1);
    len += encode_raw(seg + len, TYPE_EVENT, payload, (uint32_t)good_len);
    bool removed;
    CHECK(adopt_segment("77-0123456789abcdef", seg, len, true, &r, &removed));
    CHECK(r.count == 2 && same_event(&r.events[1], &middle));
    replayed_free(&r);
}

/* Hand-made files: duplicates within a writer, DONE records in a later segment and in
 * another gone writer, an orphan without a lock, and foreign files left alone. */
static void test_adoption_rules(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    static uint8_t seg[8 * MAX_RECORD];
    test_event e[6];
    for (uint32_t n = 0; n < 6; n++) make_event(8, n, &e[n]);
    const char *a = "4242-00112233445566aa", *b = "4343-0011223344556677";
    const char *c = "1111-00000000000000cc"; /* read first: its DONE precedes the EVENT */
    char name[256];

    size_t len = 0; /* a.1.log: E0 E1 E2 E0 (a copy from a crash mid-adoption) E5 */
    len += encode_event(seg + len, &e[0], 1);
    len += encode_event(seg + len, &e[1], 2);
    len += encode_event(seg + len, &e[2], 3);
    len += encode_event(seg + len, &e[0], 1);
    len += encode_event(seg + len, &e[5], 6);
    snprintf(name, sizeof name, "%s.1.log", a);
    CHECK(write_file(dir, name, seg, len));
    len = 0; /* a.2.log: DONE E1, E3, DONE of a key never seen, E4 with a bad CRC, E2 again */
    len += encode_done(seg + len, e[1].key);
    len += encode_event(seg + len, &e[3], 4);
    uint8_t unknown[16] = {1, 2, 3};
    len += encode_done(seg + len, unknown);
    size_t bad = len;
    len += encode_event(seg + len, &e[4], 5);
    seg[bad + 20] ^= 1;
    len += encode_event(seg + len, &e[2], 3);
    snprintf(name, sizeof name, "%s.2.log", a);
    CHECK(write_file(dir, name, seg, len));
    /* No a.lock: an orphan. b has a free lock and one segment finishing E3. */
    len = encode_done(seg, e[3].key);
    snprintf(name, sizeof name, "%s.1.log", b);
    CHECK(write_file(dir, name, seg, len));
    snprintf(name, sizeof name, "%s.lock", b);
    CHECK(write_file(dir, name, NULL, 0));
    len = encode_done(seg, e[5].key);
    snprintf(name, sizeof name, "%s.3.log", c);
    CHECK(write_file(dir, name, seg, len));
    const char *foreign[] = {"notes.txt", "4242-00112233445566aa.01.log", "12-XYZ.1.log",
                             "4242-00112233445566aa.1.log.bak", "4242-0011.lock"};
    for (size_t i = 0; i < 5; i++) CHECK(write_file(dir, foreign[i], (const uint8_t *)"x", 1));

    dn_spool *s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    CHECK(replay(s, &r));
    uint32_t want[] = {0, 2};
    CHECK(replayed_exactly(&r, 8, want, 2, make_event));
    for (size_t i = 0; i < 5; i++) CHECK(file_exists(dir, foreign[i]));
    CHECK(count_files(dir, ".lock") == 2); /* ours and the foreign one */
    snprintf(name, sizeof name, "%s.1.log", a);
    CHECK(!file_exists(dir, name));
    snprintf(name, sizeof name, "%s.2.log", a);
    CHECK(!file_exists(dir, name));
    snprintf(name, sizeof name, "%s.lock", a);
    CHECK(!file_exists(dir, name));
    snprintf(name, sizeof name, "%s.lock", b);
    CHECK(!file_exists(dir, name));
    snprintf(name, sizeof name, "%s.3.log", c);
    CHECK(!file_exists(dir, name));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

static void test_max_bytes(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 2048, 0);
    REQUIRE(s);
    uint64_t ids[32];
    size_t accepted = 0;
    dn_spool_status status = DN_SPOOL_OK;
    test_event e;
    while (accepted < 32) {
        make_plain_event(9, (uint32_t)accepted, &e);
        status = append_event(s, &e, &ids[accepted]);
        if (status != DN_SPOOL_OK) break;
        accepted++;
        CHECK(dn_spool_bytes(s) <= 2048);
    }
    CHECK(status == DN_SPOOL_FULL);
    CHECK(accepted == 2048 / PLAIN_SIZE);
    uint64_t bytes = dn_spool_bytes(s);
    CHECK(bytes == log_bytes(dir));
    CHECK(append_event(s, &e, NULL) == DN_SPOOL_FULL);
    CHECK(dn_spool_bytes(s) == bytes && log_bytes(dir) == bytes);
    CHECK(dn_spool_pending(s) == accepted);

    /* Once done and reclaimed there is room again. */
    for (size_t i = 0; i < accepted; i++) CHECK(dn_spool_mark_done(s, ids[i]) == DN_SPOOL_OK);
    dn_spool_tick(s, 0);
    CHECK(dn_spool_bytes(s) < bytes);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    make_plain_event(9, 100, &e);
    CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    dn_spool_close(s);

    s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 2048, 0);
    REQUIRE(s);
    replayed r = {0};
    uint32_t want[] = {100};
    CHECK(replay(s, &r) && replayed_exactly(&r, 9, want, 1, make_plain_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);

    /* A bound met exactly still accepts. */
    dir = make_temp_dir();
    REQUIRE(dir);
    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 14 * PLAIN_SIZE, 0);
    REQUIRE(s);
    for (accepted = 0; accepted < 15; accepted++) {
        make_plain_event(9, (uint32_t)accepted, &e);
        if (append_event(s, &e, NULL) != DN_SPOOL_OK) break;
    }
    CHECK(accepted == 14);
    CHECK(dn_spool_bytes(s) == 14 * PLAIN_SIZE);
    dn_spool_close(s);
    remove_tree(dir);
    free(dir);
}

static void test_event_limits(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    uint8_t key[16] = {0};
    static char big[70000];
    CHECK(dn_spool_append(s, key, "x", 1, big, sizeof big, NULL, 0, NULL) == DN_SPOOL_ERROR);
    CHECK(dn_spool_append(s, key, "x", 1, NULL, 0, big, sizeof big, NULL) == DN_SPOOL_ERROR);
    /* Refused from the lengths alone: the body is never read. */
    CHECK(dn_spool_append(s, key, "x", (size_t)UINT32_MAX, NULL, 0, NULL, 0, NULL) ==
          DN_SPOOL_ERROR);
    CHECK(dn_spool_append(s, key, "x", SIZE_MAX, NULL, 0, NULL, 0, NULL) == DN_SPOOL_ERROR);
    CHECK(dn_spool_pending(s) == 0 && dn_spool_bytes(s) == 0 && log_bytes(dir) == 0);
    CHECK(dn_spool_append(s, key, "x", 1, big, 65535, big, 65535, NULL) == DN_SPOOL_OK);
    dn_spool_close(s);
    remove_tree(dir);
    free(dir);
}

static void test_creates_folders(void)
{
    char *base = make_temp_dir();
    REQUIRE(base);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/a/b/spool", base);
    dn_spool *s = open_default(dir);
    CHECK(s != NULL);
    struct stat st;
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    dn_spool_close(s);

    dn_spool_options options = {.dir = NULL, .sync = DN_SPOOL_SYNC_ALWAYS};
    char err[128] = "";
    CHECK(dn_spool_open(&options, err, sizeof err) == NULL && err[0]);
    snprintf(dir, sizeof dir, "%s/a/file", base);
    CHECK(write_file(base, "a/file", (const uint8_t *)"x", 1));
    options.dir = dir;
    err[0] = '\0';
    CHECK(dn_spool_open(&options, err, sizeof err) == NULL && err[0]);
    remove_tree(base);
    free(base);
}

/* A file size limit (ulimit -f) ends segments early instead of letting a write pass it
 * and raise SIGXFSZ, whose default action (kept here) kills the process. A record
 * larger than the limit is refused without writing: root ignores modes, so this also
 * stands in for a failing disk. */
static void test_write_failure(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    test_event e;
    for (uint32_t n = 0; n < 3; n++) {
        make_event(10, n, &e);
        CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    }
    uint64_t size = log_bytes(dir);
    CHECK(dn_spool_bytes(s) == size);
    CHECK(count_files(dir, ".log") == 1);

    struct rlimit saved, limit;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    limit = saved;
    limit.rlim_cur = (rlim_t)size + 10;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    make_event(10, 3, &e);
    dn_spool_status status = append_event(s, &e, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    CHECK(status == DN_SPOOL_OK);
    CHECK(count_files(dir, ".log") == 2);
    size = log_bytes(dir);
    CHECK(dn_spool_bytes(s) == size);

    make_event(10, 4, &e);
    limit.rlim_cur = (rlim_t)record_size(&e) - 1;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    status = append_event(s, &e, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    CHECK(status == DN_SPOOL_ERROR);
    CHECK(strstr(dn_spool_error(s), "File too large") != NULL);
    CHECK(log_bytes(dir) == size);
    CHECK(dn_spool_bytes(s) == size);
    CHECK(dn_spool_pending(s) == 4);

    CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    CHECK(replay(s, &r) && replayed_first(&r, 10, 5));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* A write that fails (the disk is full, or fails) is cut off again, and what follows
 * goes to a new segment: the old one is removed once its events are done, so that its
 * space serves the next appends. */
static void test_space_after_failed_write(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    test_event e;
    uint64_t ids[3];
    for (uint32_t n = 0; n < 3; n++) {
        make_event(11, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
    }
    uint64_t size = log_bytes(dir);
    failing_syncs = 1;
    make_event(11, 3, &e);
    CHECK(append_event(s, &e, NULL) == DN_SPOOL_ERROR);
    CHECK(failing_syncs == 0);
    CHECK(strstr(dn_spool_error(s), "Input/output error") != NULL);
    CHECK(log_bytes(dir) == size);
    CHECK(dn_spool_bytes(s) == size);
    CHECK(dn_spool_pending(s) == 3);

    /* Still pending: the segment stays. */
    dn_spool_tick(s, dn_mono_ms());
    CHECK(count_files(dir, ".log") == 1);
    for (int i = 0; i < 3; i++) CHECK(dn_spool_mark_done(s, ids[i]) == DN_SPOOL_OK);
    dn_spool_tick(s, dn_mono_ms());
    CHECK(count_files(dir, ".log") == 1);
    CHECK(log_bytes(dir) == 3 * DONE_SIZE);
    CHECK(dn_spool_bytes(s) == 3 * DONE_SIZE);

    make_event(11, 4, &e);
    CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    CHECK(count_files(dir, ".log") == 1);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    uint32_t want[] = {4};
    CHECK(replay(s, &r) && replayed_exactly(&r, 11, want, 1, make_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Plain events, but the fourth one too large for the file size limit below. */
static void make_adoption_event(uint32_t n, test_event *e)
{
    make_plain_event(21, n, e);
    if (n != 3) return;
    memset(e->body, 'z', 3 * PLAIN_BODY);
    e->body_len = 3 * PLAIN_BODY;
}

/* Adoption that fails half way (a record over the file size limit, as a disk that
 * fills while copying): the writer copied in full is removed, the other keeps its
 * files, and the next opener replays every event exactly once. */
static void test_adoption_failure(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    static uint8_t seg[16 * MAX_RECORD];
    const char *first = "1-aaaaaaaaaaaaaaaa", *second = "2-bbbbbbbbbbbbbbbb";
    char name[256];
    test_event e;
    make_adoption_event(0, &e);
    size_t len = encode_event(seg, &e, 1);
    snprintf(name, sizeof name, "%s.1.log", first);
    CHECK(write_file(dir, name, seg, len));
    len = 0;
    for (uint32_t n = 1; n <= 10; n++) {
        make_adoption_event(n, &e);
        len += encode_event(seg + len, &e, n);
    }
    snprintf(name, sizeof name, "%s.1.log", second);
    CHECK(write_file(dir, name, seg, len));

    struct rlimit saved, limit;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    limit = saved;
    limit.rlim_cur = PLAIN_SIZE + 50; /* fits each plain event, not the fourth one */
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    dn_spool *s = open_default(dir);
    setrlimit(RLIMIT_FSIZE, &saved);
    REQUIRE(s);
    CHECK(strstr(dn_spool_error(s), "File too large") != NULL);
    snprintf(name, sizeof name, "%s.1.log", first);
    CHECK(!file_exists(dir, name));
    snprintf(name, sizeof name, "%s.1.log", second);
    CHECK(file_exists(dir, name));
    replayed r = {0};
    CHECK(replay(s, &r) && r.count == 3);
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    CHECK(replay(s, &r) && r.count == 11);
    int seen[11] = {0};
    for (size_t i = 0; i < r.count; i++) {
        uint32_t n = get_u32(r.events[i].key);
        make_adoption_event(n, &e);
        CHECK(n <= 10 && same_event(&r.events[i], &e));
        if (n <= 10) seen[n]++;
    }
    for (int n = 0; n <= 10; n++) CHECK(seen[n] == 1);
    CHECK(only_one_writer(dir));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

static void test_two_live_writers(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    replayed r = {0};
    test_event e;
    dn_spool *one = open_default(dir);
    REQUIRE(one);
    for (uint32_t n = 0; n < 2; n++) {
        make_event(11, n, &e);
        CHECK(append_event(one, &e, NULL) == DN_SPOOL_OK);
    }
    dn_spool *two = open_default(dir);
    REQUIRE(two);
    CHECK(replay(two, &r) && r.count == 0);
    make_event(12, 0, &e);
    CHECK(append_event(two, &e, NULL) == DN_SPOOL_OK);
    CHECK(dn_spool_pending(one) == 2 && dn_spool_pending(two) == 1);
    CHECK(count_files(dir, ".lock") == 2);

    dn_spool_close(one);
    dn_spool *three = open_default(dir);
    REQUIRE(three);
    CHECK(replay(three, &r) && replayed_first(&r, 11, 2));

    dn_spool_close(two);
    dn_spool_close(three);
    dn_spool *four = open_default(dir);
    REQUIRE(four);
    CHECK(replay(four, &r) && r.count == 3);
    CHECK(only_one_writer(dir));
    dn_spool_close(four);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* A child appends 10 events, marks 3 done and dies without closing: a new writer
 * adopts exactly the other 7 and removes every file of the dead one. */
static void test_dead_writer(void)
{
    for (int killed = 0; killed < 2; killed++) {
        char *dir = make_temp_dir();
        REQUIRE(dir);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 26, 300);
            if (!s) _exit(2);
            uint64_t ids[10];
            for (uint32_t n = 0; n < 10; n++) {
                test_event e;
                make_event(13, n, &e);
                if (append_event(s, &e, &ids[n]) != DN_SPOOL_OK) _exit(3);
            }
            if (dn_spool_mark_done(s, ids[2]) || dn_spool_mark_done(s, ids[5]) ||
                dn_spool_mark_done(s, ids[8]))
                _exit(4);
            child_keeps[0] = dir;
            child_keeps[1] = s;
            if (killed) raise(SIGKILL);
            _exit(0);
        }
        int status;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        if (killed)
            CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        else
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK(count_files(dir, ".log") > 2);

        dn_spool *s = open_default(dir);
        REQUIRE(s);
        replayed r = {0};
        CHECK(replay(s, &r));
        uint32_t want[] = {0, 1, 3, 4, 6, 7, 9};
        CHECK(replayed_exactly(&r, 13, want, 7, make_event));
        CHECK(dn_spool_pending(s) == 7);
        CHECK(only_one_writer(dir));
        dn_spool_close(s);
        replayed_free(&r);
        remove_tree(dir);
        free(dir);
    }
}

/* The child of a fork abandons the parent's spool: the parent's lock must stay held,
 * so neither the child nor anyone else can adopt the parent's events. */
static void test_fork_abandon(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *parent = open_default(dir);
    REQUIRE(parent);
    test_event e;
    for (uint32_t n = 0; n < 5; n++) {
        make_event(14, n, &e);
        CHECK(append_event(parent, &e, NULL) == DN_SPOOL_OK);
    }
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dn_spool_abandon(parent);
        dn_spool *child = open_default(dir);
        if (!child) _exit(2);
        replayed r = {0};
        bool ok = replay(child, &r) && r.count == 0 && dn_spool_pending(child) == 0;
        dn_spool_close(child);
        replayed_free(&r);
        child_keeps[0] = dir;
        _exit(ok ? 0 : 1);
    }
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    make_event(14, 5, &e);
    CHECK(append_event(parent, &e, NULL) == DN_SPOOL_OK);
    dn_spool *third = open_default(dir);
    REQUIRE(third);
    replayed r = {0};
    CHECK(replay(third, &r) && r.count == 0);
    dn_spool_close(third);
    CHECK(dn_spool_pending(parent) == 6);

    dn_spool_close(parent);
    dn_spool *next = open_default(dir);
    REQUIRE(next);
    CHECK(replay(next, &r) && replayed_first(&r, 14, 6));
    dn_spool_close(next);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Segments of two PLAIN events each. Done segments go from the oldest forward, never
 * from the middle. */
static void test_segment_removal(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 20, 2 * PLAIN_SIZE + 20);
    REQUIRE(s);
    uint64_t ids[6];
    for (uint32_t n = 0; n < 6; n++) {
        test_event e;
        make_plain_event(15, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
    }
    CHECK(count_files(dir, ".log") == 3);
    CHECK(dn_spool_mark_done(s, ids[1]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[2]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[3]) == DN_SPOOL_OK);
    size_t files = count_files(dir, ".log");
    dn_spool_tick(s, 0);
    /* Segment 2 is all done but segment 1 still holds event 0. */
    CHECK(count_files(dir, ".log") == files);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));

    CHECK(dn_spool_mark_done(s, ids[0]) == DN_SPOOL_OK);
    dn_spool_tick(s, 0);
    CHECK(count_files(dir, ".log") == files - 2);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    uint32_t want[] = {4, 5};
    CHECK(replay(s, &r) && replayed_exactly(&r, 15, want, 2, make_plain_event));
    for (size_t i = 0; i < r.count; i++) CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
    dn_spool_close(s);

    /* Everything done: all but the segment being appended to are removed. */
    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 20, 2 * PLAIN_SIZE + 20);
    REQUIRE(s);
    CHECK(replay(s, &r) && r.count == 0);
    for (uint32_t n = 0; n < 20; n++) {
        test_event e;
        make_plain_event(16, n, &e);
        uint64_t id = 0;
        CHECK(append_event(s, &e, &id) == DN_SPOOL_OK);
        CHECK(dn_spool_mark_done(s, id) == DN_SPOOL_OK);
    }
    CHECK(count_files(dir, ".log") > 10);
    dn_spool_tick(s, 0);
    CHECK(count_files(dir, ".log") == 1);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    CHECK(dn_spool_pending(s) == 0);
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* 32 PLAIN events in segments of 8; 1, 20 and 30 stay pending. */
static dn_spool *compaction_case(const char *dir, uint64_t ids[32], char *first_segment,
                                 size_t first_segment_size)
{
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 20, 8 * PLAIN_SIZE);
    if (!s) return NULL;
    for (uint32_t n = 0; n < 32; n++) {
        test_event e;
        make_plain_event(17, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
    }
    CHECK(count_files(dir, ".log") == 4);
    CHECK(find_file(dir, ".1.log", first_segment, first_segment_size));
    for (uint32_t n = 0; n < 32; n++)
        if (n != 1 && n != 20 && n != 30) CHECK(dn_spool_mark_done(s, ids[n]) == DN_SPOOL_OK);
    CHECK(dn_spool_pending(s) == 3);
    return s;
}

static void test_compaction(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    uint64_t ids[32];
    char first[256];
    dn_spool *s = compaction_case(dir, ids, first, sizeof first);
    REQUIRE(s);
    size_t files = count_files(dir, ".log");
    int syncs = data_syncs;
    dn_spool_tick(s, 0);
    /* Moved copies are synced before the originals go, even with SYNC_NEVER. */
    CHECK(data_syncs > syncs);
    /* Segment 1 (one event of eight live) compacted, segment 2 (all done) removed. */
    CHECK(!file_exists(dir, first));
    CHECK(count_files(dir, ".log") == files - 2);
    CHECK(dn_spool_pending(s) == 3);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);

    /* The next writer replays the moved event once, in its place: first. */
    s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    uint32_t kept[] = {1, 20, 30};
    CHECK(replay(s, &r) && replayed_exactly(&r, 17, kept, 3, make_plain_event));
    dn_spool_close(s);
    remove_tree(dir);
    free(dir);

    /* A writer that compacted twice, appended more and died: its adopter replays in
     * append order, and so does the writer after that, which adopts the adopter. */
    dir = make_temp_dir();
    REQUIRE(dir);
    s = compaction_case(dir, ids, first, sizeof first);
    REQUIRE(s);
    dn_spool_tick(s, 0);
    dn_spool_tick(s, 0);
    CHECK(!file_exists(dir, first));
    for (uint32_t n = 32; n < 36; n++) {
        test_event e;
        make_plain_event(17, n, &e);
        CHECK(append_event(s, &e, NULL) == DN_SPOOL_OK);
    }
    dn_spool_abandon(s); /* as a crash: files and all, the lock freed */
    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 20, 5 * PLAIN_SIZE);
    REQUIRE(s);
    uint32_t after_death[] = {1, 20, 30, 32, 33, 34, 35};
    CHECK(replay(s, &r) && replayed_exactly(&r, 17, after_death, 7, make_plain_event));
    CHECK(only_one_writer(dir));
    /* The adopter compacts too: the adopted events lie five to a segment here, and
     * event 1 is moved behind 34 and 35. */
    CHECK(count_files(dir, ".log") == 2);
    for (size_t i = 1; i < 5 && r.count == 7; i++)
        CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
    dn_spool_tick(s, 0);
    CHECK(count_files(dir, ".log") == 1);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_abandon(s);
    s = open_default(dir);
    REQUIRE(s);
    uint32_t after_two[] = {1, 34, 35};
    CHECK(replay(s, &r) && replayed_exactly(&r, 17, after_two, 3, make_plain_event));
    dn_spool_close(s);
    remove_tree(dir);
    free(dir);

    /* The ids handed out before compaction still mark the moved events done. */
    dir = make_temp_dir();
    REQUIRE(dir);
    s = compaction_case(dir, ids, first, sizeof first);
    REQUIRE(s);
    /* One compaction per tick, and the tick says another is worth doing at once. */
    CHECK(dn_spool_tick(s, 0) == 0);
    dn_spool_tick(s, 0); /* segment 3 (event 20 of eight) is compacted next */
    CHECK(!file_exists(dir, first));
    first[strlen(first) - strlen("1.log")] = '3';
    CHECK(!file_exists(dir, first));
    /* Segment 4 and segment 5, with the DONE records and both moved events. */
    CHECK(count_files(dir, ".log") == 2);
    CHECK(dn_spool_mark_done(s, ids[1]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[20]) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(s, ids[1]) == DN_SPOOL_ERROR);
    CHECK(dn_spool_pending(s) == 1);
    CHECK(dn_spool_bytes(s) == log_bytes(dir));
    dn_spool_close(s);
    s = open_default(dir);
    REQUIRE(s);
    uint32_t want[] = {30};
    CHECK(replay(s, &r) && replayed_exactly(&r, 17, want, 1, make_plain_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Two writers that compacted and died: the next writer replays each one's events in
 * the order that writer appended them, one writer after the other by name. */
static void test_compacted_writers_adopted(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s[2];
    char locks[2][256];
    for (uint32_t w = 0; w < 2; w++) {
        s[w] = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 20, 8 * PLAIN_SIZE);
        REQUIRE(s[w]);
        REQUIRE(find_other_file(dir, ".lock", w ? locks[0] : NULL, locks[w], sizeof locks[w]));
        uint64_t ids[32];
        for (uint32_t n = 0; n < 32; n++) {
            test_event e;
            make_plain_event(50 + w, n, &e);
            CHECK(append_event(s[w], &e, &ids[n]) == DN_SPOOL_OK);
        }
        for (uint32_t n = 0; n < 32; n++)
            if (n != 1 && n != 20 && n != 30)
                CHECK(dn_spool_mark_done(s[w], ids[n]) == DN_SPOOL_OK);
        dn_spool_tick(s[w], 0);
        dn_spool_tick(s[w], 0); /* events 1 and 20 now lie behind 30 */
        for (uint32_t n = 32; n < 34; n++) {
            test_event e;
            make_plain_event(50 + w, n, &e);
            CHECK(append_event(s[w], &e, NULL) == DN_SPOOL_OK);
        }
    }
    dn_spool_abandon(s[0]);
    dn_spool_abandon(s[1]);

    dn_spool *adopter = open_default(dir);
    REQUIRE(adopter);
    replayed r = {0};
    CHECK(replay(adopter, &r) && r.count == 10);
    uint32_t each[] = {1, 20, 30, 32, 33};
    uint32_t first_salt = strcmp(locks[0], locks[1]) < 0 ? 50 : 51;
    if (r.count == 10) {
        replayed part = {.events = r.events, .count = 5};
        CHECK(replayed_exactly(&part, first_salt, each, 5, make_plain_event));
        part.events = r.events + 5;
        CHECK(replayed_exactly(&part, 101 - first_salt, each, 5, make_plain_event));
    }
    CHECK(only_one_writer(dir));
    dn_spool_close(adopter);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* Hand-made files of a crash in the middle of an adoption: b had copied a's five
 * events (a's orders 10 to 14, b's 1 to 5), appended one of its own and died after
 * removing only a's first segment. a comes first by name, yet its events 3 and 4,
 * also in b, wait for b's 0 to 2. c died between a compaction's copy of event 10 and
 * the removal of its first segment, long gone with event 11 done. */
static void test_adopter_died_mid_removal(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    static uint8_t seg[8 * MAX_RECORD];
    test_event e[13];
    for (uint32_t n = 0; n < 13; n++) make_event(60, n, &e[n]);
    const char *a = "1111-aaaaaaaaaaaaaaaa", *b = "2222-bbbbbbbbbbbbbbbb";
    const char *c = "3333-cccccccccccccccc";
    char name[256];

    size_t len = encode_event(seg, &e[3], 13);
    len += encode_event(seg + len, &e[4], 14);
    snprintf(name, sizeof name, "%s.2.log", a);
    CHECK(write_file(dir, name, seg, len));
    len = 0;
    for (uint32_t n = 0; n < 6; n++) len += encode_event(seg + len, &e[n], n + 1);
    snprintf(name, sizeof name, "%s.1.log", b);
    CHECK(write_file(dir, name, seg, len));
    len = encode_event(seg, &e[12], 3);
    len += encode_done(seg + len, e[11].key);
    len += encode_event(seg + len, &e[10], 1);
    snprintf(name, sizeof name, "%s.2.log", c);
    CHECK(write_file(dir, name, seg, len));
    const char *locks[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.lock", locks[i]);
        CHECK(write_file(dir, name, NULL, 0));
    }

    dn_spool *s = open_default(dir);
    REQUIRE(s);
    replayed r = {0};
    uint32_t want[] = {0, 1, 2, 3, 4, 5, 10, 12};
    CHECK(replay(s, &r) && replayed_exactly(&r, 60, want, 8, make_event));
    CHECK(only_one_writer(dir));
    dn_spool_close(s);

    /* And the order holds through the next adoption. */
    s = open_default(dir);
    REQUIRE(s);
    CHECK(replay(s, &r) && replayed_exactly(&r, 60, want, 8, make_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* A replay callback may append other events, mark its event done and append it again
 * straight from the pointers it was handed. */
typedef struct requeue {
    dn_spool *spool;
    uint32_t calls;
} requeue;

static void requeue_event(void *ud, const dn_spool_event *ev)
{
    requeue *q = ud;
    test_event other;
    make_event(23, q->calls++, &other);
    CHECK(append_event(q->spool, &other, NULL) == DN_SPOOL_OK);
    CHECK(dn_spool_mark_done(q->spool, ev->id) == DN_SPOOL_OK);
    dn_spool_status status =
        dn_spool_append(q->spool, ev->idempotency_key, ev->body, ev->body_len, ev->user_agent,
                        ev->user_agent_len, ev->client_ip, ev->client_ip_len, NULL);
    CHECK(status == DN_SPOOL_OK);
}

static void test_append_during_replay(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    dn_spool *s = open_default(dir);
    REQUIRE(s);
    /* Half of them done first, so that the bookkeeping would want squeezing while the
     * replay walks it. */
    uint64_t ids[120];
    for (uint32_t n = 0; n < 120; n++) {
        test_event e;
        make_event(18, n, &e);
        CHECK(append_event(s, &e, &ids[n]) == DN_SPOOL_OK);
    }
    for (uint32_t n = 0; n < 60; n++) CHECK(dn_spool_mark_done(s, ids[n]) == DN_SPOOL_OK);
    requeue q = {s, 0};
    CHECK(dn_spool_replay(s, requeue_event, &q));
    CHECK(q.calls == 60);
    CHECK(dn_spool_pending(s) == 120);
    replayed r = {0};
    CHECK(replay(s, &r) && r.count == 120);
    bool alternating = r.count == 120;
    for (uint32_t n = 0; alternating && n < 60; n++) {
        test_event other, copy;
        make_event(23, n, &other);
        make_event(18, 60 + n, &copy);
        alternating =
            same_event(&r.events[2 * n], &other) && same_event(&r.events[2 * n + 1], &copy);
    }
    CHECK(alternating);
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

static void test_sync_modes(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    test_event e;
    uint64_t id;

    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 26, 0);
    REQUIRE(s);
    int before = data_syncs;
    for (uint32_t n = 0; n < 5; n++) {
        make_event(20, n, &e);
        CHECK(append_event(s, &e, &id) == DN_SPOOL_OK);
        CHECK(data_syncs == before + (int)n + 1);
    }
    before = data_syncs;
    CHECK(dn_spool_mark_done(s, id) == DN_SPOOL_OK); /* DONE records are never synced alone */
    CHECK(data_syncs == before);
    dn_spool_close(s);

    s = open_spool(dir, DN_SPOOL_SYNC_NEVER, 1 << 26, 0);
    REQUIRE(s);
    replayed r = {0};
    replay(s, &r);
    before = data_syncs;
    for (uint32_t n = 5; n < 10; n++) {
        make_event(20, n, &e);
        CHECK(append_event(s, &e, &id) == DN_SPOOL_OK);
    }
    CHECK(dn_spool_mark_done(s, id) == DN_SPOOL_OK);
    dn_spool_tick(s, dn_mono_ms() + 100000);
    CHECK(data_syncs == before);
    dn_spool_close(s);

    /* Interval 20 ms: appends leave syncing to tick, which syncs only what is unsynced
     * and only once the interval has passed since the last sync. */
    s = open_spool(dir, DN_SPOOL_SYNC_INTERVAL, 1 << 26, 0);
    REQUIRE(s);
    replay(s, &r);
    int64_t now = dn_mono_ms() + 1000;
    dn_spool_tick(s, now);
    before = data_syncs;
    for (uint32_t n = 10; n < 15; n++) {
        make_event(20, n, &e);
        CHECK(append_event(s, &e, &id) == DN_SPOOL_OK);
    }
    CHECK(data_syncs == before);
    dn_spool_tick(s, now + 25);
    CHECK(data_syncs == before + 1);
    CHECK(dn_spool_tick(s, now + 100) == INT64_MAX); /* nothing new, no tick wanted */
    CHECK(data_syncs == before + 1);
    CHECK(dn_spool_mark_done(s, id) == DN_SPOOL_OK);
    /* 5 ms after the last sync: the next tick is wanted when the interval is up. */
    CHECK(dn_spool_tick(s, now + 30) == now + 45);
    CHECK(data_syncs == before + 1);
    CHECK(dn_spool_tick(s, now + 45) == INT64_MAX);
    CHECK(data_syncs == before + 2);
    make_event(20, 15, &e);
    CHECK(append_event(s, &e, &id) == DN_SPOOL_OK);
    dn_spool_close(s); /* close syncs what is unsynced */
    CHECK(data_syncs == before + 3);

    s = open_default(dir);
    REQUIRE(s);
    uint32_t want[] = {0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15};
    CHECK(replay(s, &r) && replayed_exactly(&r, 20, want, 13, make_event));
    dn_spool_close(s);
    replayed_free(&r);
    remove_tree(dir);
    free(dir);
}

/* kill -9 at random moments while a child appends with SYNC_ALWAYS and reports each
 * acknowledged append. Rounds share the folder, so each child first adopts what the
 * rounds before left (and may die in the middle of that). Whatever was acknowledged
 * is replayed, once, intact; nothing else but the one append in flight appears; and
 * events marked done (and closed cleanly) never come back. */
#define KILL_ROUNDS 30
#define KILL_EVENTS 400

static _Noreturn void crash_child(const char *dir, uint32_t round, int ack_fd)
{
    dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 26, 4096);
    if (!s) _exit(2);
    replayed r = {0};
    replay(s, &r);
    for (uint32_t n = 0; n < KILL_EVENTS; n++) {
        test_event e;
        make_event(1000 + round, n, &e);
        if (append_event(s, &e, NULL) != DN_SPOOL_OK) _exit(3);
        if (write(ack_fd, &n, sizeof n) != sizeof n) _exit(4);
    }
    for (;;) pause();
}

static void test_kill_9(void)
{
    char *dir = make_temp_dir();
    REQUIRE(dir);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    uint32_t acked[KILL_ROUNDS] = {0};
    bool done_rounds[KILL_ROUNDS] = {false};
    static uint8_t seen[KILL_ROUNDS][KILL_EVENTS + 1];
    int failures_before = failures;

    for (uint32_t round = 0; round < KILL_ROUNDS; round++) {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(dir, round, fds[1]);
        }
        close(fds[1]);
        struct timespec delay = {0, (long)(rand() % 30000) * 1000};
        nanosleep(&delay, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        uint32_t n;
        while (read(fds[0], &n, sizeof n) == sizeof n) acked[round] = n + 1;
        close(fds[0]);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        dn_spool *s = open_spool(dir, DN_SPOOL_SYNC_ALWAYS, 1 << 26, 4096);
        REQUIRE(s);
        replayed r = {0};
        CHECK(replay(s, &r));
        memset(seen, 0, sizeof seen);
        for (size_t i = 0; i < r.count; i++) {
            uint32_t salt = get_u32(r.events[i].key + 4), which = get_u32(r.events[i].key);
            uint32_t from = salt - 1000;
            test_event want;
            make_event(salt, which, &want);
            bool known = salt >= 1000 && from <= round && which <= acked[from] &&
                         which < KILL_EVENTS && same_event(&r.events[i], &want);
            CHECK(known);
            if (!known) continue;
            CHECK(!done_rounds[from]);
            CHECK(seen[from][which]++ == 0);
        }
        for (uint32_t from = 0; from <= round; from++) {
            if (done_rounds[from]) continue;
            for (uint32_t which = 0; which < acked[from]; which++) CHECK(seen[from][which]);
        }
        /* Rounds before the last two are delivered: later rounds must never see them. */
        for (size_t i = 0; i < r.count; i++) {
            uint32_t from = get_u32(r.events[i].key + 4) - 1000;
            if (from + 2 <= round) CHECK(dn_spool_mark_done(s, r.ids[i]) == DN_SPOOL_OK);
        }
        if (round >= 2) done_rounds[round - 2] = true;
        dn_spool_tick(s, 0);
        dn_spool_close(s);
        replayed_free(&r);
        if (failures != failures_before) {
            fprintf(stderr, "  kill -9 round %u failed (seed %u)\n", round, seed);
            break;
        }
    }
    remove_tree(dir);
    free(dir);
}

int main(void)
{
    test_crc32c_vectors();
    test_on_disk_format();
    test_round_trip();
    test_done_not_replayed();
    test_order_over_segments();
    test_ids_over_long_use();
    test_torn_tail();
    test_garbage_after_records();
    test_flipped_byte_in_middle();
    test_inner_lengths();
    test_adoption_rules();
    test_max_bytes();
    test_event_limits();
    test_creates_folders();
    test_write_failure();
    test_space_after_failed_write();
    test_adoption_failure();
    test_two_live_writers();
    test_dead_writer();
    test_fork_abandon();
    test_segment_removal();
    test_compaction();
    test_compacted_writers_adopted();
    test_adopter_died_mid_removal();
    test_append_during_replay();
    test_sync_modes();
    test_kill_9();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_spool: all passed\n");
    return 0;
}
