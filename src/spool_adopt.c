#include "spool_adopt.h"
#include "buf.h"
#include "os.h"
#include "spool_files.h"
#include "spool_record.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN DN_SPOOL_KEY_LEN

DN_PRINTF_LIKE(2, 3) static void set_error(dn_spool_adopter *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
}

typedef struct gone_writer {
    char name[DN_SPOOL_WRITER_NAME_MAX + 1];
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

static gone_writer *gone_list_find_or_add(gone_list *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->writers[i].name, name) == 0) return &list->writers[i];
    gone_writer *grown = dn_array_reserve(list->writers, list->count, &list->cap, sizeof *grown, 8);
    if (!grown) return NULL;
    list->writers = grown;
    gone_writer *w = &list->writers[list->count++];
    memset(w, 0, sizeof *w);
    strcpy(w->name, name);
    w->lock_fd = -1;
    return w;
}

static bool gone_writer_add_seq(gone_writer *w, uint64_t seq)
{
    uint64_t *grown = dn_array_reserve(w->seqs, w->seq_count, &w->seq_cap, sizeof *grown, 8);
    if (!grown) return false;
    w->seqs = grown;
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
    dn_spool_adopter *spool;
    gone_list *list;
    bool out_of_memory;
} writer_listing;

static bool list_writer_file(void *ud, const char *file_name)
{
    writer_listing *l = ud;
    char writer[DN_SPOOL_WRITER_NAME_MAX + 1];
    uint64_t seq;
    if (!dn_spool_parse_file_name(file_name, writer, &seq) ||
        strcmp(writer, l->spool->own_writer) == 0)
        return true;
    gone_writer *w = gone_list_find_or_add(l->list, writer);
    l->out_of_memory = !w || (seq != 0 && !gone_writer_add_seq(w, seq));
    return !l->out_of_memory;
}

