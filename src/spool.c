#include "spool.h"
#include "buf.h"
#include "ids.h"
#include "os.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* On disk, little-endian, packed byte by byte:
 *   u32 magic, u32 payload length, u32 CRC-32C, u8 type, payload
 * The CRC covers the length, the type and the payload, so a flipped length is caught
 * too. EVENT payload: key[16], u64 order, u32 body length, body, u16 user agent
 * length, user agent, u16 client ip length, client ip. DONE payload: key[16].
 *
 * The order is the id the writer handed out for the event: it counts up in the order
 * events were first appended (or adopted), and compaction copies a record unchanged,
 * so sorting a writer's EVENT records by order gives back its append order wherever
 * they now lie. Type 1 was the EVENT record before it carried an order; it now reads
 * as an unknown type, that is as damage. */
#define RECORD_MAGIC  0x50534e44u /* "DNSP" as bytes on disk */
#define RECORD_HEADER 13
#define KEY_LEN       16
#define EVENT_FIXED   (KEY_LEN + 8 + 4 + 2 + 2)
#define EVENT_ORDER   (RECORD_HEADER + KEY_LEN) /* where the order lies in a record */
#define DONE_RECORD   (RECORD_HEADER + KEY_LEN)

enum { RECORD_DONE = 2, RECORD_EVENT = 3 };

/* In memory: per segment its size and the count and bytes of its pending events; per
 * pending event its id, key and place. Ids count up from 1 per writer and are not
 * places, so an id keeps finding its event when compaction moves the record. The id
 * is also the order in the record, so the pending table, by id, is in append order.
 * max_bytes bounds dn_spool_bytes, the size of every segment file the writer keeps
 * (DONE records and done segments not yet removable included): a true bound on disk
 * use. */

#define DEFAULT_SEGMENT_BYTES ((uint64_t)4 << 20)
#define DEFAULT_MAX_BYTES     ((uint64_t)64 << 20)

/* "<pid>-<16 hex>" with a pid of at most 20 digits. */
#define WRITER_NAME_MAX 37
/* Our file names: the writer, a seq of at most 20 digits, and a suffix. */
#define FILE_NAME_MAX 72

/* Several tries because a scanning adopter may take a brand-new lock file before its
 * creator does (see create_own_lock). */
#define LOCK_ATTEMPTS 8

/* An event appended or adopted by this writer and not yet marked done. Ids are a
 * per-writer counter, independent of where the record lies: compaction moves the
 * record and updates seq and offset, and the id the caller holds stays valid. */
typedef struct pending_event {
    uint64_t id;
    uint64_t seq;    /* segment holding the EVENT record */
    uint64_t offset; /* of the record in that segment */
    uint64_t size;   /* of the whole record */
    uint8_t key[KEY_LEN];
    bool done; /* kept as a tombstone until the table is squeezed */
} pending_event;

typedef struct segment {
    uint64_t seq;
    uint64_t size;
    uint64_t live_events;
    uint64_t live_bytes; /* records of its pending events */
} segment;

struct dn_spool {
    char *dir;
    int dir_fd;
    int lock_fd;
    char writer[WRITER_NAME_MAX + 1];
    dn_spool_sync sync;
    int64_t interval_ms;
    uint64_t max_bytes;
    uint64_t segment_bytes;

    segment *segments; /* by seq, oldest first; the last one is being appended to */
    size_t segment_count, segment_cap;
    int current_fd; /* the last segment, or -1 before the first append */
    uint64_t next_seq;
    bool roll_needed; /* a write failed: the next append begins a new segment */
    bool dirty;       /* written since the last sync of the current segment */
    int64_t last_sync_ms;

    pending_event *pending; /* by id */
    size_t pending_len, pending_cap, pending_done;
    uint64_t next_id;
    bool replaying; /* replay walks the table by index: do not squeeze it */

    uint64_t disk_bytes; /* every segment file we keep: what max_bytes bounds */
    uint64_t live_bytes;

    int read_fd; /* one older segment kept open for replay and compaction */
    uint64_t read_seq;

    dn_buf scratch;
    char error[256];
};

typedef enum write_kind {
    WRITE_EVENT, /* synced as the sync option says */
    WRITE_DONE,  /* never synced on its own */
    WRITE_MOVE,  /* a copy whose original is deleted afterwards: the caller syncs */
} write_kind;

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), half a byte at a time: a
 * 16-entry table keeps it short while fast enough for appends of small events. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
    static const uint32_t nibble[16] = {
        0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
        0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
        0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
    };
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nibble[crc & 15];
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return crc;
}

static uint32_t record_crc(const uint8_t *record, uint32_t payload_len)
{
    uint32_t crc = crc32c_update(0xffffffffu, record + 4, 4);
    crc = crc32c_update(crc, record + RECORD_HEADER - 1, (size_t)payload_len + 1);
    return ~crc;
}

typedef struct event_view {
    const uint8_t *key;
    uint64_t order;
    const char *body;
    uint32_t body_len;
    const char *user_agent;
    uint16_t user_agent_len;
    const char *client_ip;
    uint16_t client_ip_len;
} event_view;

static bool event_decode(const uint8_t *payload, uint32_t len, event_view *ev)
{
    if (len < EVENT_FIXED) return false;
    uint32_t room = len - EVENT_FIXED; /* bytes left for body, user agent and ip */
    const uint8_t *p = payload;
    ev->key = p;
    p += KEY_LEN;
    ev->order = get_u64(p);
    p += 8;
    ev->body_len = get_u32(p);
    p += 4;
    if (ev->body_len > room) return false;
    room -= ev->body_len;
    ev->body = (const char *)p;
    p += ev->body_len;
    ev->user_agent_len = get_u16(p);
    p += 2;
    if (ev->user_agent_len > room) return false;
    room -= ev->user_agent_len;
    ev->user_agent = (const char *)p;
    p += ev->user_agent_len;
    ev->client_ip_len = get_u16(p);
    p += 2;
    if (ev->client_ip_len != room) return false;
    ev->client_ip = (const char *)p;
    return true;
}

typedef struct record {
    uint8_t type;
    const uint8_t *payload;
    uint32_t payload_len;
    uint64_t size;
} record;

/* False when data does not start with a whole, intact record of a known type whose
 * inner lengths add up: a torn tail and a corrupt record look the same to a reader. */
