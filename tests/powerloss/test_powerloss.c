/* Power loss: the spool and file_storage keep their promises whatever a power cut
 * leaves on disk. A run drives the core while crash_disk records every file
 * operation; then, for crash points in the run, crash_disk lays down a disk a power
 * cut there could leave, and the core recovers from it:
 *   - spool, "always": every event whose append returned is replayed; "interval":
 *     every event appended before the last group commit (a tick) that completed;
 *     nothing is replayed that was never appended, each event under its own key,
 *     once, in the order appended; the folder takes new events, which replay too.
 *     In the random states the power goes again during the recovery, and the
 *     recovery from that keeps the same promises and those of the first;
 *   - file_storage: the file holds the records of the last set that returned, or of
 *     the set under way, never a mix or garbage; the visitor id, once set, stays.
 *
 *   test_powerloss          the scripted runs at every crash point, plus seeded
 *                           random runs (DUKANEXT_SLOW=1: about 90x more states)
 *   test_powerloss --run R --seed S --point P --state V
 *                           one crash state, the folders kept for a look */
#include "crash_disk.h"
#include "file_store.h"
#include "folders.h"
#include "os.h"
#include "spool.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEGMENT_BYTES 2048
#define INTERVAL_MS   1000
#define MAX_BODY      1500
#define MAX_EVENTS    256
#define MAX_SETS      64
#define MAX_KEYS      8
#define NOT_YET       SIZE_MAX

typedef enum run_kind {
    RUN_SCRIPT_ALWAYS,
    RUN_SCRIPT_INTERVAL,
    RUN_SCRIPT_FILE,
    RUN_RANDOM_SPOOL,
    RUN_RANDOM_FILE,
    RUN_KINDS
} run_kind;

static const char *const run_names[RUN_KINDS] = {"script-always", "script-interval", "script-file",
                                                 "random-spool", "random-file"};

/* An event a run appended, and the operation counts that say what a crash keeps. */
typedef struct emitted {
    uint8_t key[16];
    char body[MAX_BODY];
    size_t body_len;
    char user_agent[32];
    size_t user_agent_len; /* 0: none */
    size_t begun_at;       /* operations before its append began */
    size_t promised_at;    /* from this crash point on it must be replayed */
    size_t done_at;        /* operations before mark_done was called */
    uint64_t id;           /* in the writer now open; 0 when none */
} emitted;

/* A key/value pair of file_storage. */
typedef struct pair {
    char key[16];
    char value[MAX_BODY];
    size_t value_len;
} pair;

/* The records file_storage holds after a set. */
typedef struct snapshot {
    pair pairs[MAX_KEYS];
    size_t count;
} snapshot;

typedef struct file_set {
    size_t begun_at, ended_at;
    snapshot after;
} file_set;

typedef struct run {
    run_kind kind;
    uint64_t seed;
    uint64_t rng;
    char root[256];
    char spool_dir[300];
    char store_path[300];
    /* the spool */
    dn_spool_sync sync;
    dn_spool *spool;
    int64_t clock_ms;
    emitted events[MAX_EVENTS];
    size_t event_count;
    /* file_storage */
    dn_file_store *store;
    file_set sets[MAX_SETS];
    size_t set_count;
    bool failed;
} run;

static int slow = 1;
static size_t states_checked, failures;
/* Events that came back although marked done before the crash (their DONE record
 * lost): allowed, since they are sent again under their first key, but counted. */
static size_t done_replayed;
static const char *program;
static bool keep_folders;

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t random_below(run *r, size_t n)
{
    return (size_t)(next_random(&r->rng) % n);
}

static __attribute__((format(printf, 2, 3))) void run_failed(run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s seed %" PRIu64 ": ", run_names[r->kind], r->seed);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    r->failed = true;
}