/* Every other writer named by a file in the folder, with the segments it left. */
static bool list_other_writers(dn_spool_adopter *s, gone_list *list)
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
static bool claim_writer(dn_spool_adopter *s, gone_writer *w)
{
    char name[DN_SPOOL_FILE_NAME_MAX];
    if (!dn_spool_lock_name(name, w->name)) return false;
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
static bool read_gone_segment(dn_spool_adopter *s, const gone_writer *w, uint64_t seq, dn_buf *buf)
{
    char name[DN_SPOOL_FILE_NAME_MAX];
    dn_buf_clear(buf);
    if (!dn_spool_segment_name(name, w->name, seq)) return false;
    int fd = dn_os_open_at(s->dir_fd, name, 0);
    if (fd < 0) {
        if (errno == ENOENT) return true;
        set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
        return false;
    }
    bool ok = dn_spool_read_whole_file(fd, buf);
    if (!ok) set_error(s, "cannot read %s/%s: %s", s->dir, name, strerror(errno));
    dn_os_close(fd);
    return ok;
}

/* First pass: what every key became, over all the adopted files. Reading a segment
 * stops at its first bad record, whether a torn tail or damage in the middle: nothing
 * after it can be trusted. */
static bool collect_keys(dn_spool_adopter *s, gone_list *list, key_map *map, dn_buf *buf)
{
    for (size_t w = 0; w < list->count; w++) {
        gone_writer *gw = &list->writers[w];
        for (size_t i = 0; i < gw->seq_count; i++) {
            if (!read_gone_segment(s, gw, gw->seqs[i], buf)) return false;
            if (buf->len == 0) continue;
            const uint8_t *data = (const uint8_t *)buf->data;
            dn_spool_record r;
            for (uint64_t at = 0; dn_spool_record_parse(data + at, buf->len - at, &r);
                 at += r.size) {
                key_slot *slot = key_map_note(map, r.payload);
                if (!slot) {
                    set_error(s, "cannot adopt in %s: out of memory", s->dir);
                    return false;
                }
                if (r.type == DN_SPOOL_RECORD_DONE) slot->done = true;
            }
        }
    }
    return true;
}

/* Second pass: every EVENT record of a key no DONE finished, in file order. */
static bool collect_pending(dn_spool_adopter *s, gone_list *list, key_map *map, dn_buf *buf,
                            adoption *a)
{
    for (size_t w = 0; w < list->count; w++) {
        gone_writer *gw = &list->writers[w];
        for (size_t i = 0; i < gw->seq_count; i++) {
            if (!read_gone_segment(s, gw, gw->seqs[i], buf)) return false;
            if (buf->len == 0) continue;
            const uint8_t *data = (const uint8_t *)buf->data;
            dn_spool_record r;
            for (uint64_t at = 0; dn_spool_record_parse(data + at, buf->len - at, &r);
                 at += r.size) {
                if (!dn_spool_record_is_event(r.type)) continue;
                key_slot *slot = key_map_slot(map, r.payload);
                if (!slot->used || slot->done) continue;
                adopted_event *grown =
                    dn_array_reserve(a->events, a->count, &a->cap, sizeof *grown, 256);
                if (!grown) {
                    set_error(s, "cannot adopt in %s: out of memory", s->dir);
                    return false;
                }
                a->events = grown;
                dn_spool_event_fields ev;
                dn_spool_event_decode(&r, &ev);
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
    return true;
}

/* Sorts the pending records by writer and order and keeps one per key and writer: a
 * key twice in one writer keeps its first place, both copies carrying the same order.
 * Counts per key the writers it is pending in. */
static void deduplicate_pending(adoption *a)
{
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
}

/* Per writer, the range of its records in the sorted list. */
static bool index_pending(dn_spool_adopter *s, const gone_list *list, adoption *a)
{
    a->next = calloc(list->count, sizeof *a->next);
    a->end = calloc(list->count, sizeof *a->end);
    if (!a->next || !a->end) {
        set_error(s, "cannot adopt in %s: out of memory", s->dir);
        return false;
    }
    for (size_t i = 0, w = 0; w < list->count; w++) {
        a->next[w] = i;
        while (i < a->count && a->events[i].writer == w) i++;
        a->end[w] = i;
    }
    return true;
}

static bool list_pending(dn_spool_adopter *s, gone_list *list, key_map *map, dn_buf *buf,
                         adoption *a)
{
    if (!collect_pending(s, list, map, buf, a)) return false;
    deduplicate_pending(a);
    return index_pending(s, list, a);
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

/* Reads an adopted record again and has the writer append it. */
static bool copy_adopted(dn_spool_adopter *s, gone_list *list, const adopted_event *e,
                         gone_reader *rd, dn_buf *buf)
{
    if (rd->fd < 0 || rd->writer != e->writer || rd->seq != e->seq) {
        char name[DN_SPOOL_FILE_NAME_MAX];
        if (rd->fd >= 0) dn_os_close(rd->fd);
        rd->fd = -1;
        if (!dn_spool_segment_name(name, list->writers[e->writer].name, e->seq)) return false;
        rd->fd = dn_os_open_at(s->dir_fd, name, 0);
        if (rd->fd < 0) {
            set_error(s, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
            return false;
        }
        rd->writer = e->writer;
        rd->seq = e->seq;
    }
    dn_spool_record r;
    if (!dn_spool_read_event(rd->fd, e->offset, e->size, buf, &r, s->dir, s->error,
                             sizeof s->error))
        return false;
    return s->append(s->ud, (uint8_t *)buf->data, e->size);
}

/* Third pass: the pending events go into our log in an order that keeps each gone
 * writer's: writers one after another by name, except that an event pending in
 * several writers (copies made by an adopter that died) waits until it is the next
 * in each of them, so that the ones before it in any writer come first. Orders that
 * contradict each other cannot come from our own writes; should intact-looking files
 * hold them, the first writer's next event goes first. A writer all of whose events
 * are in our log is adopted. */
static void copy_pending(dn_spool_adopter *s, gone_list *list, adoption *a, dn_buf *buf)
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
static void remove_gone_writer(dn_spool_adopter *s, gone_writer *w)
{
    char name[DN_SPOOL_FILE_NAME_MAX];
    for (size_t i = 0; i < w->seq_count; i++)
        if (dn_spool_segment_name(name, w->name, w->seqs[i])) dn_os_remove_at(s->dir_fd, name);
    if (dn_spool_lock_name(name, w->name)) dn_os_remove_at(s->dir_fd, name);
}

/* Copies the pending events of the claimed writers into our log, syncs it, then
 * removes their files. A writer copied in full before a failure is done with; what
 * could not be copied stays on disk for the next opener. */
static void adopt_claimed(dn_spool_adopter *s, gone_list *list, key_map *map, dn_buf *buf)
{
    adoption a = {0};
    bool listed = collect_keys(s, list, map, buf) && list_pending(s, list, map, buf, &a);
    if (listed) copy_pending(s, list, &a, buf);
    adoption_free(&a);
    if (!listed) return;
    if (!s->sync(s->ud)) return;
    bool removed = false;
    for (size_t i = 0; i < list->count; i++) {
        if (!list->writers[i].adopted) continue;
        remove_gone_writer(s, &list->writers[i]);
        removed = true;
    }
    if (removed) dn_os_sync_folder(s->dir_fd);
}

void dn_spool_adopt(dn_spool_adopter *s)
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
