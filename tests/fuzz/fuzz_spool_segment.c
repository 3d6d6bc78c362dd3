/* A spool folder is read back by the next process, and what it finds there may be
 * anything: a torn write, a damaged disk, records of another version. The input
 * describes the segments a writer that is gone left behind; most records are laid
 * down with a correct checksum so that the fuzzer reaches the decoding behind it.
 * Opening the folder adopts them. The harness reads the same files by the format alone
 * (tests/spool_format.h): each segment up to its first record that is not whole and
 * intact. Every key of an intact EVENT that no intact DONE finished must be replayed
 * exactly once, with the bytes of one of its records, and nothing else; a writer that
 * marks it all done must leave the folder empty. */
#include "folders.h"
#include "spool.h"
#include "spool_format.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GONE_WRITER  "4242-00000000deadbeef"
#define MAX_SEGMENTS 4
#define SEGMENT_MAX  (64 * 1024)
#define MAX_EVENTS   (MAX_SEGMENTS * SEGMENT_MAX / HEADER)

/* Reads the input as a list of operations. */
typedef struct reader {
    const uint8_t *p, *end;
} reader;

static size_t take(reader *r, size_t want)
{
    size_t left = (size_t)(r->end - r->p);
    return want < left ? want : left;
}

static uint8_t take_byte(reader *r)
{
    return r->p < r->end ? *r->p++ : 0;
}

typedef struct segments {
    uint8_t data[MAX_SEGMENTS][SEGMENT_MAX];
    size_t len[MAX_SEGMENTS];
    size_t count;
} segments;

/* Room in the current segment for a record of payload_len, or NULL. */
static uint8_t *room_for(segments *s, size_t payload_len)
{
    size_t *len = &s->len[s->count - 1];
    if (HEADER + payload_len > SEGMENT_MAX - *len) return NULL;
    return s->data[s->count - 1] + *len;
}

/* A key from one byte: few enough that EVENT and DONE records meet. */
static void key_of(uint8_t key[16], uint8_t k)
{
    memset(key, 0, 16);
    key[0] = k;
    key[15] = (uint8_t)~k;
}

static void build(segments *s, reader *r)
{
    s->count = 1;
    s->len[0] = 0;
    while (r->p < r->end) {
        uint8_t op = take_byte(r);
        uint8_t *out;
        switch (op % 5) {
        case 0: /* the writer began a new segment */
            if (s->count < MAX_SEGMENTS) s->len[s->count++] = 0;
            break;
        case 1: { /* any type and payload, with a correct CRC */
            uint8_t type = take_byte(r);
            size_t n = take(r, take_byte(r));
            if ((out = room_for(s, n)) != NULL) {
                s->len[s->count - 1] += encode_raw(out, type, r->p, (uint32_t)n);
            }
            r->p += n;
            break;
        }
        case 2: { /* an EVENT, or an EVENT_AT (with an emit time), whose lengths add up */
            uint8_t k = take_byte(r), order = take_byte(r);
            bool timed = order & 1;
            size_t at = timed ? 8 : 0;
            size_t body = take(r, take_byte(r));
            const uint8_t *body_at = r->p;
            r->p += body;
            size_t ua = take(r, take_byte(r) % 16);
            const uint8_t *ua_at = r->p;
            r->p += ua;
            size_t payload = 16 + 8 + at + 4 + body + 2 + ua + 2;
            if ((out = room_for(s, payload)) == NULL) break;
            uint8_t *p = out + HEADER;
            key_of(p, k);
            put_u64(p + 16, order);
            if (timed) put_u64(p + 24, 1764000000000u + order);
            put_u32(p + 24 + at, (uint32_t)body);
            memcpy(p + 28 + at, body_at, body);
            p += 28 + at + body;
            *p++ = (uint8_t)ua;
            *p++ = 0;
            memcpy(p, ua_at, ua);
            p += ua;
            *p++ = 0; /* no ip */
            *p++ = 0;
            s->len[s->count - 1] +=
                seal_record(out, timed ? TYPE_EVENT_AT : TYPE_EVENT, (uint32_t)payload);
            break;
        }
        case 3: { /* DONE of a key */
            uint8_t key[16];
            key_of(key, take_byte(r));
            if ((out = room_for(s, 16)) != NULL)
                s->len[s->count - 1] += encode_raw(out, TYPE_DONE, key, 16);
            break;
        }
        case 4: { /* bytes as they are: a torn tail or damage */
            size_t n = take(r, take_byte(r) % 32);
            size_t *len = &s->len[s->count - 1];
            if (n <= SEGMENT_MAX - *len) {
                memcpy(s->data[s->count - 1] + *len, r->p, n);
                *len += n;
            }
            r->p += n;
            break;
        }
        }
    }
}

static bool write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* An intact EVENT record of the input, as the format defines it. */
typedef struct input_event {
    const uint8_t *key;
    const uint8_t *body, *user_agent, *client_ip;
    uint32_t body_len;
    uint16_t user_agent_len, client_ip_len;
} input_event;

/* What a reader of the input must find: the intact EVENT records, and the keys that
 * are pending (an intact EVENT, no intact DONE), each once. */
typedef struct expected {
    input_event events[MAX_EVENTS];
    size_t event_count;
    const uint8_t *done_keys[MAX_EVENTS];
    size_t done_count;
    const uint8_t *pending_keys[MAX_EVENTS];
    size_t pending_count;
} expected;

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* The inner fields of an EVENT payload: key, order, (for an EVENT_AT, the emit time,)
 * body, user agent and ip, whose lengths must add up to the payload's exactly. */
