/* Accepted events waiting for an attempt: new ones in arrival order, retries in order
 * of the time they become due. */
#ifndef DN_QUEUE_H
#define DN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One accepted event: a single allocation holding the encoded body, which every
 * attempt sends byte for byte, and the visitor's headers when a server sends on
 * someone's behalf. */
typedef struct dn_event {
    struct dn_event *next;
    int64_t due_ms;    /* monotonic time before which no further attempt starts */
    uint64_t spool_id; /* its record in the client's spool, 0 when not spooled */
    uint32_t body_len;
    uint32_t expiry_tick; /* when it is given up (max_age): see dn_event_set_deadline */
    uint16_t user_agent_len;
    uint16_t client_ip_len;
    uint16_t attempts;      /* attempts started so far, up to UINT16_MAX */
    uint8_t server_retries; /* retries after a server's answer, which max_retries bounds */
    bool has_deadline;
    uint8_t idempotency_key[16];
    char data[]; /* body, user agent, client ip, each followed by a NUL */
} dn_event;

/* A deadline is kept in 32 bits of 16 ms ticks of the monotonic clock, which keeps an
 * event at 56 bytes: compared with wrap-around, it may lie up to 397 days ahead. It
 * rounds up to its tick, so an event is never given up early. */
#define DN_EXPIRY_TICK_MS  16
#define DN_EXPIRY_AHEAD_MS ((int64_t)(INT32_MAX - 1) * DN_EXPIRY_TICK_MS)
void dn_event_set_deadline(dn_event *e, int64_t deadline_ms, int64_t now_ms);
bool dn_event_expired(const dn_event *e, int64_t now_ms);
/* The deadline in monotonic milliseconds, INT64_MAX when it has none. */
int64_t dn_event_deadline_ms(const dn_event *e, int64_t now_ms);

/* idempotency_key: the event's key when it already has one (replayed from a spool),
 * NULL to make a new one. */
dn_event *dn_event_new(const char *body, size_t body_len, const char *user_agent,
                       size_t user_agent_len, const char *client_ip, size_t client_ip_len,
                       const uint8_t *idempotency_key);
void dn_event_free(dn_event *event);

static inline const char *dn_event_body(const dn_event *e)
{
    return e->data;
}
static inline const char *dn_event_user_agent(const dn_event *e)
{
    return e->user_agent_len ? e->data + e->body_len + 1 : NULL;
}
static inline const char *dn_event_client_ip(const dn_event *e)
{
    return e->client_ip_len ? e->data + e->body_len + 1 + e->user_agent_len + 1 : NULL;
}
/* Bytes an event holds in memory, for max_queue_bytes; the second form answers it
 * before the event is made. */
size_t dn_event_size(const dn_event *e);
size_t dn_event_size_for(size_t body_len, size_t user_agent_len, size_t client_ip_len);

typedef struct dn_queue {
    dn_event *fresh_head, *fresh_tail; /* never attempted, first in first out */
    dn_event **retry_heap;             /* min-heap on due_ms */
    size_t retry_len, retry_cap;
    size_t count;
    size_t bytes;
} dn_queue;

void dn_queue_init(dn_queue *q);
void dn_queue_push_fresh(dn_queue *q, dn_event *e);
bool dn_queue_push_retry(dn_queue *q, dn_event *e);
/* The next event whose time has come, or NULL. Due retries go before fresh events, so
 * the oldest events leave first after an outage. */
dn_event *dn_queue_pop_due(dn_queue *q, int64_t now_ms);
/* The earliest due time of anything queued (INT64_MAX when empty). */
int64_t dn_queue_next_due(const dn_queue *q);
/* Removes the events whose deadline has come (at or before now_ms) and answers them
 * as a chain, oldest fresh events first; *next_expiry_ms gets the earliest deadline
 * of what stays (INT64_MAX when nothing does). One pass over the queue. */
dn_event *dn_queue_take_expired(dn_queue *q, int64_t now_ms, int64_t *next_expiry_ms);
/* Removes everything, oldest fresh events first; the caller owns the result chain. */
dn_event *dn_queue_take_all(dn_queue *q);
void dn_queue_free(dn_queue *q);

#endif
