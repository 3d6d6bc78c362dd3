#include "spool.h"
#include "buf.h"
#include "ids.h"
#include "os.h"
#include "spool_adopt.h"
#include "spool_files.h"
#include "spool_record.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN DN_SPOOL_KEY_LEN

/* In memory: per segment its size and the count and bytes of its pending events; per
 * pending event its id, key and place. Ids count up from 1 per writer and are not
 * places, so an id keeps finding its event when compaction moves the record. The id
 * is also the order in the record, so the pending table, by id, is in append order.
 * max_bytes bounds dn_spool_bytes, the size of every segment file the writer keeps
 * (DONE records and done segments not yet removable included): a true bound on disk
 * use. */

#define DEFAULT_SEGMENT_BYTES ((uint64_t)4 << 20)
#define DEFAULT_MAX_BYTES     ((uint64_t)64 << 20)

#define WRITER_NAME_MAX DN_SPOOL_WRITER_NAME_MAX
#define FILE_NAME_MAX   DN_SPOOL_FILE_NAME_MAX

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

DN_PRINTF_LIKE(2, 3) static void set_error(dn_spool *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
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
    pending_event *grown =
        dn_array_reserve(s->pending, s->pending_len, &s->pending_cap, sizeof *grown, 64);
    if (!grown) return false;
    s->pending = grown;
    return true;
}

static bool segments_reserve(dn_spool *s)
{
    segment *grown =
        dn_array_reserve(s->segments, s->segment_count, &s->segment_cap, sizeof *grown, 8);
    if (!grown) return false;
    s->segments = grown;
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
    if (!dn_spool_segment_name(name, s->writer, s->next_seq)) {
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
        dn_spool_segment_name(name, s->writer, cur->seq);
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
    memcpy(e->key, data + DN_SPOOL_RECORD_HEADER, KEY_LEN);
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

/* Reads our own record back into buf; false when it cannot be read or is no longer
 * intact. */
static bool read_own_record(dn_spool *s, const pending_event *e, dn_buf *buf, dn_spool_record *r)
{
    int fd = -1;
    if (s->current_fd >= 0 && e->seq == current_segment(s)->seq) {
        fd = s->current_fd;
    } else if (s->read_fd >= 0 && s->read_seq == e->seq) {
        fd = s->read_fd;
    } else {
        char name[FILE_NAME_MAX];
        forget_read_fd(s);
        if (!dn_spool_segment_name(name, s->writer, e->seq)) return false;
        fd = dn_os_open_at(s->dir_fd, name, 0);
        if (fd < 0) {
            set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
            return false;
        }
        s->read_fd = fd;
        s->read_seq = e->seq;
    }
    return dn_spool_read_event(fd, e->offset, e->size, buf, r, s->dir, s->error, sizeof s->error);
}

static bool append_adopted(void *ud, uint8_t *record, uint64_t size)
{
    dn_spool *s = ud;
    dn_spool_event_set_order(record, s->next_id);
    return add_event(s, record, size, WRITE_MOVE, NULL) == DN_SPOOL_OK;
}

static bool sync_adopted(void *ud)
{
    dn_spool *s = ud;
    if (s->current_fd < 0 || !s->dirty) return true;
    if (!dn_os_sync_data(s->current_fd)) {
        set_error(s, "cannot sync %s: %s", s->dir, strerror(errno));
        return false;
    }
    s->dirty = false;
    return true;
}

static void adopt_gone_writers(dn_spool *s)
{
    dn_spool_adopter adopter = {
        .dir_fd = s->dir_fd,
        .dir = s->dir,
        .own_writer = s->writer,
        .append = append_adopted,
        .sync = sync_adopted,
        .ud = s,
    };
    dn_spool_adopt(&adopter);
    if (adopter.error[0]) set_error(s, "%s", adopter.error);
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
        if (!dn_spool_lock_name(name, s->writer)) {
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
        dn_spool_record r;
        dn_spool_event_fields ev;
        if (!read_own_record(s, &s->pending[i], &buf, &r)) {
            /* Never replay what does not read back intact; forget it rather than
             * stumble on it again. */
            mark_gone(s, &s->pending[i]);
            ok = false;
            continue;
        }
        dn_spool_event_decode(&r, &ev);
        dn_spool_event event = {
            .id = s->pending[i].id,
            .emitted_ms = ev.emitted_ms,
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

dn_spool_status dn_spool_append(dn_spool *s, const uint8_t idempotency_key[16], int64_t emitted_ms,
                                const char *body, size_t body_len, const char *user_agent,
                                size_t user_agent_len, const char *client_ip, size_t client_ip_len,
                                uint64_t *id)
{
    uint64_t size = dn_spool_event_record_size(emitted_ms, body_len, user_agent_len, client_ip_len);
    if (size == 0) {
        set_error(s, "event too large for the spool");
        return DN_SPOOL_ERROR;
    }
    if (size > s->max_bytes || s->disk_bytes > s->max_bytes - size) return DN_SPOOL_FULL;

    dn_spool_event_fields fields = {
        .key = idempotency_key,
        .order = s->next_id, /* the id add_event hands out for it */
        .emitted_ms = emitted_ms,
        .body = body,
        .body_len = (uint32_t)body_len,
        .user_agent = user_agent,
        .user_agent_len = (uint16_t)user_agent_len,
        .client_ip = client_ip,
        .client_ip_len = (uint16_t)client_ip_len,
    };
    dn_buf *b = &s->scratch;
    if (!dn_spool_event_encode(b, &fields)) {
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
    uint8_t done[DN_SPOOL_DONE_RECORD_SIZE];
    dn_spool_done_encode(done, e->key);
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
    if (dn_spool_segment_name(name, s->writer, oldest->seq) && !dn_os_remove_at(s->dir_fd, name) &&
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
        dn_spool_record r;
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
        if (dn_spool_segment_name(name, s->writer, s->segments[i].seq))
            dn_os_remove_at(s->dir_fd, name);
    if (dn_spool_lock_name(name, s->writer)) dn_os_remove_at(s->dir_fd, name);
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