static bool record_parse(const uint8_t *data, uint64_t avail, record *r)
{
    if (avail < RECORD_HEADER || get_u32(data) != RECORD_MAGIC) return false;
    uint32_t payload_len = get_u32(data + 4);
    if (payload_len > avail - RECORD_HEADER) return false;
    if (record_crc(data, payload_len) != get_u32(data + 8)) return false;
    r->type = data[RECORD_HEADER - 1];
    r->payload = data + RECORD_HEADER;
    r->payload_len = payload_len;
    r->size = RECORD_HEADER + (uint64_t)payload_len;
    event_view ev;
    if (r->type == RECORD_EVENT) return event_decode(r->payload, payload_len, &ev);
    return r->type == RECORD_DONE && payload_len == KEY_LEN;
}

/* Builds one whole record in b, so that it reaches the file in a single write. */
static void record_begin(dn_buf *b, uint8_t type, uint32_t payload_len)
{
    dn_buf_clear(b);
    if (!dn_buf_reserve(b, RECORD_HEADER + (size_t)payload_len)) return;
    uint8_t *p = (uint8_t *)b->data;
    put_u32(p, RECORD_MAGIC);
    put_u32(p + 4, payload_len);
    put_u32(p + 8, 0);
    p[12] = type;
    b->len = RECORD_HEADER;
}

static void record_finish(dn_buf *b)
{
    if (b->failed) return;
    uint8_t *p = (uint8_t *)b->data;
    put_u32(p + 8, record_crc(p, get_u32(p + 4)));
}

