/* The durable spool: accepted events written to an append-only log in a folder, so
 * they survive a crash, a restart or a game played offline, and are marked done once
 * delivered or failed for good.
 *
 * Layout of the folder: each writer (one client of one process) owns the files
 *   <writer>.lock          flock'ed exclusively for as long as the writer lives
 *   <writer>.<seq>.log     its segments, seq counting from 1, appended to in order
 * where <writer> is "<pid>-<16 hex random>". A writer whose lock can be taken is gone:
 * the next writer to open the folder adopts its segments (their pending events are
 * appended, in order, to the adopter's log, then the files are removed).
 *
 * Each record: magic, length, CRC-32C, type, payload; a torn or corrupt tail (a crash
 * mid-write) is detected and skipped, never replayed. EVENT records carry the
 * idempotency key, the event's order (its place among the writer's appends), the body
 * and the visitor's headers; DONE records carry the key of an event that needs no more
 * sending. Space is reclaimed by removing the oldest segments once every event in them
 * is done, and by compacting an old segment whose few pending events are moved to the
 * current one: a moved record keeps its order, so its place in the file does not
 * matter.
 *
 * Order: replay gives pending events in the order they were first appended, through
 * compaction, crashes and adoption. The events of several gone writers come writer by
 * writer, in the order of the writers' names; each writer's own order is kept, also
 * for events that an adopter which died in turn had already copied. */
#ifndef DN_SPOOL_H
#define DN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dn_spool_sync {
    DN_SPOOL_SYNC_ALWAYS,   /* fsync before dn_spool_append returns */
    DN_SPOOL_SYNC_INTERVAL, /* group commit: fsync from dn_spool_tick at most every interval */
    DN_SPOOL_SYNC_NEVER,    /* leave it to the kernel */
} dn_spool_sync;

typedef struct dn_spool_options {
    const char *dir; /* created (mode 0700) when missing */
    dn_spool_sync sync;
    int64_t interval_ms;    /* for DN_SPOOL_SYNC_INTERVAL */
    uint64_t max_bytes;     /* bytes on disk (dn_spool_bytes) beyond which appends are refused */
    uint64_t segment_bytes; /* a segment is closed and a new one begun past this size */
} dn_spool_options;

/* One pending event as read back from disk. Pointers are valid during the callback. */
typedef struct dn_spool_event {
    uint64_t id; /* the record's id, for dn_spool_mark_done */
    uint8_t idempotency_key[16];
    int64_t emitted_ms; /* wall-clock milliseconds of its emit, 0 when not known */
    const char *body;
    size_t body_len;
    const char *user_agent; /* NULL when none */
    size_t user_agent_len;
    const char *client_ip; /* NULL when none */
    size_t client_ip_len;
} dn_spool_event;

typedef struct dn_spool dn_spool;

typedef enum dn_spool_status {
    DN_SPOOL_OK,
    DN_SPOOL_FULL,  /* max_bytes reached: nothing written */
    DN_SPOOL_ERROR, /* an I/O error (disk full, read-only folder, ...): see dn_spool_error */
} dn_spool_status;

/* Opens the folder as a new writer and adopts the segments of writers that are gone.
 * NULL on failure, with the reason in err. */
dn_spool *dn_spool_open(const dn_spool_options *options, char *err, size_t err_size);

/* Calls on_event for every pending event, in the order they were first appended (see
 * Order above). Runs once, right after open, before any append. */
typedef void (*dn_spool_event_fn)(void *ud, const dn_spool_event *event);
bool dn_spool_replay(dn_spool *spool, dn_spool_event_fn on_event, void *ud);

/* Appends an event; on DN_SPOOL_OK *id identifies it for dn_spool_mark_done. With
 * DN_SPOOL_SYNC_ALWAYS the record is on disk (fsync) when this returns. emitted_ms:
 * the wall-clock time of its emit, replayed with it; 0 when not known. */
dn_spool_status dn_spool_append(dn_spool *spool, const uint8_t idempotency_key[16],
                                int64_t emitted_ms, const char *body, size_t body_len,
                                const char *user_agent, size_t user_agent_len,
                                const char *client_ip, size_t client_ip_len, uint64_t *id);

/* The event needs no more sending (delivered, or failed for good). Not synced on its
 * own: a DONE lost in a crash only means the event is sent once more, with the same
 * idempotency key and body, which the service drops as a duplicate. */
dn_spool_status dn_spool_mark_done(dn_spool *spool, uint64_t id);

/* Periodic work from the host's pump: group commit (interval sync), removal of fully
 * done segments, compaction. Cheap when there is nothing to do. Answers when it wants
 * the next tick even if no event is pending (a group commit due, a compaction left),
 * or INT64_MAX when only new events make work for it. */
int64_t dn_spool_tick(dn_spool *spool, int64_t now_ms);

/* Bytes of every segment file the writer keeps, DONE records and done segments not
 * yet removed included: what max_bytes bounds, a true bound on disk use. */
uint64_t dn_spool_bytes(const dn_spool *spool);
/* Events appended or adopted and not yet marked done. */
uint64_t dn_spool_pending(const dn_spool *spool);
const char *dn_spool_error(const dn_spool *spool);

/* Syncs, releases the writer's lock, and frees. Pending events stay on disk for the
 * next writer. */
void dn_spool_close(dn_spool *spool);
/* After fork, in the child: frees the memory without touching the parent's files or
 * lock. */
void dn_spool_abandon(dn_spool *spool);

#endif