static bool event_fields(uint8_t type, const uint8_t *p, uint32_t len, input_event *e)
{
    const uint32_t at = type == TYPE_EVENT_AT ? 8 : 0; /* the emit time's bytes */
    const uint32_t fixed = 16 + 8 + at + 4 + 2 + 2;
    if (len < fixed) return false;
    e->key = p;
    e->body_len = get_u32(p + 24 + at);
    if (e->body_len > len - fixed) return false;
    e->body = p + 28 + at;
    e->user_agent_len = get_u16(e->body + e->body_len);
    if (e->user_agent_len > len - fixed - e->body_len) return false;
    e->user_agent = e->body + e->body_len + 2;
    e->client_ip_len = get_u16(e->user_agent + e->user_agent_len);
    e->client_ip = e->user_agent + e->user_agent_len + 2;
    return e->client_ip_len == len - fixed - e->body_len - e->user_agent_len;
}

static bool key_listed(const uint8_t *const *keys, size_t count, const uint8_t *key)
{
    for (size_t i = 0; i < count; i++)
        if (memcmp(keys[i], key, 16) == 0) return true;
    return false;
}

/* Reads each segment from its start up to its first record that is torn, damaged, of
 * an unknown type or with inner lengths that do not add up. */
static void read_input(const segments *s, expected *x)
{
    x->event_count = x->done_count = x->pending_count = 0;
    for (size_t i = 0; i < s->count; i++) {
        const uint8_t *p = s->data[i], *end = p + s->len[i];
        while ((size_t)(end - p) >= HEADER && get_u32(p) == MAGIC) {
            uint32_t len = get_u32(p + 4);
            if (len > (size_t)(end - p) - HEADER) break;
            uint32_t crc =
                ~crc32c_update(crc32c_update(0xffffffffu, p + 4, 4), p + 12, 1 + (size_t)len);
            if (crc != get_u32(p + 8)) break;
            const uint8_t *payload = p + HEADER;
            if (p[12] == TYPE_EVENT || p[12] == TYPE_EVENT_AT) {
                input_event *e = &x->events[x->event_count];
                if (!event_fields(p[12], payload, len, e)) break;
                x->event_count++;
            } else if (p[12] == TYPE_DONE && len == 16) {
                x->done_keys[x->done_count++] = payload;
            } else {
                break;
            }
            p += HEADER + (size_t)len;
        }
    }
    for (size_t i = 0; i < x->event_count; i++) {
        const uint8_t *key = x->events[i].key;
        if (!key_listed(x->done_keys, x->done_count, key) &&
            !key_listed(x->pending_keys, x->pending_count, key))
            x->pending_keys[x->pending_count++] = key;
    }
}

typedef struct replayed {
    const expected *input;
    uint64_t ids[MAX_EVENTS];
    uint8_t keys[MAX_EVENTS][16];
    size_t count;
} replayed;

static bool same_bytes(const void *a, size_t a_len, const void *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* The replayed event is one of the input's intact records, field for field. */
static bool is_input_event(const expected *x, const dn_spool_event *e)
{
    for (size_t i = 0; i < x->event_count; i++) {
        const input_event *in = &x->events[i];
        if (memcmp(in->key, e->idempotency_key, 16) != 0) continue;
        if (!same_bytes(in->body, in->body_len, e->body, e->body_len)) continue;
        if (!same_bytes(in->user_agent, in->user_agent_len, e->user_agent, e->user_agent_len))
            continue;
        if (same_bytes(in->client_ip, in->client_ip_len, e->client_ip, e->client_ip_len))
            return true;
    }
    return false;
}

static void on_event(void *ud, const dn_spool_event *e)
{
    replayed *r = ud;
    if (r->count == MAX_EVENTS) abort();
    const uint8_t *key = e->idempotency_key;
    if (!key_listed(r->input->pending_keys, r->input->pending_count, key)) abort();
    if (!is_input_event(r->input, e)) abort();
    for (size_t i = 0; i < r->count; i++)
        if (memcmp(r->keys[i], key, 16) == 0) abort(); /* a key twice */
    memcpy(r->keys[r->count], key, 16);
    r->ids[r->count++] = e->id;
}

static char dir[256];

static void remove_folder(void)
{
    remove_tree(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static segments input;
    static expected want;
    static replayed seen;
    if (!dir[0]) {
        /* tmpfs when there is one: every run writes, syncs and removes files. */
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/dukanext-fuzz-spool.XXXXXX", base);
        if (!mkdtemp(dir)) abort();
        atexit(remove_folder);
    }

    reader r = {data, data + size};
    build(&input, &r);
    read_input(&input, &want);
    char path[512];
    for (size_t i = 0; i < input.count; i++) {
        snprintf(path, sizeof path, "%s/" GONE_WRITER ".%zu.log", dir, i + 1);
        if (!write_file(path, input.data[i], input.len[i])) abort();
    }
    snprintf(path, sizeof path, "%s/" GONE_WRITER ".lock", dir);
    if (!write_file(path, NULL, 0)) abort();

    dn_spool_options options = {.dir = dir, .sync = DN_SPOOL_SYNC_NEVER, .max_bytes = 1u << 30};
    char err[256];
    dn_spool *spool = dn_spool_open(&options, err, sizeof err);
    if (!spool) abort();
    seen.input = &want;
    seen.count = 0;
    if (!dn_spool_replay(spool, on_event, &seen)) abort();
    /* Each pending key was replayed once (on_event refuses a second): none is missing. */
    if (seen.count != want.pending_count) abort();
    if (dn_spool_pending(spool) != seen.count) abort();
    for (size_t i = 0; i < seen.count; i++)
        if (dn_spool_mark_done(spool, seen.ids[i]) != DN_SPOOL_OK) abort();
    dn_spool_close(spool);
    /* Adopted and all done: nothing of either writer may stay. */
    if (count_entries(dir) != 0) abort();
    return 0;
}