static bool make_temp_dir(char *out, size_t size, const char *what)
{
    /* Thousands of small folders: in memory when there is a /dev/shm, since no sync
     * reaches the disk anyway. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out, size, "%s/dn-powerloss-%s-XXXXXX", tmp, what);
    return mkdtemp(out) != NULL;
}

/* The spool names each writer with random bytes, and the order of the names decides
 * the order in which several dead writers are adopted: for a crash state to come back
 * the same from its seed, the names come from the seed. The core's calls of
 * dn_random_fill reach this through the linker's --wrap too. */
static uint64_t name_stream;
static size_t names_drawn;

bool __wrap_dn_random_fill(void *buf, size_t len);
bool __wrap_dn_random_fill(void *buf, size_t len)
{
    uint8_t *out = buf;
    names_drawn++;
    for (size_t i = 0; i < len; i++) out[i] = (uint8_t)next_random(&name_stream);
    return true;
}

/* Events: the key names the event, so a replayed one tells which it is. */

static void make_key(uint8_t key[16], size_t n, uint32_t salt)
{
    uint64_t mixed = (uint64_t)n * 0x9e3779b97f4a7c15ull ^ salt;
    for (int i = 0; i < 4; i++) key[i] = (uint8_t)(n >> (8 * i));
    for (int i = 0; i < 4; i++) key[4 + i] = (uint8_t)(salt >> (8 * i));
    for (int i = 0; i < 8; i++) key[8 + i] = (uint8_t)(mixed >> (8 * i));
}

static size_t key_event(const uint8_t key[16])
{
    return (size_t)key[0] | (size_t)key[1] << 8 | (size_t)key[2] << 16 | (size_t)key[3] << 24;
}

/* A body of body_len bytes naming n; a user agent on every other event. */
/* The emit time the spool keeps with event n (max_age counts from it). */
static int64_t emit_time(size_t n)
{
    return INT64_C(1764000000000) + (int64_t)n;
}

static void make_event(emitted *e, size_t n, size_t body_len, uint32_t salt)
{
    memset(e, 0, sizeof *e);
    make_key(e->key, n, salt);
    int len = snprintf(e->body, sizeof e->body, "{\"n\":%zu,\"pad\":\"", n);
    if (body_len < (size_t)len + 2) body_len = (size_t)len + 2;
    if (body_len > MAX_BODY) body_len = MAX_BODY;
    for (size_t i = (size_t)len; i < body_len - 2; i++) e->body[i] = (char)('a' + (n + i) % 26);
    memcpy(e->body + body_len - 2, "\"}", 2);
    e->body_len = body_len;
    if (n % 2)
        e->user_agent_len =
            (size_t)snprintf(e->user_agent, sizeof e->user_agent, "powerloss/%zu", n);
    e->promised_at = e->done_at = NOT_YET;
}

static bool same_event(const emitted *e, const dn_spool_event *ev)
{
    return memcmp(e->key, ev->idempotency_key, 16) == 0 && ev->body_len == e->body_len &&
           memcmp(ev->body, e->body, e->body_len) == 0 && ev->user_agent_len == e->user_agent_len &&
           (e->user_agent_len == 0
                ? ev->user_agent == NULL
                : memcmp(ev->user_agent, e->user_agent, e->user_agent_len) == 0) &&
           ev->client_ip == NULL;
}

/* The spool side of a run. */

static bool spool_open(run *r, dn_spool **out, const char *dir, dn_spool_sync sync)
{
    dn_spool_options options = {
        .dir = dir, .sync = sync, .interval_ms = INTERVAL_MS, .segment_bytes = SEGMENT_BYTES};
    char err[256];
    *out = dn_spool_open(&options, err, sizeof err);
    if (!*out) run_failed(r, "cannot open %s: %s", dir, err);
    return *out != NULL;
}

static void note_replayed(void *ud, const dn_spool_event *ev)
{
    run *r = ud;
    size_t n = key_event(ev->idempotency_key);
    if (n >= r->event_count || !same_event(&r->events[n], ev) || r->events[n].id != 0) {
        run_failed(r, "replay gave an event it should not (n %zu)", n);
        return;
    }
    r->events[n].id = ev->id;
}

/* Opens a new writer on the folder (adopting what the last one left) and learns the
 * ids of the pending events; each pending event must come back, and only those. */
static void spool_restart(run *r)
{
    for (size_t n = 0; n < r->event_count; n++) r->events[n].id = 0;
    if (!spool_open(r, &r->spool, r->spool_dir, r->sync)) return;
    dn_spool_replay(r->spool, note_replayed, r);
    for (size_t n = 0; n < r->event_count; n++)
        if (r->events[n].done_at == NOT_YET && r->events[n].id == 0)
            run_failed(r, "event %zu pending but not replayed after a restart", n);
}

static void spool_append(run *r, size_t body_len)
{
    if (r->event_count == MAX_EVENTS) return;
    size_t n = r->event_count++;
    emitted *e = &r->events[n];
    make_event(e, n, body_len, 1);
    e->begun_at = crash_disk_ops();
    dn_spool_status status = dn_spool_append(r->spool, e->key, emit_time(n), e->body, e->body_len,
                                             e->user_agent_len ? e->user_agent : NULL,
                                             e->user_agent_len, NULL, 0, &e->id);
    if (status != DN_SPOOL_OK) {
        run_failed(r, "append %zu: %s", n, dn_spool_error(r->spool));
        return;
    }
    if (r->sync == DN_SPOOL_SYNC_ALWAYS) e->promised_at = crash_disk_ops();
}

static void spool_done(run *r, size_t n)
{
    emitted *e = &r->events[n];
    if (e->done_at != NOT_YET || e->id == 0) return;
    e->done_at = crash_disk_ops();
    dn_spool_mark_done(r->spool, e->id);
}

/* A tick a whole interval after the last: under "interval" a group commit, after
 * which every event appended before it is promised. */
static void spool_tick(run *r)
{
    r->clock_ms += INTERVAL_MS;
    dn_spool_tick(r->spool, r->clock_ms);
    for (size_t n = 0; n < r->event_count; n++)
        if (r->events[n].promised_at == NOT_YET) r->events[n].promised_at = crash_disk_ops();
}

/* A writer that dies: its files stay as they are, its lock is released. */
static void spool_die(run *r)
{
    dn_spool_abandon(r->spool);
    r->spool = NULL;
}

/* A few dozen events across segment rolls, done ones removed, a mostly done segment
 * compacted, a writer dying and adopted, and a clean close. */
static void script_spool(run *r)
{
    spool_restart(r);
    if (r->failed) return;
    for (size_t n = 0; n < 12; n++) spool_append(r, n == 3 ? 40 : 300 + 97 * n % 500);
    spool_tick(r);
    for (size_t n = 0; n < 12; n++)
        if (n != 3) spool_done(r, n);
    /* Removes the done segments and compacts the one where event 3 is pending: its
     * record is written anew (a tick writes nothing else) and the segment removed. */
    size_t unlinks = crash_disk_unlinks(), writes = crash_disk_writes();
    spool_tick(r);
    spool_tick(r);
    if (crash_disk_unlinks() == unlinks || crash_disk_writes() == writes)
        run_failed(r, "the script removed or compacted no segment");
    for (size_t n = 12; n < 20; n++) spool_append(r, 200 + 131 * n % 700);
    spool_tick(r);
    spool_done(r, 12);
    spool_done(r, 13);
    spool_die(r);
    unlinks = crash_disk_unlinks();
    spool_restart(r); /* adopts the dead writer: copies its events, removes its files */
    if (r->failed) return;
    if (crash_disk_unlinks() == unlinks) run_failed(r, "the script adopted nothing");
    spool_done(r, 3);
    spool_done(r, 14);
    for (size_t n = 20; n < 28; n++) spool_append(r, 100 + 211 * n % 900);
    spool_tick(r);
    for (size_t n = 15; n < 28; n++) spool_done(r, n);
    spool_tick(r);
    dn_spool_close(r->spool);
    r->spool = NULL;
}

static void random_spool(run *r)
{
    r->sync = random_below(r, 2) ? DN_SPOOL_SYNC_ALWAYS : DN_SPOOL_SYNC_INTERVAL;
    spool_restart(r);
    size_t steps = 30 + random_below(r, 50);
    for (size_t step = 0; step < steps && !r->failed; step++) {
        size_t dice = random_below(r, 100);
        if (dice < 45) {
            spool_append(r, 20 + random_below(r, MAX_BODY - 20));
        } else if (dice < 70) {
            if (r->event_count) spool_done(r, random_below(r, r->event_count));
        } else if (dice < 88) {
            spool_tick(r);
        } else if (dice < 95) {
            spool_die(r);
            spool_restart(r);
        } else {
            dn_spool_close(r->spool);
            r->spool = NULL;
            spool_restart(r);
        }
    }
    if (r->spool) spool_die(r);
}

/* The file_storage side of a run. */

static void file_set_value(run *r, const char *key, size_t value_len)
{
    if (r->set_count == MAX_SETS) return;
    file_set *set = &r->sets[r->set_count];
    snapshot *after = &set->after;
    *after = r->set_count ? r->sets[r->set_count - 1].after : (snapshot){0};
    pair *p = NULL;
    for (size_t i = 0; i < after->count; i++)
        if (strcmp(after->pairs[i].key, key) == 0) p = &after->pairs[i];
    if (!p) {
        p = &after->pairs[after->count++];
        snprintf(p->key, sizeof p->key, "%s", key);
    }
    if (value_len > MAX_BODY) value_len = MAX_BODY;
    for (size_t i = 0; i < value_len; i++) p->value[i] = (char)('A' + (r->set_count * 7 + i) % 26);
    p->value_len = value_len;
    set->begun_at = crash_disk_ops();
    if (!dn_file_store_set(r->store, key, p->value, p->value_len)) {
        run_failed(r, "set %s: %s", key, r->store->error);
        return;
    }
    set->ended_at = crash_disk_ops();
    r->set_count++;
}

static void script_file(run *r)
{
    file_set_value(r, "visitor_id", 36);
    file_set_value(r, "session", 200);
    file_set_value(r, "session", 700);
    file_set_value(r, "consent", 3);
    file_set_value(r, "session", 300);
    file_set_value(r, "note", 900);
    file_set_value(r, "session", 50);
    file_set_value(r, "consent", 2);
}

static void random_file(run *r)
{
    static const char *const keys[] = {"session", "consent", "note", "theme"};
    file_set_value(r, "visitor_id", 36);
    size_t steps = 5 + random_below(r, 20);
    for (size_t step = 0; step < steps && !r->failed; step++)
        file_set_value(r, keys[random_below(r, 4)], 1 + random_below(r, 1400));
}

/* Records a run of the kind and seed. */
static bool run_record(run *r, run_kind kind, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->seed = seed;
    r->rng = seed;
    r->clock_ms = dn_mono_ms() + 1000000;
    if (!make_temp_dir(r->root, sizeof r->root, "run")) {
        run_failed(r, "cannot make a folder: %s", strerror(errno));
        return false;
    }
    snprintf(r->spool_dir, sizeof r->spool_dir, "%s/spool", r->root);
    snprintf(r->store_path, sizeof r->store_path, "%s/visitor.json", r->root);
    name_stream = seed;
    names_drawn = 0;
    crash_disk_record(r->root);
    if (kind == RUN_SCRIPT_FILE || kind == RUN_RANDOM_FILE) {
        r->store = dn_file_store_new(r->store_path);
        if (kind == RUN_SCRIPT_FILE)
            script_file(r);
        else
            random_file(r);
        dn_file_store_free(r->store);
        r->store = NULL;
    } else {
        r->sync = kind == RUN_SCRIPT_INTERVAL ? DN_SPOOL_SYNC_INTERVAL : DN_SPOOL_SYNC_ALWAYS;
        if (kind == RUN_RANDOM_SPOOL)
            random_spool(r);
        else
            script_spool(r);
    }
    crash_disk_stop();
    remove_tree(r->root);
    /* A seam that saw nothing would make every crash state pass. */
    if (!r->failed && crash_disk_file_syncs() == 0)
        run_failed(r, "no file sync was recorded: the --wrap seam is not in place");
    if (!r->failed && r->kind != RUN_SCRIPT_FILE && r->kind != RUN_RANDOM_FILE && names_drawn == 0)
        run_failed(r, "writer names were not drawn from the seed: wrap what the spool calls");
    return !r->failed;
}

/* Checking one crash state. */

#define FRESH     2 /* events each recovery appends, to show the folder still takes them */
#define MAX_KNOWN (MAX_EVENTS + 2 * FRESH)

/* What a crash state must and may give back, per event number: the run's events,
 * then those each recovery appended. */
typedef struct expect {
    size_t count;
    bool must[MAX_KNOWN]; /* promised before the crash and not marked done */
    bool may[MAX_KNOWN];  /* its append began before the crash */
    bool done[MAX_KNOWN]; /* marked done before the crash: may come back, as a copy */
} expect;

static void expect_from_run(const run *r, size_t point, expect *x)
{
    memset(x, 0, sizeof *x);
    x->count = r->event_count;
    for (size_t n = 0; n < r->event_count; n++) {
        const emitted *e = &r->events[n];
        x->done[n] = e->done_at < point;
        x->must[n] = e->promised_at <= point && !x->done[n];
        x->may[n] = e->begun_at < point;
    }
}

/* The event numbered n: the run's, or one a recovery appended. */
static void event_numbered(const run *r, size_t n, emitted *out)
{
    if (n < r->event_count)
        *out = r->events[n];
    else
        make_event(out, n, 100 + 400 * (n % 2), 1);
}

/* Operation counts of a recovery's own appends: when each began and returned. */
typedef struct fresh_appends {
    size_t begun[FRESH], acked[FRESH];
} fresh_appends;

typedef struct recovery {
    const run *r;
    const expect *x;
    size_t seen[MAX_KNOWN];
    size_t extra;  /* events that came back but were never appended */
    bool mismatch; /* an event came back with other bytes than appended */
    size_t last;   /* 1 + the last event replayed */
    bool out_of_order;
} recovery;

static void note_recovered(void *ud, const dn_spool_event *ev)
{
    recovery *rc = ud;
    size_t n = key_event(ev->idempotency_key);
    if (n >= rc->x->count) {
        rc->extra++;
        return;
    }
    rc->seen[n]++;
    static emitted e;
    event_numbered(rc->r, n, &e);
    if (!same_event(&e, ev)) rc->mismatch = true;
    /* Each run appends its events one writer after another, so the order they were
     * first appended in is the order of their numbers. An event marked done before
     * the crash whose DONE record was lost is a copy sent again, with no place of its
     * own in the order. */
    if (rc->x->done[n]) return;
    if (n + 1 <= rc->last) rc->out_of_order = true;
    rc->last = n + 1;
}

/* The crash state being checked, named once before the first promise it broke. */
static struct {
    const run *r;
    size_t point;
    int state;
    bool again; /* a second crash, in the recovery from the first */
    size_t again_point, again_ops;
    int again_state;
    bool named;
} current;

static __attribute__((format(printf, 1, 2))) void broke(const char *fmt, ...)
{
    if (!current.named) {
        fprintf(stderr, "%s seed %" PRIu64 ", crash point %zu, state %d: a promise broke\n",
                run_names[current.r->kind], current.r->seed, current.point, current.state);
        if (current.again)
            fprintf(stderr,
                    "  after a second crash in the recovery, after %zu of its %zu "
                    "operations, state %d\n",
                    current.again_point, current.again_ops, current.again_state);
    }
    current.named = true;
    va_list ap;
    va_start(ap, fmt);
    fputs("  ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void report_state(const run *r, size_t point, int state)
{
    /* All of them when reproducing one state; the last few in a long run. */
    fprintf(stderr, "  crash after %zu of %zu operations, state %d; %s:\n", point, crash_disk_ops(),
            state, keep_folders ? "the operations" : "the last ones");
    crash_disk_print_ops(keep_folders || point < 6 ? 0 : point - 6, point);
    fprintf(stderr, "  reproduce with: %s --run %s --seed %" PRIu64 " --point %zu --state %d\n",
            program, run_names[r->kind], r->seed, point, state);
}

static bool check_replay(const recovery *rc)
{
    bool ok = true;
    for (size_t n = 0; n < rc->x->count; n++) {
        if (rc->x->must[n] && rc->seen[n] == 0) {
            broke("event %zu was promised before the crash but is lost", n);
            ok = false;
        }
        if (rc->seen[n] > 0 && !rc->x->may[n]) {
            broke("event %zu came back, but its append began after the crash", n);
            ok = false;
        }
        if (rc->seen[n] > 1) {
            broke("event %zu came back %zu times", n, rc->seen[n]);
            ok = false;
        }
    }
    if (rc->extra || rc->mismatch) {
        broke("an event came back that was never appended, or with other bytes");
        ok = false;
    }
    if (rc->out_of_order) {
        broke("events came back out of the order they were appended in");
        ok = false;
    }
    return ok;
}

/* Recovers from the disk in dir: replays and checks against x, appends FRESH events
 * (numbered from x->count), closes, and checks that a restart replays them all again.
 * False with the reason printed when a promise broke. */
static bool recover_spool(const run *r, const expect *x, const char *dir, fresh_appends *fresh)
{
    char spool_dir[512];
    snprintf(spool_dir, sizeof spool_dir, "%s/spool", dir);
    recovery rc = {.r = r, .x = x};
    dn_spool_options options = {.dir = spool_dir,
                                .sync = DN_SPOOL_SYNC_ALWAYS,
                                .interval_ms = INTERVAL_MS,
                                .segment_bytes = SEGMENT_BYTES};
    char err[256];
    dn_spool *s = dn_spool_open(&options, err, sizeof err);
    if (!s) {
        broke("the folder does not open after the crash: %s", err);
        return false;
    }
    dn_spool_replay(s, note_recovered, &rc);
    bool ok = check_replay(&rc);
    for (size_t n = 0; n < x->count; n++)
        if (rc.seen[n] && x->done[n]) done_replayed++;
    /* The folder takes new events after the crash, and they replay with the rest. */
    for (size_t i = 0; i < FRESH; i++) {
        static emitted e;
        event_numbered(r, x->count + i, &e);
        uint64_t id;
        fresh->begun[i] = crash_disk_ops();
        fresh->acked[i] = NOT_YET;
        if (dn_spool_append(s, e.key, emit_time(x->count + i), e.body, e.body_len, e.user_agent_len ? e.user_agent : NULL,
                            e.user_agent_len, NULL, 0, &id) == DN_SPOOL_OK) {
            fresh->acked[i] = crash_disk_ops();
        } else {
            broke("an append after recovery failed: %s", dn_spool_error(s));
            ok = false;
        }
    }
    dn_spool_close(s);
    static expect all;
    all = *x;
    all.count = x->count + FRESH;
    for (size_t i = 0; i < FRESH; i++) all.must[x->count + i] = all.may[x->count + i] = true;
    recovery again = {.r = r, .x = &all};
    s = dn_spool_open(&options, err, sizeof err);
    if (!s) {
        broke("the folder does not open again after recovery: %s", err);
        return false;
    }
    dn_spool_replay(s, note_recovered, &again);
    dn_spool_close(s);
    for (size_t n = 0; n < all.count; n++) {
        size_t expected = n < x->count ? rc.seen[n] : 1;
        if (again.seen[n] != expected) {
            broke("event %zu replayed %zu times after a restart, not %zu", n, again.seen[n],
                  expected);
            ok = false;
        }
    }
    if (again.out_of_order) {
        broke("events came back out of order after a restart");
        ok = false;
    }
    return ok;
}

/* The recovery from a crash state, itself cut by a power failure: recorded, then one
 * of its crash states recovered in turn. What the first crash promised stays
 * promised; the recovery's own appends are promised once acknowledged. */
static bool recover_spool_twice(const run *r, const expect *x, const char *dir, uint64_t pick)
{
    crash_record *first = crash_disk_set_aside();
    crash_disk_record(dir);
    fresh_appends fresh;
    bool ok = recover_spool(r, x, dir, &fresh);
    crash_disk_stop();
    size_t from = crash_disk_first_point(), total = crash_disk_ops();
    size_t point = from + (size_t)(next_random(&pick) % (total - from + 1));
    int state = (int)(next_random(&pick) % 1002);
    static expect x2;
    x2 = *x;
    x2.count = x->count + FRESH;
    for (size_t i = 0; i < FRESH; i++) {
        x2.must[x->count + i] = fresh.acked[i] <= point;
        x2.may[x->count + i] = fresh.begun[i] < point;
    }
    states_checked++;
    current.again = true;
    current.again_point = point;
    current.again_ops = total;
    current.again_state = state;
    char dir2[300];
    if (!ok || !make_temp_dir(dir2, sizeof dir2, "crash") ||
        !crash_disk_build(point, state, pick, dir2)) {
        crash_disk_take_back(first);
        return false;
    }
    fresh_appends fresh2;
    ok = recover_spool(r, &x2, dir2, &fresh2);
    if (!ok) {
        fprintf(stderr, "  the recovery's operations before its crash:\n");
        crash_disk_print_ops(keep_folders || point < 6 ? from : point - 6, point);
    }
    if (keep_folders)
        printf("the second crashed folder, as recovery left it: %s\n", dir2);
    else
        remove_tree(dir2);
    crash_disk_take_back(first);
    return ok;
}

static bool same_snapshot(const dn_file_store *store, const snapshot *snap)
{
    if (store->count != snap->count) return false;
    for (size_t i = 0; i < snap->count; i++) {
        const pair *p = &snap->pairs[i];
        bool found = false;
        for (size_t j = 0; j < store->count && !found; j++)
            found = strcmp(store->entries[j].key, p->key) == 0 &&
                    store->entries[j].value_len == p->value_len &&
                    memcmp(store->entries[j].value, p->value, p->value_len) == 0;
        if (!found) return false;
    }
    return true;
}

static void snapshot_of(const dn_file_store *store, snapshot *out)
{
    out->count = 0;
    for (size_t i = 0; i < store->count && out->count < MAX_KEYS; i++) {
        pair *p = &out->pairs[out->count++];
        snprintf(p->key, sizeof p->key, "%s", store->entries[i].key);
        p->value_len =
            store->entries[i].value_len < MAX_BODY ? store->entries[i].value_len : MAX_BODY;
        memcpy(p->value, store->entries[i].value, p->value_len);
    }
}

/* The recovery's own set, cut by a second power failure at one of its crash points:
 * the file holds what the recovery read, or that and its set, whole. */
static bool crash_file_again(const snapshot *before, const snapshot *after, size_t begun,
                             size_t ended, uint64_t pick)
{
    size_t from = crash_disk_first_point(), total = crash_disk_ops();
    size_t point = from + (size_t)(next_random(&pick) % (total - from + 1));
    int state = (int)(next_random(&pick) % 1002);
    states_checked++;
    current.again = true;
    current.again_point = point;
    current.again_ops = total;
    current.again_state = state;
    char dir[300], path[512];
    if (!make_temp_dir(dir, sizeof dir, "crash") || !crash_disk_build(point, state, pick, dir)) {
        broke("cannot lay down the second crash state: %s", strerror(errno));
        return false;
    }
    snprintf(path, sizeof path, "%s/visitor.json", dir);
    dn_file_store *store = dn_file_store_new(path);
    const char *value;
    size_t len;
    bool ok = dn_file_store_get(store, "visitor_id", &value, &len);
    bool old_ok = ended > point && same_snapshot(store, before);
    bool new_ok = begun < point && same_snapshot(store, after);
    if (!ok || !(old_ok || new_ok)) {
        broke("after a crash in the recovery's set the file holds %zu records, neither the old "
              "nor the new set",
              store->count);
        crash_disk_print_ops(keep_folders || point < from + 6 ? from : point - 6, point);
        ok = false;
    }
    dn_file_store_free(store);
    if (keep_folders)
        printf("the second crashed folder, as recovery left it: %s\n", dir);
    else
        remove_tree(dir);
    return ok;
}

/* Recovers from the disk in dir; with again, the power goes once more during the
 * recovery's own set. */
static bool recover_file(const run *r, size_t point, const char *dir, bool again, uint64_t pick)
{
    char path[512];
    snprintf(path, sizeof path, "%s/visitor.json", dir);
    dn_file_store *store = dn_file_store_new(path);
    const char *visitor;
    size_t visitor_len;
    if (!dn_file_store_get(store, "visitor_id", &visitor, &visitor_len)) {
        broke("cannot read the file: %s", store->error);
        dn_file_store_free(store);
        return false;
    }
    /* The old records are those of the last set that returned; the new ones those of
     * a set under way at the crash. */
    static const snapshot nothing;
    const snapshot *old_set = &nothing, *new_set = NULL;
    for (size_t i = 0; i < r->set_count; i++) {
        if (r->sets[i].ended_at <= point) old_set = &r->sets[i].after;
        if (r->sets[i].begun_at < point && r->sets[i].ended_at > point) new_set = &r->sets[i].after;
    }
    bool ok = same_snapshot(store, old_set) || (new_set && same_snapshot(store, new_set));
    if (!ok) broke("the file holds %zu records, neither the old nor the new set", store->count);
    const pair *id = &r->sets[0].after.pairs[0];
    if (r->set_count && r->sets[0].ended_at <= point &&
        (!visitor || visitor_len != id->value_len ||
         memcmp(visitor, id->value, visitor_len) != 0)) {
        broke("the visitor id set before the crash is gone");
        ok = false;
    }
    /* Usable afterwards: a set after the crash reads back in a fresh store. */
    static snapshot before, after;
    snapshot_of(store, &before);
    after = before;
    pair *added = &after.pairs[after.count++];
    snprintf(added->key, sizeof added->key, "after");
    memcpy(added->value, "crash", 5);
    added->value_len = 5;
    crash_record *first = NULL;
    if (again) {
        first = crash_disk_set_aside();
        crash_disk_record(dir);
    }
    size_t begun = crash_disk_ops();
    if (!dn_file_store_set(store, "after", "crash", 5)) {
        broke("a set after the crash failed: %s", store->error);
        ok = false;
    }
    size_t ended = crash_disk_ops();
    dn_file_store_free(store);
    store = dn_file_store_new(path);
    if (!dn_file_store_get(store, "visitor_id", &visitor, &visitor_len) ||
        !same_snapshot(store, &after)) {
        broke("a set after the crash does not read back");
        ok = false;
    }
    dn_file_store_free(store);
    if (again) {
        crash_disk_stop();
        ok = crash_file_again(&before, &after, begun, ended, pick) && ok;
        crash_disk_take_back(first);
    }
    return ok;
}

/* A recovery that crashes the program still says which state did it. */
static char crash_command[512];

static void on_fatal_signal(int sig)
{
    if (crash_command[0] && write(2, crash_command, strlen(crash_command)) < 0)
        crash_command[0] = 0;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Lays down the crash state and recovers from it; reports a broken promise. */
static bool check_state(run *r, size_t point, int state)
{
    char dir[300];
    states_checked++;
    if (!make_temp_dir(dir, sizeof dir, "crash") ||
        !crash_disk_build(point, state, r->seed * 0x100000001b3ull ^ point, dir)) {
        fprintf(stderr, "cannot lay down a crash state: %s\n", strerror(errno));
        failures++;
        return false;
    }
    name_stream = r->seed ^ point * 0x100000001b3ull ^ (uint64_t)state << 32;
    snprintf(crash_command, sizeof crash_command,
             "recovery crashed; reproduce with: %s --run %s --seed %" PRIu64
             " --point %zu --state %d\n",
             program, run_names[r->kind], r->seed, point, state);
    current.r = r;
    current.point = point;
    current.state = state;
    current.again = current.named = false;
    bool ok;
    if (r->kind == RUN_SCRIPT_FILE || r->kind == RUN_RANDOM_FILE) {
        ok = recover_file(r, point, dir, state >= 2, r->seed ^ point << 20 ^ (uint64_t)state << 40);
    } else {
        static expect x;
        expect_from_run(r, point, &x);
        fresh_appends fresh;
        /* The random states also cut the power in the recovery. */
        if (state >= 2)
            ok = recover_spool_twice(r, &x, dir, r->seed ^ point << 20 ^ (uint64_t)state << 40);
        else
            ok = recover_spool(r, &x, dir, &fresh);
    }
    if (!ok) {
        if (!current.named) broke("recovery failed");
        report_state(r, point, state);
        failures++;
    }
    if (keep_folders)
        printf("the crashed folder, as recovery left it: %s\n", dir);
    else
        remove_tree(dir);
    return ok;
}

/* A run that failed before any crash. */
static void report_run(const run *r)
{
    fprintf(stderr, "  reproduce with: %s --run %s --seed %" PRIu64 " --point 0 --state 0\n",
            program, run_names[r->kind], r->seed);
    failures++;
}

/* Every crash point, each with the states all lost, all kept and `random` random. */
static void check_every_point(run_kind kind, uint64_t seed, int random_states)
{
    static run r;
    if (!run_record(&r, kind, seed)) {
        report_run(&r);
        return;
    }
    for (size_t point = crash_disk_first_point(); point <= crash_disk_ops(); point++)
        for (int state = 0; state < 2 + random_states; state++) check_state(&r, point, state);
    crash_disk_forget();
}

/* Crash points picked at random, each with one random state and the two fixed ones. */
static void check_some_points(run_kind kind, uint64_t seed, int points)
{
    static run r;
    if (!run_record(&r, kind, seed)) {
        report_run(&r);
        return;
    }
    uint64_t pick = seed ^ 0x5eed;
    for (int i = 0; i < points; i++) {
        size_t from = crash_disk_first_point();
        size_t point = from + (size_t)(next_random(&pick) % (crash_disk_ops() - from + 1));
        int state = 2 + (int)(next_random(&pick) % 1000);
        check_state(&r, point, CRASH_LOSE_ALL);
        check_state(&r, point, state);
    }
    crash_disk_forget();
}

/* Crash states that once broke a promise, kept as cases of their own. Each is named by
 * the event after whose acknowledgement the power went, not by an operation count,
 * which moves whenever the core's calls change. */
typedef struct regression {
    const char *what;
    run_kind kind;
    uint64_t seed;
    size_t after_event;
    int state;
} regression;

static const regression regressions[] = {
    {"a spool folder made by dn_spool_open but never synced into its parent: a power cut "
     "took the folder away with every event acknowledged in it",
     RUN_SCRIPT_ALWAYS, 1, 0, CRASH_LOSE_ALL},
};

static void check_regressions(void)
{
    for (size_t i = 0; i < sizeof regressions / sizeof *regressions; i++) {
        const regression *g = &regressions[i];
        static run r;
        if (!run_record(&r, g->kind, g->seed)) {
            failures++;
            continue;
        }
        if (!check_state(&r, r.events[g->after_event].promised_at, g->state))
            fprintf(stderr, "  regression: %s\n", g->what);
        crash_disk_forget();
    }
}

static int reproduce(const char *name, uint64_t seed, size_t point, int state)
{
    for (int kind = 0; kind < RUN_KINDS; kind++) {
        if (strcmp(name, run_names[kind]) != 0) continue;
        static run r;
        keep_folders = true;
        if (!run_record(&r, (run_kind)kind, seed)) return 1;
        bool ok = check_state(&r, point, state);
        crash_disk_forget();
        printf("%s seed %" PRIu64 " point %zu state %d: %s\n", name, seed, point, state,
               ok ? "kept its promises" : "FAILED");
        return ok ? 0 : 1;
    }
    fprintf(stderr, "unknown run %s\n", name);
    return 2;
}

int main(int argc, char **argv)
{
    program = argv[0];
    if (argc == 9 && strcmp(argv[1], "--run") == 0 && strcmp(argv[3], "--seed") == 0 &&
        strcmp(argv[5], "--point") == 0 && strcmp(argv[7], "--state") == 0)
        return reproduce(argv[2], strtoull(argv[4], NULL, 10), strtoull(argv[6], NULL, 10),
                         atoi(argv[8]));
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--run NAME --seed S --point P --state V]\n", program);
        return 2;
    }
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGBUS, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGFPE, on_fatal_signal);
    const char *env = getenv("DUKANEXT_SLOW");
    if (env && *env) slow = 100;

    check_regressions();
    check_every_point(RUN_SCRIPT_ALWAYS, 1, 4 * slow);
    check_every_point(RUN_SCRIPT_INTERVAL, 1, 4 * slow);
    check_every_point(RUN_SCRIPT_FILE, 1, 4 * slow);
    for (int i = 0; i < 20 * slow; i++) check_some_points(RUN_RANDOM_SPOOL, 1000 + (uint64_t)i, 20);
    for (int i = 0; i < 10 * slow; i++) check_some_points(RUN_RANDOM_FILE, 5000 + (uint64_t)i, 10);

    printf("powerloss: %zu crash states checked, %zu broke a promise; %zu events marked done "
           "came back (sent again under their first key)\n",
           states_checked, failures, done_replayed);
    return failures ? 1 : 0;
}
