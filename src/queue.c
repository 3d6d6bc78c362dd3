#include "queue.h"
#include "buf.h"
#include "ids.h"

#include <stdlib.h>
#include <string.h>

dn_event *dn_event_new(const char *body, size_t body_len, const char *user_agent,
                       size_t user_agent_len, const char *client_ip, size_t client_ip_len,
                       const uint8_t *idempotency_key)
{
    if (body_len > UINT32_MAX - 3 || user_agent_len > UINT16_MAX || client_ip_len > UINT16_MAX)
        return NULL;
    dn_event *e = malloc(sizeof *e + body_len + 1 + user_agent_len + 1 + client_ip_len + 1);
    if (!e) return NULL;
    e->next = NULL;
    e->due_ms = 0;
    e->expiry_tick = 0;
    e->has_deadline = false;
    e->server_retries = 0;
    e->body_len = (uint32_t)body_len;
    e->user_agent_len = (uint16_t)user_agent_len;
    e->client_ip_len = (uint16_t)client_ip_len;
    e->spool_id = 0;
    e->attempts = 0;
    if (idempotency_key) {
        memcpy(e->idempotency_key, idempotency_key, sizeof e->idempotency_key);
    } else {
        if (!dn_random_fill(e->idempotency_key, sizeof e->idempotency_key)) {
            free(e);
            return NULL;
        }
        dn_uuid_mark_v4(e->idempotency_key);
    }
    char *p = e->data;
    memcpy(p, body, body_len);
    p[body_len] = '\0';
    p += body_len + 1;
    if (user_agent_len) memcpy(p, user_agent, user_agent_len);
    p[user_agent_len] = '\0';
    p += user_agent_len + 1;
    if (client_ip_len) memcpy(p, client_ip, client_ip_len);
    p[client_ip_len] = '\0';
    return e;
}

void dn_event_free(dn_event *event)
{
    free(event);
}

void dn_event_set_deadline(dn_event *e, int64_t deadline_ms, int64_t now_ms)
{
    e->has_deadline = true;
    if (deadline_ms <= now_ms) {
        e->expiry_tick = (uint32_t)(now_ms / DN_EXPIRY_TICK_MS); /* due now */
        return;
    }
    if (deadline_ms - now_ms > DN_EXPIRY_AHEAD_MS) deadline_ms = now_ms + DN_EXPIRY_AHEAD_MS;
    e->expiry_tick = (uint32_t)((deadline_ms + DN_EXPIRY_TICK_MS - 1) / DN_EXPIRY_TICK_MS);
}

/* Ticks from now to the deadline, negative once it has passed. */
static int32_t ticks_left(const dn_event *e, int64_t now_ms)
{
    return (int32_t)(e->expiry_tick - (uint32_t)(now_ms / DN_EXPIRY_TICK_MS));
}

bool dn_event_expired(const dn_event *e, int64_t now_ms)
{
    return e->has_deadline && ticks_left(e, now_ms) <= 0;
}

int64_t dn_event_deadline_ms(const dn_event *e, int64_t now_ms)
{
    if (!e->has_deadline) return INT64_MAX;
    return (now_ms / DN_EXPIRY_TICK_MS + ticks_left(e, now_ms)) * DN_EXPIRY_TICK_MS;
}

size_t dn_event_size_for(size_t body_len, size_t user_agent_len, size_t client_ip_len)
{
    return sizeof(dn_event) + body_len + user_agent_len + client_ip_len + 3;
}

size_t dn_event_size(const dn_event *e)
{
    return dn_event_size_for(e->body_len, e->user_agent_len, e->client_ip_len);
}

void dn_queue_init(dn_queue *q)
{
    memset(q, 0, sizeof *q);
}

void dn_queue_push_fresh(dn_queue *q, dn_event *e)
{
    e->next = NULL;
    if (q->fresh_tail)
        q->fresh_tail->next = e;
    else
        q->fresh_head = e;
    q->fresh_tail = e;
    q->count++;
    q->bytes += dn_event_size(e);
}