static void append_u16(dn_buf *b, uint16_t v)
{
    uint8_t bytes[2];
    put_u16(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

static void append_u32(dn_buf *b, uint32_t v)
{
    uint8_t bytes[4];
    put_u32(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

static void append_u64(dn_buf *b, uint64_t v)
{
    uint8_t bytes[8];
    put_u64(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

DN_PRINTF_LIKE(2, 3) static void set_error(dn_spool *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
}

static bool lock_name(char *out, const char *writer)
{
    int n = snprintf(out, FILE_NAME_MAX, "%s.lock", writer);
    return n > 0 && n < FILE_NAME_MAX;
}

static bool segment_name(char *out, const char *writer, uint64_t seq)
{
    int n = snprintf(out, FILE_NAME_MAX, "%s.%llu.log", writer, (unsigned long long)seq);
    return n > 0 && n < FILE_NAME_MAX;
}

static bool read_at(int fd, uint8_t *out, uint64_t len, uint64_t offset)
{
    while (len > 0) {
        int64_t n = dn_os_read_at(fd, out, (size_t)len, offset);
        if (n < 0) return false;
        if (n == 0) {
            errno = EIO; /* the file is shorter than our bookkeeping says */
            return false;
        }
        out += n;
        len -= (uint64_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

static bool read_whole_file(int fd, dn_buf *out)
{
    uint64_t size;
    dn_buf_clear(out);
    if (!dn_os_file_size(fd, &size)) return false;
    if (size > SIZE_MAX - 1 || !dn_buf_reserve(out, (size_t)size + 1)) {
        errno = ENOMEM;
        return false;
    }
    for (;;) {
        if (out->len == out->cap && !dn_buf_reserve(out, 65536)) {
            errno = ENOMEM;
            return false;
        }
        int64_t n = dn_os_read_at(fd, out->data + out->len, out->cap - out->len, out->len);
        if (n < 0) return false;
        if (n == 0) return true;
        out->len += (size_t)n;
    }
}

static segment *current_segment(dn_spool *s)
{
    return s->segment_count ? &s->segments[s->segment_count - 1] : NULL;
}

static segment *segment_find(dn_spool *s, uint64_t seq)
{
    size_t lo = 0, hi = s->segment_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->segments[mid].seq == seq) return &s->segments[mid];
        if (s->segments[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static pending_event *pending_find(dn_spool *s, uint64_t id)
{
    size_t lo = 0, hi = s->pending_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->pending[mid].id == id) return &s->pending[mid];
        if (s->pending[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void pending_squeeze(dn_spool *s)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->pending_len; i++)
        if (!s->pending[i].done) s->pending[kept++] = s->pending[i];
    s->pending_len = kept;
    s->pending_done = 0;
}

/* Room for one more pending event, made before its record is written: once on disk,
 * an event must also be known here or its id could not be handed out. */
static bool pending_reserve(dn_spool *s)
{
    if (s->pending_len < s->pending_cap) return true;
    if (!s->replaying && s->pending_done >= s->pending_len / 2 && s->pending_done > 0) {
        pending_squeeze(s);
        return true;
    }
    size_t cap = s->pending_cap ? s->pending_cap * 2 : 64;
    pending_event *grown = realloc(s->pending, cap * sizeof *grown);
    if (!grown) return false;
    s->pending = grown;
    s->pending_cap = cap;
    return true;
}

static bool segments_reserve(dn_spool *s)
{
    if (s->segment_count < s->segment_cap) return true;
    size_t cap = s->segment_cap ? s->segment_cap * 2 : 8;
    segment *grown = realloc(s->segments, cap * sizeof *grown);
    if (!grown) return false;
    s->segments = grown;
    s->segment_cap = cap;
    return true;
}

static void forget_read_fd(dn_spool *s)
{
    if (s->read_fd >= 0) dn_os_close(s->read_fd);
    s->read_fd = -1;
    s->read_seq = 0;
}

/* Begins the next segment. The one left behind is synced first when it holds unsynced
 * records: the interval sync in tick only reaches the current segment. */
static bool roll_segment(dn_spool *s, write_kind kind)
{
    bool durable = s->sync != DN_SPOOL_SYNC_NEVER || kind == WRITE_MOVE;
    char name[FILE_NAME_MAX];
    if (!segments_reserve(s)) {
        set_error(s, "cannot begin a segment in %s: out of memory", s->dir);
        return false;
    }
    if (!segment_name(name, s->writer, s->next_seq)) {
        set_error(s, "segment name too long in %s", s->dir);
        return false;
    }
    if (s->current_fd >= 0 && s->dirty && durable && !dn_os_sync_data(s->current_fd)) {
        set_error(s, "cannot sync a segment in %s: %s", s->dir, strerror(errno));
        return false;
    }
    int fd = dn_os_open_at(s->dir_fd, name, DN_OS_WRITE | DN_OS_CREATE_NEW | DN_OS_APPEND);
    if (fd < 0) {
        set_error(s, "cannot create %s/%s: %s", s->dir, name, strerror(errno));
        return false;
    }
    if (durable && !dn_os_sync_folder(s->dir_fd)) {
        set_error(s, "cannot sync %s: %s", s->dir, strerror(errno));
        dn_os_close(fd);
        dn_os_remove_at(s->dir_fd, name);
        return false;
    }
    if (s->current_fd >= 0) dn_os_close(s->current_fd);
    s->current_fd = fd;
    s->segments[s->segment_count++] = (segment){.seq = s->next_seq};
    s->next_seq++;
    s->dirty = false;
    s->roll_needed = false;
    return true;
}

/* Appends one whole record to the current segment, beginning a new one when it is
 * full. On failure nothing of the record remains: a partly written record is cut off
 * again, so that no torn record sits before later appends. */
static dn_spool_status write_record(dn_spool *s, const uint8_t *data, uint64_t len, write_kind kind,
                                    uint64_t *seq, uint64_t *offset)
{
    /* A write that would pass the file size limit (RLIMIT_FSIZE, `ulimit -f`) raises
     * SIGXFSZ, whose default action kills the host: segments end before it instead,
     * and a record larger than it is refused without writing. Read on every write,
     * since the host may change it. */
    uint64_t size_limit = dn_os_file_size_limit();
    if (len > size_limit) {
        set_error(s, "cannot write to %s: %s (a record of %llu bytes, the file size limit is %llu)",
                  s->dir, strerror(EFBIG), (unsigned long long)len, (unsigned long long)size_limit);
        return DN_SPOOL_ERROR;
    }
    segment *cur = current_segment(s);
    bool full = cur && cur->size > 0 &&
                (cur->size + len > s->segment_bytes || cur->size + len > size_limit);
    if ((!cur || full || s->roll_needed) && !roll_segment(s, kind)) return DN_SPOOL_ERROR;
    cur = current_segment(s);
    uint64_t end = cur->size;
    bool ok = dn_os_write_all(s->current_fd, data, len);
    bool synced = false;
    if (ok && kind == WRITE_EVENT && s->sync == DN_SPOOL_SYNC_ALWAYS) {
        ok = dn_os_sync_data(s->current_fd);
        synced = ok;
    }
    if (!ok) {
        char name[FILE_NAME_MAX];
        int write_errno = errno;
        segment_name(name, s->writer, cur->seq);
        set_error(s, "cannot write %s/%s: %s", s->dir, name, strerror(write_errno));
        /* Never append after a record that could not be cut off again. And on a full
         * disk, new appends go to a new segment, so that this one can be removed (and
         * its space freed) once its events are done. */
        if (end > 0) s->roll_needed = true;
        if (!dn_os_truncate(s->current_fd, end)) {
            uint64_t size;
            s->roll_needed = true;
            if (dn_os_file_size(s->current_fd, &size) && size > end) {
                s->disk_bytes += size - end;
                cur->size = size;
            }
        }
        return DN_SPOOL_ERROR;
    }
    s->dirty = !synced;
    cur->size += len;
    s->disk_bytes += len;
    *seq = cur->seq;
    *offset = end;
    return DN_SPOOL_OK;
}

static void count_live(dn_spool *s, uint64_t seq, uint64_t size, bool added)
{
    segment *seg = segment_find(s, seq);
    if (added) {
        seg->live_events++;
        seg->live_bytes += size;
        s->live_bytes += size;
    } else {
        seg->live_events--;
        seg->live_bytes -= size;
        s->live_bytes -= size;
    }
}

/* Writes an EVENT record already built in data and remembers it as pending. */
static dn_spool_status add_event(dn_spool *s, const uint8_t *data, uint64_t len, write_kind kind,
                                 uint64_t *id)
{
    if (!pending_reserve(s)) {
        set_error(s, "cannot remember an event: out of memory");
        return DN_SPOOL_ERROR;
    }
    uint64_t seq, offset;
    dn_spool_status status = write_record(s, data, len, kind, &seq, &offset);
    if (status != DN_SPOOL_OK) return status;
    pending_event *e = &s->pending[s->pending_len++];
    *e = (pending_event){.id = s->next_id++, .seq = seq, .offset = offset, .size = len};
    memcpy(e->key, data + RECORD_HEADER, KEY_LEN);
    count_live(s, seq, len, true);
    if (id) *id = e->id;
    return DN_SPOOL_OK;
}

static void mark_gone(dn_spool *s, pending_event *e)
{
    e->done = true;
    s->pending_done++;
    count_live(s, e->seq, e->size, false);
}

/* Reads the EVENT record of size bytes at offset into buf; false when it cannot be
 * read or is no longer intact. */
static bool read_event_at(dn_spool *s, int fd, uint64_t offset, uint64_t size, dn_buf *buf,
                          record *r)
{
    dn_buf_clear(buf);
    if (!dn_buf_reserve(buf, (size_t)size)) {
        set_error(s, "cannot read an event back: out of memory");
        return false;
    }
    if (!read_at(fd, (uint8_t *)buf->data, size, offset)) {
        set_error(s, "cannot read an event back from %s: %s", s->dir, strerror(errno));
        return false;
    }
    buf->len = (size_t)size;
    if (!record_parse((const uint8_t *)buf->data, size, r) || r->type != RECORD_EVENT ||
        r->size != size) {
        set_error(s, "an event in %s no longer reads back intact", s->dir);
        return false;
    }
    return true;
}

/* Reads our own record back into buf; false when it cannot be read or is no longer
 * intact. */
static bool read_own_record(dn_spool *s, const pending_event *e, dn_buf *buf, record *r)
{
    int fd = -1;
    if (s->current_fd >= 0 && e->seq == current_segment(s)->seq) {
        fd = s->current_fd;
    } else if (s->read_fd >= 0 && s->read_seq == e->seq) {
        fd = s->read_fd;
    } else {
        char name[FILE_NAME_MAX];
        forget_read_fd(s);
        if (!segment_name(name, s->writer, e->seq)) return false;
        fd = dn_os_open_at(s->dir_fd, name, 0);
        if (fd < 0) {
            set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
            return false;
        }
        s->read_fd = fd;
        s->read_seq = e->seq;
    }
    return read_event_at(s, fd, e->offset, e->size, buf, r);
}

/* Adoption of gone writers. */

typedef struct gone_writer {
    char name[WRITER_NAME_MAX + 1];
    int lock_fd; /* held while adopting; -1 when the writer turned out to be alive */
    uint64_t *seqs;
    size_t seq_count, seq_cap;
    bool adopted; /* all its pending events are in our log */
} gone_writer;

typedef struct gone_list {
    gone_writer *writers;
    size_t count, cap;
} gone_list;

/* What became of an idempotency key over all the adopted files: whether some DONE
 * record finished it, and where it stands in the merge of the writers' orders (see
 * copy_pending). A key can lie in several places: twice in one writer when a crash
 * came between a compaction's copy and the removal of the original, in two writers
 * when an adopter died between copying events and removing the originals. It is
 * copied once. */
typedef struct key_slot {
    uint8_t key[KEY_LEN];
    bool used;
    bool done;
    bool copied;        /* into our log */
    size_t holders;     /* writers it is pending in */
    size_t at_head;     /* of those, the ones where it is the next to copy */
    size_t last_writer; /* 1 + the last writer counted in holders */
} key_slot;

typedef struct key_map {
    key_slot *slots;
    size_t cap, count;
} key_map;

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Length of the "<pid>-<16 hex>" a file name starts with, 0 when it does not: files
 * of any other shape are not ours and are left alone. */
static size_t writer_prefix_len(const char *name)
{
    size_t i = 0;
    while (name[i] >= '0' && name[i] <= '9') i++;
    if (i == 0 || i > 20 || name[i] != '-') return 0;
    i++;
    for (size_t h = 0; h < 16; h++, i++)
        if (!is_lower_hex(name[i])) return 0;
    return i;
}

/* "<writer>.lock" or "<writer>.<seq>.log"; seq 0 for a lock file. */
static bool parse_file_name(const char *name, char writer[WRITER_NAME_MAX + 1], uint64_t *seq)
{
    size_t len = writer_prefix_len(name);
    if (len == 0) return false;
    const char *rest = name + len;
    *seq = 0;
    if (strcmp(rest, ".lock") != 0) {
        if (*rest++ != '.' || *rest < '1' || *rest > '9') return false;
        for (; *rest >= '0' && *rest <= '9'; rest++) {
            unsigned digit = (unsigned)(*rest - '0');
            if (*seq > (UINT64_MAX - digit) / 10) return false;
            *seq = *seq * 10 + digit;
        }
        if (strcmp(rest, ".log") != 0) return false;
    }
    memcpy(writer, name, len);
    writer[len] = '\0';
    return true;
}

static gone_writer *gone_list_find_or_add(gone_list *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->writers[i].name, name) == 0) return &list->writers[i];
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        gone_writer *grown = realloc(list->writers, cap * sizeof *grown);
        if (!grown) return NULL;
        list->writers = grown;
        list->cap = cap;
    }
    gone_writer *w = &list->writers[list->count++];
    memset(w, 0, sizeof *w);
    strcpy(w->name, name);
    w->lock_fd = -1;
    return w;
}

static bool gone_writer_add_seq(gone_writer *w, uint64_t seq)
{
    if (w->seq_count == w->seq_cap) {
        size_t cap = w->seq_cap ? w->seq_cap * 2 : 8;
        uint64_t *grown = realloc(w->seqs, cap * sizeof *grown);
        if (!grown) return false;
        w->seqs = grown;
        w->seq_cap = cap;
    }
    w->seqs[w->seq_count++] = seq;
    return true;
}

static void gone_list_free(gone_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        if (list->writers[i].lock_fd >= 0) dn_os_close(list->writers[i].lock_fd);
        free(list->writers[i].seqs);
    }
    free(list->writers);
}

static int compare_seq(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int compare_writer(const void *a, const void *b)
{
    return strcmp(((const gone_writer *)a)->name, ((const gone_writer *)b)->name);
}

typedef struct writer_listing {
    dn_spool *spool;
    gone_list *list;
    bool out_of_memory;
} writer_listing;

static bool list_writer_file(void *ud, const char *file_name)
{
    writer_listing *l = ud;
    char writer[WRITER_NAME_MAX + 1];
    uint64_t seq;
    if (!parse_file_name(file_name, writer, &seq) || strcmp(writer, l->spool->writer) == 0)
        return true;
    gone_writer *w = gone_list_find_or_add(l->list, writer);
    l->out_of_memory = !w || (seq != 0 && !gone_writer_add_seq(w, seq));
    return !l->out_of_memory;
}

/* Every other writer named by a file in the folder, with the segments it left. */
static bool list_other_writers(dn_spool *s, gone_list *list)
{
    writer_listing listing = {s, list, false};
    if (dn_os_list_folder(s->dir_fd, list_writer_file, &listing)) return true;
    if (listing.out_of_memory)
        set_error(s, "cannot list %s: out of memory", s->dir);
    else
        set_error(s, "cannot list %s: %s", s->dir, strerror(errno));
    return false;
}

/* A writer is gone when its lock can be taken. Segments without a lock file (their
 * writer died while being adopted) get one made here, so that two openers racing for
 * them still exclude each other. */
static bool claim_writer(dn_spool *s, gone_writer *w)
{
    char name[FILE_NAME_MAX];
    if (!lock_name(name, w->name)) return false;
    int fd = dn_os_open_at(s->dir_fd, name, DN_OS_WRITE | DN_OS_CREATE);
    if (fd < 0) return false;
    /* No link left: another opener adopted this writer and removed its lock. */
    if (!dn_os_lock_now(fd) || !dn_os_file_linked(fd)) {
        dn_os_close(fd);
        return false;
    }
    w->lock_fd = fd;
    return true;
}

static uint64_t key_hash(const uint8_t key[KEY_LEN])
{
    uint64_t h = 0;
    for (int i = 0; i < KEY_LEN; i++) h = (h ^ key[i]) * 0x100000001b3ull;
    return h;
}

static key_slot *key_map_slot(key_map *map, const uint8_t key[KEY_LEN])
{
    size_t i = (size_t)key_hash(key) & (map->cap - 1);
    while (map->slots[i].used && memcmp(map->slots[i].key, key, KEY_LEN) != 0)
        i = (i + 1) & (map->cap - 1);
    return &map->slots[i];
}

static bool key_map_grow(key_map *map)
{
    if (map->cap && map->count < map->cap / 2) return true;
    size_t cap = map->cap ? map->cap * 2 : 256;
    key_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    key_map bigger = {slots, cap, map->count};
    for (size_t i = 0; i < map->cap; i++)
        if (map->slots[i].used) *key_map_slot(&bigger, map->slots[i].key) = map->slots[i];
    free(map->slots);
    *map = bigger;
    return true;
}

/* The slot of key, made (not done) when missing. */
static key_slot *key_map_note(key_map *map, const uint8_t key[KEY_LEN])
{
    if (!key_map_grow(map)) return NULL;
    key_slot *slot = key_map_slot(map, key);
    if (!slot->used) {
        memset(slot, 0, sizeof *slot);
        memcpy(slot->key, key, KEY_LEN);
        slot->used = true;
        map->count++;
    }
    return slot;
}

/* A pending EVENT record in a gone writer's segment. */
typedef struct adopted_event {
    key_slot *slot;
    size_t writer; /* index in the gone list */
    uint64_t order;
    uint64_t seq;
    uint64_t offset;
    uint64_t size;
} adopted_event;

/* The pending records of all gone writers, by writer and then order, and per writer
 * the range of them not yet copied. */
typedef struct adoption {
    adopted_event *events;
    size_t count, cap;
    size_t *next, *end;
} adoption;

static void adoption_free(adoption *a)
{
    free(a->events);
    free(a->next);
    free(a->end);
}

static int compare_adopted(const void *a, const void *b)
{
    const adopted_event *x = a, *y = b;
    if (x->writer != y->writer) return (x->writer > y->writer) - (x->writer < y->writer);
    if (x->order != y->order) return (x->order > y->order) - (x->order < y->order);
    if (x->seq != y->seq) return (x->seq > y->seq) - (x->seq < y->seq);
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Reads one adopted segment into buf; a missing file (removed by a racing adopter
 * before we took the lock) reads as empty. */
static bool read_gone_segment(dn_spool *s, const gone_writer *w, uint64_t seq, dn_buf *buf)
{
    char name[FILE_NAME_MAX];
    dn_buf_clear(buf);
    if (!segment_name(name, w->name, seq)) return false;
    int fd = dn_os_open_at(s->dir_fd, name, 0);
    if (fd < 0) {
        if (errno == ENOENT) return true;
        set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
        return false;
    }
    bool ok = read_whole_file(fd, buf);
    if (!ok) set_error(s, "cannot read %s/%s: %s", s->dir, name, strerror(errno));
    dn_os_close(fd);
    return ok;
}

/* First pass: what every key became, over all the adopted files. Reading a segment
 * stops at its first bad record, whether a torn tail or damage in the middle: nothing
 * after it can be trusted. */
static bool collect_keys(dn_spool *s, gone_list *list, key_map *map, dn_buf *buf)
{
    for (size_t w = 0; w < list->count; w++) {
        gone_writer *gw = &list->writers[w];
        for (size_t i = 0; i < gw->seq_count; i++) {
            if (!read_gone_segment(s, gw, gw->seqs[i], buf)) return false;
            if (buf->len == 0) continue;
            const uint8_t *data = (const uint8_t *)buf->data;
            record r;
            for (uint64_t at = 0; record_parse(data + at, buf->len - at, &r); at += r.size) {
                key_slot *slot = key_map_note(map, r.payload);
                if (!slot) {
                    set_error(s, "cannot adopt in %s: out of memory", s->dir);
                    return false;
                }
                if (r.type == RECORD_DONE) slot->done = true;
            }
        }
    }
    return true;
}

/* Second pass: every EVENT record of a key no DONE finished, then sorted by writer
 * and order. A key twice in one writer keeps its first place: both copies carry the
 * same order. */
static bool list_pending(dn_spool *s, gone_list *list, key_map *map, dn_buf *buf, adoption *a)
{
    for (size_t w = 0; w < list->count; w++) {
        gone_writer *gw = &list->writers[w];
        for (size_t i = 0; i < gw->seq_count; i++) {
            if (!read_gone_segment(s, gw, gw->seqs[i], buf)) return false;
            if (buf->len == 0) continue;
            const uint8_t *data = (const uint8_t *)buf->data;
            record r;
            for (uint64_t at = 0; record_parse(data + at, buf->len - at, &r); at += r.size) {
                if (r.type != RECORD_EVENT) continue;
                key_slot *slot = key_map_slot(map, r.payload);
                if (!slot->used || slot->done) continue;
                if (a->count == a->cap) {
                    size_t cap = a->cap ? a->cap * 2 : 256;
                    adopted_event *grown = realloc(a->events, cap * sizeof *grown);
                    if (!grown) {
                        set_error(s, "cannot adopt in %s: out of memory", s->dir);
                        return false;
                    }
                    a->events = grown;
                    a->cap = cap;
                }
                event_view ev;
                event_decode(r.payload, r.payload_len, &ev);
                a->events[a->count++] = (adopted_event){
                    .slot = slot,
                    .writer = w,
                    .order = ev.order,
                    .seq = gw->seqs[i],
                    .offset = at,
                    .size = r.size,
                };
            }
        }
    }
    a->next = calloc(list->count, sizeof *a->next);
    a->end = calloc(list->count, sizeof *a->end);
    if (!a->next || !a->end) {
        set_error(s, "cannot adopt in %s: out of memory", s->dir);
        return false;
    }
    if (a->count > 1) qsort(a->events, a->count, sizeof *a->events, compare_adopted);
    size_t kept = 0;
    for (size_t i = 0; i < a->count; i++) {
        adopted_event e = a->events[i];
        if (e.slot->last_writer == e.writer + 1) continue;
        e.slot->last_writer = e.writer + 1;
        e.slot->holders++;
        a->events[kept++] = e;
    }
    a->count = kept;
    for (size_t i = 0, w = 0; w < list->count; w++) {
        a->next[w] = i;
        while (i < a->count && a->events[i].writer == w) i++;
        a->end[w] = i;
    }
    return true;
}

/* Moves writer w past the events already copied and counts its new next one. */
static void adoption_settle(adoption *a, size_t w)
{
    while (a->next[w] < a->end[w] && a->events[a->next[w]].slot->copied) a->next[w]++;
    if (a->next[w] < a->end[w]) a->events[a->next[w]].slot->at_head++;
}

/* One gone segment kept open while copying: a writer's events mostly come in file
 * order. */
typedef struct gone_reader {
    int fd;
    size_t writer;
    uint64_t seq;
} gone_reader;

/* Reads an adopted record again, gives it the next order of ours and appends it. */
static bool copy_adopted(dn_spool *s, gone_list *list, const adopted_event *e, gone_reader *rd,
                         dn_buf *buf)
{
    if (rd->fd < 0 || rd->writer != e->writer || rd->seq != e->seq) {
        char name[FILE_NAME_MAX];
        if (rd->fd >= 0) dn_os_close(rd->fd);
        rd->fd = -1;
        if (!segment_name(name, list->writers[e->writer].name, e->seq)) return false;
        rd->fd = dn_os_open_at(s->dir_fd, name, 0);
        if (rd->fd < 0) {
            set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
            return false;
        }
        rd->writer = e->writer;
        rd->seq = e->seq;
    }
    record r;
    if (!read_event_at(s, rd->fd, e->offset, e->size, buf, &r)) return false;
    uint8_t *data = (uint8_t *)buf->data;
    put_u64(data + EVENT_ORDER, s->next_id);
    put_u32(data + 8, record_crc(data, r.payload_len));
    return add_event(s, data, e->size, WRITE_MOVE, NULL) == DN_SPOOL_OK;
}

/* Third pass: the pending events go into our log in an order that keeps each gone
 * writer's: writers one after another by name, except that an event pending in
 * several writers (copies made by an adopter that died) waits until it is the next
 * in each of them, so that the ones before it in any writer come first. Orders that
 * contradict each other cannot come from our own writes; should intact-looking files
 * hold them, the first writer's next event goes first. A writer all of whose events
 * are in our log is adopted. */
static void copy_pending(dn_spool *s, gone_list *list, adoption *a, dn_buf *buf)
{
    gone_reader rd = {.fd = -1};
    size_t from = 0; /* writers before it are all copied */
    for (size_t w = 0; w < list->count; w++) adoption_settle(a, w);
    for (;;) {
        while (from < list->count && a->next[from] == a->end[from]) from++;
        size_t pick = list->count, first = list->count;
        for (size_t w = from; w < list->count; w++) {
            if (a->next[w] == a->end[w]) continue;
            if (first == list->count) first = w;
            const key_slot *slot = a->events[a->next[w]].slot;
            if (slot->at_head == slot->holders) {
                pick = w;
                break;
            }
        }
        if (first == list->count) break;
        if (pick == list->count) pick = first;
        const adopted_event *e = &a->events[a->next[pick]];
        if (!copy_adopted(s, list, e, &rd, buf)) break;
        e->slot->copied = true;
        for (size_t w = 0; w < list->count; w++) {
            if (a->next[w] == a->end[w] || a->events[a->next[w]].slot != e->slot) continue;
            a->next[w]++;
            adoption_settle(a, w);
        }
    }
    if (rd.fd >= 0) dn_os_close(rd.fd);
    for (size_t w = 0; w < list->count; w++) list->writers[w].adopted = a->next[w] == a->end[w];
}

/* Oldest segment first: a crash part way leaves a suffix whose DONE records still
 * apply, never EVENTs whose DONE records are gone. The lock goes last, while held. */
static void remove_gone_writer(dn_spool *s, gone_writer *w)
{
    char name[FILE_NAME_MAX];
    for (size_t i = 0; i < w->seq_count; i++)
        if (segment_name(name, w->name, w->seqs[i])) dn_os_remove_at(s->dir_fd, name);
    if (lock_name(name, w->name)) dn_os_remove_at(s->dir_fd, name);
}

/* Copies the pending events of the claimed writers into our log, syncs it, then
 * removes their files. A writer copied in full before a failure is done with; what
 * could not be copied stays on disk for the next opener. */
static void adopt_claimed(dn_spool *s, gone_list *list, key_map *map, dn_buf *buf)
{
    adoption a = {0};
    bool listed = collect_keys(s, list, map, buf) && list_pending(s, list, map, buf, &a);
    if (listed) copy_pending(s, list, &a, buf);
    adoption_free(&a);
    if (!listed) return;
    if (s->current_fd >= 0 && s->dirty) {
        if (!dn_os_sync_data(s->current_fd)) {
            set_error(s, "cannot sync %s: %s", s->dir, strerror(errno));
            return;
        }
        s->dirty = false;
    }
    bool removed = false;
    for (size_t i = 0; i < list->count; i++) {
        if (!list->writers[i].adopted) continue;
        remove_gone_writer(s, &list->writers[i]);
        removed = true;
    }
    if (removed) dn_os_sync_folder(s->dir_fd);
}

static void adopt_gone_writers(dn_spool *s)
{
    gone_list list = {0};
    if (!list_other_writers(s, &list)) {
        gone_list_free(&list);
        return;
    }
    size_t claimed = 0;
    for (size_t i = 0; i < list.count; i++) {
        if (!claim_writer(s, &list.writers[i])) {
            free(list.writers[i].seqs);
            continue;
        }
        list.writers[claimed++] = list.writers[i];
    }
    list.count = claimed;
    if (list.count == 0) {
        gone_list_free(&list);
        return;
    }
    /* Dead writers have no order among themselves; name order makes it repeatable. */
    qsort(list.writers, list.count, sizeof *list.writers, compare_writer);
    for (size_t i = 0; i < list.count; i++)
        if (list.writers[i].seq_count > 1)
            qsort(list.writers[i].seqs, list.writers[i].seq_count, sizeof(uint64_t), compare_seq);

    key_map map = {0};
    dn_buf buf;
    dn_buf_init(&buf);
    adopt_claimed(s, &list, &map, &buf);
    gone_list_free(&list);
    free(map.slots);
    dn_buf_free(&buf);
}

/* Takes "<pid>-<16 hex>.lock". An adopter scanning the folder may take a lock file in
 * the moment between its creation and our flock and then remove it: so after taking
 * it we check it still has its name, and otherwise start over with another name. */
static bool create_own_lock(dn_spool *s)
{
    for (int attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
        uint8_t random[8];
        char name[FILE_NAME_MAX];
        if (!dn_random_fill(random, sizeof random)) {
            set_error(s, "no randomness for a writer name");
            return false;
        }
        static const char hex[] = "0123456789abcdef";
        int n = snprintf(s->writer, sizeof s->writer, "%lu-", dn_process_id());
        if (n <= 0 || (size_t)n + 2 * sizeof random >= sizeof s->writer) {
            set_error(s, "writer name too long");
            return false;
        }
        for (size_t i = 0; i < sizeof random; i++) {
            s->writer[n++] = hex[random[i] >> 4];
            s->writer[n++] = hex[random[i] & 15];
        }
        s->writer[n] = '\0';
        if (!lock_name(name, s->writer)) {
            set_error(s, "writer name too long");
            return false;
        }
        int fd = dn_os_open_at(s->dir_fd, name, DN_OS_WRITE | DN_OS_CREATE_NEW);
        if (fd < 0) {
            if (errno == EEXIST) continue;
            set_error(s, "cannot create %s/%s: %s", s->dir, name, strerror(errno));
            return false;
        }
        if (dn_os_lock_now(fd) && dn_os_file_linked(fd)) {
            s->lock_fd = fd;
            return true;
        }
        dn_os_close(fd);
    }
    set_error(s, "cannot take a writer lock in %s", s->dir);
    return false;
}

static void spool_free(dn_spool *s)
{
    if (s->current_fd >= 0) dn_os_close(s->current_fd);
    forget_read_fd(s);
    /* close, never flock(LOCK_UN): after a fork the lock's open file description is
     * shared with the parent, and unlocking would release the parent's lock. */
    if (s->lock_fd >= 0) dn_os_close(s->lock_fd);
    if (s->dir_fd >= 0) dn_os_close(s->dir_fd);
    dn_buf_free(&s->scratch);
    free(s->pending);
    free(s->segments);
    free(s->dir);
    free(s);
}

dn_spool *dn_spool_open(const dn_spool_options *options, char *err, size_t err_size)
{
    if (!options->dir || !options->dir[0]) {
        snprintf(err, err_size, "no spool folder given");
        return NULL;
    }
    if (options->sync != DN_SPOOL_SYNC_ALWAYS && options->sync != DN_SPOOL_SYNC_INTERVAL &&
        options->sync != DN_SPOOL_SYNC_NEVER) {
        snprintf(err, err_size, "unknown spool sync mode %d", (int)options->sync);
        return NULL;
    }
    dn_spool *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(options->dir))) {
        free(s);
        snprintf(err, err_size, "cannot open a spool: out of memory");
        return NULL;
    }
    s->dir_fd = s->lock_fd = s->current_fd = s->read_fd = -1;
    s->sync = options->sync;
    s->interval_ms = options->interval_ms > 0 ? options->interval_ms : 0;
    s->max_bytes = options->max_bytes ? options->max_bytes : DEFAULT_MAX_BYTES;
    s->segment_bytes = options->segment_bytes ? options->segment_bytes : DEFAULT_SEGMENT_BYTES;
    /* Segments of at most a quarter of max_bytes, so that removing done segments can
     * always bring a full spool back under its bound. */
    if (s->segment_bytes > s->max_bytes / 4) s->segment_bytes = s->max_bytes / 4;
    if (s->segment_bytes == 0) s->segment_bytes = 1;
    s->next_seq = 1;
    s->next_id = 1;
    s->last_sync_ms = dn_mono_ms();
    dn_buf_init(&s->scratch);

    if (!dn_os_make_folders(s->dir)) {
        snprintf(err, err_size, "cannot create %s: %s", s->dir, strerror(errno));
        spool_free(s);
        return NULL;
    }
    int fd = dn_os_open_folder(s->dir);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open %s: %s", s->dir, strerror(errno));
        spool_free(s);
        return NULL;
    }
    s->dir_fd = fd;
    if (!create_own_lock(s)) {
        snprintf(err, err_size, "%s", s->error);
        spool_free(s);
        return NULL;
    }
    adopt_gone_writers(s);
    return s;
}

bool dn_spool_replay(dn_spool *s, dn_spool_event_fn on_event, void *ud)
{
    bool ok = true;
    size_t count = s->pending_len;
    /* Its own buffer: the callback may append, which reuses the scratch buffer. */
    dn_buf buf;
    dn_buf_init(&buf);
    s->replaying = true;
    for (size_t i = 0; i < count; i++) {
        if (s->pending[i].done) continue;
        record r;
        event_view ev;
        if (!read_own_record(s, &s->pending[i], &buf, &r)) {
            /* Never replay what does not read back intact; forget it rather than
             * stumble on it again. */
            mark_gone(s, &s->pending[i]);
            ok = false;
            continue;
        }
        event_decode(r.payload, r.payload_len, &ev);
        dn_spool_event event = {
            .id = s->pending[i].id,
            .body = ev.body,
            .body_len = ev.body_len,
            .user_agent = ev.user_agent_len ? ev.user_agent : NULL,
            .user_agent_len = ev.user_agent_len,
            .client_ip = ev.client_ip_len ? ev.client_ip : NULL,
            .client_ip_len = ev.client_ip_len,
        };
        memcpy(event.idempotency_key, ev.key, KEY_LEN);
        on_event(ud, &event);
    }
    s->replaying = false;
    dn_buf_free(&buf);
    return ok;
}

dn_spool_status dn_spool_append(dn_spool *s, const uint8_t idempotency_key[16], const char *body,
                                size_t body_len, const char *user_agent, size_t user_agent_len,
                                const char *client_ip, size_t client_ip_len, uint64_t *id)
{
    if (user_agent_len > UINT16_MAX || client_ip_len > UINT16_MAX ||
        body_len > UINT32_MAX - EVENT_FIXED - user_agent_len - client_ip_len) {
        set_error(s, "event too large for the spool");
        return DN_SPOOL_ERROR;
    }
    uint32_t payload_len = (uint32_t)(EVENT_FIXED + body_len + user_agent_len + client_ip_len);
    uint64_t size = RECORD_HEADER + (uint64_t)payload_len;
    if (size > s->max_bytes || s->disk_bytes > s->max_bytes - size) return DN_SPOOL_FULL;

    dn_buf *b = &s->scratch;
    record_begin(b, RECORD_EVENT, payload_len);
    dn_buf_append(b, idempotency_key, KEY_LEN);
    append_u64(b, s->next_id); /* the id add_event hands out for it */
    append_u32(b, (uint32_t)body_len);
    dn_buf_append(b, body, body_len);
    append_u16(b, (uint16_t)user_agent_len);
    dn_buf_append(b, user_agent, user_agent_len);
    append_u16(b, (uint16_t)client_ip_len);
    dn_buf_append(b, client_ip, client_ip_len);
    record_finish(b);
    if (b->failed) {
        set_error(s, "cannot append an event: out of memory");
        return DN_SPOOL_ERROR;
    }
    return add_event(s, (const uint8_t *)b->data, b->len, WRITE_EVENT, id);
}

dn_spool_status dn_spool_mark_done(dn_spool *s, uint64_t id)
{
    pending_event *e = pending_find(s, id);
    if (!e || e->done) {
        set_error(s, "no pending event with id %llu", (unsigned long long)id);
        return DN_SPOOL_ERROR;
    }
    uint8_t done[DONE_RECORD];
    put_u32(done, RECORD_MAGIC);
    put_u32(done + 4, KEY_LEN);
    done[12] = RECORD_DONE;
    memcpy(done + RECORD_HEADER, e->key, KEY_LEN);
    put_u32(done + 8, record_crc(done, KEY_LEN));
    /* Done in memory even when the record cannot be written: the caller is finished
     * with the event, and at worst a later writer sends it once more. */
    mark_gone(s, e);
    uint64_t seq, offset;
    return write_record(s, done, sizeof done, WRITE_DONE, &seq, &offset);
}

static void remove_oldest_segment(dn_spool *s)
{
    char name[FILE_NAME_MAX];
    segment *oldest = &s->segments[0];
    if (s->read_seq == oldest->seq) forget_read_fd(s);
    if (segment_name(name, s->writer, oldest->seq) && !dn_os_remove_at(s->dir_fd, name) &&
        errno != ENOENT) {
        set_error(s, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        return;
    }
    s->disk_bytes -= oldest->size;
    s->segment_count--;
    memmove(s->segments, s->segments + 1, s->segment_count * sizeof *s->segments);
}

static bool worth_compacting(const dn_spool *s)
{
    const segment *oldest = &s->segments[0];
    if (oldest->live_bytes < oldest->size / 4) return true;
    /* A mostly live oldest segment can hold back a run of done segments behind it:
     * once most of the disk is garbage, moving its events frees them all. */
    return s->disk_bytes > 2 * s->live_bytes + s->segment_bytes;
}

/* Moves the pending events of the oldest segment to the current one, syncs them, and
 * removes the oldest. Its DONE records can go with it: they only ever refer to events
 * in that segment or older ones, and there are none older. */
static void compact_oldest_segment(dn_spool *s)
{
    uint64_t oldest_seq = s->segments[0].seq;
    for (size_t i = 0; i < s->pending_len; i++) {
        if (s->pending[i].done || s->pending[i].seq != oldest_seq) continue;
        record r;
        if (!read_own_record(s, &s->pending[i], &s->scratch, &r)) {
            mark_gone(s, &s->pending[i]);
            continue;
        }
        uint64_t seq, offset;
        if (write_record(s, (const uint8_t *)s->scratch.data, r.size, WRITE_MOVE, &seq, &offset) !=
            DN_SPOOL_OK)
            return;
        pending_event *e = &s->pending[i];
        count_live(s, e->seq, e->size, false);
        e->seq = seq;
        e->offset = offset;
        count_live(s, e->seq, e->size, true);
    }
    if (s->dirty) {
        if (!dn_os_sync_data(s->current_fd)) {
            set_error(s, "cannot sync %s: %s", s->dir, strerror(errno));
            return;
        }
        s->dirty = false;
    }
    if (s->segments[0].seq == oldest_seq && s->segments[0].live_events == 0)
        remove_oldest_segment(s);
}

/* Removal goes from the oldest forward and never skips one: a done segment in the
 * middle may hold DONE records of events in older segments. Answers whether another
 * compaction is worth a tick of its own. */
static bool reclaim_segments(dn_spool *s)
{
    for (int compactions = 0;;) {
        while (s->segment_count > 1 && s->segments[0].live_events == 0) {
            size_t before = s->segment_count;
            remove_oldest_segment(s);
            if (s->segment_count == before) return false;
        }
        /* After a failed write (a full disk), the last segment goes too once nothing in
         * it is pending: its space is what the next append needs. */
        if (s->segment_count == 1 && s->roll_needed && s->segments[0].live_events == 0) {
            remove_oldest_segment(s);
            if (s->segment_count == 0) {
                dn_os_close(s->current_fd);
                s->current_fd = -1;
                s->dirty = false;
            }
            return false;
        }
        if (s->segment_count < 2 || !worth_compacting(s)) return false;
        /* One compaction per tick bounds the work a pump call can do. */
        if (compactions++ > 0) return true;
        size_t before = s->segment_count;
        uint64_t oldest_seq = s->segments[0].seq;
        compact_oldest_segment(s);
        /* A compaction that failed (a full disk) waits for the next event's tick. */
        if (s->segment_count == before && s->segments[0].seq == oldest_seq) return false;
    }
}

int64_t dn_spool_tick(dn_spool *s, int64_t now_ms)
{
    if (s->sync == DN_SPOOL_SYNC_INTERVAL && s->dirty && s->current_fd >= 0 &&
        now_ms - s->last_sync_ms >= s->interval_ms) {
        if (dn_os_sync_data(s->current_fd))
            s->dirty = false;
        else
            set_error(s, "cannot sync %s: %s", s->dir, strerror(errno));
        s->last_sync_ms = now_ms;
    }
    bool more = reclaim_segments(s);
    if (!s->replaying && s->pending_done > 64 && s->pending_done >= s->pending_len / 2)
        pending_squeeze(s);
    if (more) return now_ms;
    if (s->sync == DN_SPOOL_SYNC_INTERVAL && s->dirty && s->current_fd >= 0)
        return s->last_sync_ms + s->interval_ms;
    return INT64_MAX;
}

uint64_t dn_spool_bytes(const dn_spool *s)
{
    return s->disk_bytes;
}

uint64_t dn_spool_pending(const dn_spool *s)
{
    return s->pending_len - s->pending_done;
}

const char *dn_spool_error(const dn_spool *s)
{
    return s->error;
}

/* A writer that leaves nothing pending removes its files, oldest segment first and
 * the lock last while still held, so a clean shutdown leaves an empty folder. */
static void remove_own_files(dn_spool *s)
{
    char name[FILE_NAME_MAX];
    for (size_t i = 0; i < s->segment_count; i++)
        if (segment_name(name, s->writer, s->segments[i].seq)) dn_os_remove_at(s->dir_fd, name);
    if (lock_name(name, s->writer)) dn_os_remove_at(s->dir_fd, name);
}

void dn_spool_close(dn_spool *s)
{
    if (!s) return;
    if (dn_spool_pending(s) == 0)
        remove_own_files(s);
    else if (s->current_fd >= 0 && s->dirty)
        dn_os_sync_data(s->current_fd);
    spool_free(s);
}

void dn_spool_abandon(dn_spool *s)
{
    if (!s) return;
    spool_free(s);
}