bool dn_queue_push_retry(dn_queue *q, dn_event *e)
{
    dn_event **grown =
        dn_array_reserve(q->retry_heap, q->retry_len, &q->retry_cap, sizeof *grown, 16);
    if (!grown) return false;
    q->retry_heap = grown;
    size_t i = q->retry_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (q->retry_heap[parent]->due_ms <= e->due_ms) break;
        q->retry_heap[i] = q->retry_heap[parent];
        i = parent;
    }
    q->retry_heap[i] = e;
    q->count++;
    q->bytes += dn_event_size(e);
    return true;
}

/* Puts e at place i of the retry heap, moving it down past every earlier-due child. */
static void retry_heap_sift_down(dn_queue *q, size_t i, dn_event *e)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= q->retry_len) break;
        if (child + 1 < q->retry_len &&
            q->retry_heap[child + 1]->due_ms < q->retry_heap[child]->due_ms)
            child++;
        if (e->due_ms <= q->retry_heap[child]->due_ms) break;
        q->retry_heap[i] = q->retry_heap[child];
        i = child;
    }
    q->retry_heap[i] = e;
}

static dn_event *retry_heap_pop(dn_queue *q)
{
    dn_event *top = q->retry_heap[0];
    dn_event *last = q->retry_heap[--q->retry_len];
    if (q->retry_len > 0) retry_heap_sift_down(q, 0, last);
    return top;
}

dn_event *dn_queue_pop_due(dn_queue *q, int64_t now_ms)
{
    dn_event *e = NULL;
    if (q->retry_len > 0 && q->retry_heap[0]->due_ms <= now_ms) {
        e = retry_heap_pop(q);
    } else if (q->fresh_head) {
        e = q->fresh_head;
        q->fresh_head = e->next;
        if (!q->fresh_head) q->fresh_tail = NULL;
    }
    if (e) {
        e->next = NULL;
        q->count--;
        q->bytes -= dn_event_size(e);
    }
    return e;
}

int64_t dn_queue_next_due(const dn_queue *q)
{
    if (q->fresh_head) return 0;
    if (q->retry_len > 0) return q->retry_heap[0]->due_ms;
    return INT64_MAX;
}

/* Restores the heap order of the whole retry heap, bottom up. */
static void retry_heap_build(dn_queue *q)
{
    for (size_t top = q->retry_len / 2; top-- > 0;)
        retry_heap_sift_down(q, top, q->retry_heap[top]);
}

static void take_out(dn_queue *q, dn_event *e, dn_event ***tail)
{
    q->count--;
    q->bytes -= dn_event_size(e);
    e->next = NULL;
    **tail = e;
    *tail = &e->next;
}

dn_event *dn_queue_take_expired(dn_queue *q, int64_t now_ms, int64_t *next_expiry_ms)
{
    dn_event *chain = NULL;
    dn_event **tail = &chain;
    int64_t next = INT64_MAX;
    dn_event **link = &q->fresh_head;
    q->fresh_tail = NULL;
    while (*link) {
        dn_event *e = *link;
        if (dn_event_expired(e, now_ms)) {
            *link = e->next;
            take_out(q, e, &tail);
            continue;
        }
        int64_t deadline = dn_event_deadline_ms(e, now_ms);
        if (deadline < next) next = deadline;
        q->fresh_tail = e;
        link = &e->next;
    }
    size_t kept = 0;
    for (size_t i = 0; i < q->retry_len; i++) {
        dn_event *e = q->retry_heap[i];
        if (dn_event_expired(e, now_ms)) {
            take_out(q, e, &tail);
            continue;
        }
        int64_t deadline = dn_event_deadline_ms(e, now_ms);
        if (deadline < next) next = deadline;
        q->retry_heap[kept++] = e;
    }
    if (kept != q->retry_len) {
        q->retry_len = kept;
        retry_heap_build(q);
    }
    *next_expiry_ms = next;
    return chain;
}

dn_event *dn_queue_take_all(dn_queue *q)
{
    dn_event *chain = q->fresh_head;
    dn_event **tail = q->fresh_tail ? &q->fresh_tail->next : &chain;
    for (size_t i = 0; i < q->retry_len; i++) {
        *tail = q->retry_heap[i];
        tail = &q->retry_heap[i]->next;
    }
    *tail = NULL;
    free(q->retry_heap);
    dn_queue_init(q);
    return chain;
}

void dn_queue_free(dn_queue *q)
{
    dn_event *e = dn_queue_take_all(q);
    while (e) {
        dn_event *next = e->next;
        dn_event_free(e);
        e = next;
    }
}
