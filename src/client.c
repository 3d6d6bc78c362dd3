#include "client.h"
#include "ids.h"
#include "os.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DN_VERSION_UA "dukanext-lua/" DN_VERSION

void dn_config_defaults(dn_config *c)
{
    memset(c, 0, sizeof *c);
    c->timeout_ms = 10000;
    c->connect_timeout_ms = 5000;
    c->max_queue = 10000;
    c->max_queue_bytes = 32 * 1024 * 1024;
    c->max_in_flight = 16;
    c->max_retries = 5;
    c->max_body = 65536;
    c->retry_base_ms = 500;
    c->retry_max_ms = 60000;
    c->session_timeout_ms = 1800 * 1000;
    c->spool_sync = DN_SPOOL_SYNC_INTERVAL;
    c->spool_interval_ms = 1000;
    c->spool_max_bytes = (size_t)64 << 20;
}

void dn_config_free(dn_config *c)
{
    free(c->endpoint);
    free(c->user_agent);
    free(c->ca_file);
    free(c->ca_path);
    free(c->proxy);
    free(c->spool_dir);
    curl_slist_free_all(c->headers);
    memset(c, 0, sizeof *c);
}

bool dn_config_set_string(char **field, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value))) return false;
    free(*field);
    *field = copy;
    return true;
}

bool dn_config_add_header(dn_config *c, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line) return false;
    /* "Name:" with an empty value would tell curl to remove the header: send it empty. */
    if (*value)
        snprintf(line, n, "%s: %s", name, value);
    else
        snprintf(line, n, "%s;", name);
    struct curl_slist *grown = curl_slist_append(c->headers, line);
    free(line);
    if (!grown) return false;
    c->headers = grown;
    return true;
}

void dn_report_free(dn_report *report)
{
    if (!report) return;
    free(report->message);
    dn_event_free(report->event);
    free(report);
}

static void queue_report(dn_client *c, const char *code, long status, const char *message,
                         dn_event *event)
{
    dn_report *r = c->wants_reports ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        dn_event_free(event);
        return;
    }
    r->client = c;
    snprintf(r->code, sizeof r->code, "%s", code);
    r->status = status;
    r->message = message ? strdup(message) : NULL;
    r->event = event;
    r->attempts = event ? event->attempts : 0;
    dn_hub *hub = c->hub;
    if (hub->reports_tail)
        hub->reports_tail->next = r;
    else
        hub->reports_head = r;
    hub->reports_tail = r;
    c->reports_pending++;
}

void dn_client_report(dn_client *c, const char *code, const char *message)
{
    queue_report(c, code, 0, message, NULL);
}

static void replay_spooled(void *ud, const dn_spool_event *spooled)
{
    dn_client *c = ud;
    dn_event *e =
        dn_event_new(spooled->body, spooled->body_len, spooled->user_agent, spooled->user_agent_len,
                     spooled->client_ip, spooled->client_ip_len, spooled->idempotency_key);
    /* Without memory it stays on disk for the next start. */
    if (!e) return;
    e->spool_id = spooled->id;
    dn_queue_push_fresh(&c->queue, e);
    c->hub->pending++;
    c->stats.replayed++;
}

/* Opens the client's spool folder and queues what earlier writers left pending. On
 * failure the client works in memory and tries again a few seconds later. */
static void spool_open(dn_client *c, int64_t now_ms)
{
    dn_spool_options options = {
        .dir = c->config.spool_dir,
        .sync = c->config.spool_sync,
        .interval_ms = c->config.spool_interval_ms,
        .max_bytes = c->config.spool_max_bytes,
    };
    c->spool = dn_spool_open(&options, c->spool_error, sizeof c->spool_error);
    if (!c->spool) {
        c->spool_retry_ms = now_ms + 5000;
        return;
    }
    dn_spool_replay(c->spool, replay_spooled, c);
}

dn_client *dn_client_new(dn_hub *hub, dn_config *config)
{
    /* In a child whose first call is new: settle the fork now, or the next call would
     * take the new client for the parent's and drop the spool it just opened. */
    dn_hub_check_fork(hub);
    dn_client *c = calloc(1, sizeof *c);
    dn_slot *slots = config->max_in_flight ? calloc(config->max_in_flight, sizeof *slots) : NULL;
    if (!c || !slots ||
        (!config->user_agent && !dn_config_set_string(&config->user_agent, DN_VERSION_UA))) {
        free(c);
        free(slots);
        dn_config_free(config);
        return NULL;
    }
    /* Every event is JSON; an empty Expect spares the 100-continue round trip curl
     * would otherwise add to large bodies. */
    struct curl_slist *fixed = curl_slist_append(NULL, "Content-Type: application/json");
    if (fixed) fixed = curl_slist_append(fixed, "Expect:");
    for (struct curl_slist *h = config->headers; fixed && h; h = h->next) {
        struct curl_slist *grown = curl_slist_append(fixed, h->data);
        if (!grown) curl_slist_free_all(fixed);
        fixed = grown;
    }
    if (!fixed) {
        free(c);
        free(slots);
        dn_config_free(config);
        return NULL;
    }
    curl_slist_free_all(config->headers);
    config->headers = fixed;

    c->config = *config;
    memset(config, 0, sizeof *config);
    c->slots = slots;
    dn_queue_init(&c->queue);
    c->transport_options = (dn_transport_options){
        .endpoint = c->config.endpoint,
        .user_agent = c->config.user_agent,
        .ca_file = c->config.ca_file,
        .ca_path = c->config.ca_path,
        .proxy = c->config.proxy,
        .insecure = c->config.insecure,
        .http_version = c->config.http_version,
        .timeout_ms = (long)c->config.timeout_ms,
        .connect_timeout_ms = (long)c->config.connect_timeout_ms,
        .headers = c->config.headers,
    };

    c->hub = hub;
    hub->refs++;
    c->next = hub->clients;
    if (hub->clients) hub->clients->prev = c;
    hub->clients = c;
    if (c->config.spool_dir) spool_open(c, dn_mono_ms());
    return c;
}

size_t dn_client_pending(const dn_client *c)
{
    return c->queue.count + c->in_flight;
}

size_t dn_client_pending_bytes(const dn_client *c)
{
    return c->queue.bytes + c->in_flight_bytes;
}

bool dn_client_busy(const dn_client *c)
{
    return dn_client_pending(c) > 0 || c->reports_pending > 0;
}

dn_accept dn_client_can_accept(dn_client *c)
{
    dn_hub_check_fork(c->hub);
    if (c->closed) return DN_REFUSED_CLOSED;
    if (!c->config.endpoint) return DN_REFUSED_NO_ENDPOINT;
    if (dn_client_pending(c) >= c->config.max_queue) {
        c->stats.dropped++;
        c->stats.dropped_max_queue++;
        return DN_REFUSED_QUEUE_FULL;
    }
    return DN_ACCEPTED;
}

/* Reports a spool failure to on_error, at most every ten seconds: a full disk would
 * otherwise produce one report per event. */
static void report_spool_failure(dn_client *c, int64_t now_ms)
{
    if (c->spool_reported_ms && now_ms - c->spool_reported_ms < 10000) return;
    c->spool_reported_ms = now_ms;
    queue_report(c, "SPOOL_ERROR", 0, c->spool_error, NULL);
}

static dn_accept spool_event(dn_client *c, dn_event *e)
{
    int64_t now = dn_mono_ms();
    if (!c->spool && now >= c->spool_retry_ms) spool_open(c, now);
    dn_spool_status status = DN_SPOOL_ERROR;
    if (c->spool) {
        const char *ua = dn_event_user_agent(e);
        const char *ip = dn_event_client_ip(e);
        status = dn_spool_append(c->spool, e->idempotency_key, dn_event_body(e), e->body_len, ua,
                                 e->user_agent_len, ip, e->client_ip_len, &e->spool_id);
        if (status == DN_SPOOL_ERROR)
            snprintf(c->spool_error, sizeof c->spool_error, "%s", dn_spool_error(c->spool));
    }
    if (status == DN_SPOOL_OK) return DN_ACCEPTED;
    if (status == DN_SPOOL_FULL) {
        c->stats.dropped++;
        c->stats.dropped_spool_max_bytes++;
        return DN_REFUSED_SPOOL_FULL;
    }
    c->stats.unspooled++;
    report_spool_failure(c, now);
    return DN_ACCEPTED_IN_MEMORY;
}

dn_accept dn_client_accept(dn_client *c, const char *body, size_t body_len, const char *user_agent,
                           size_t user_agent_len, const char *client_ip, size_t client_ip_len)
{
    dn_accept verdict = dn_client_can_accept(c);
    if (verdict != DN_ACCEPTED) return verdict;
    if (body_len > c->config.max_body) return DN_REFUSED_TOO_LARGE;
    size_t size = dn_event_size_for(body_len, user_agent_len, client_ip_len);
    if (dn_client_pending_bytes(c) + size > c->config.max_queue_bytes) {
        c->stats.dropped++;
        c->stats.dropped_max_queue_bytes++;
        return DN_REFUSED_QUEUE_BYTES;
    }
    dn_event *e =
        dn_event_new(body, body_len, user_agent, user_agent_len, client_ip, client_ip_len, NULL);
    if (!e) return DN_REFUSED_NO_MEMORY;
    if (c->config.spool_dir) {
        verdict = spool_event(c, e);
        if (verdict == DN_REFUSED_SPOOL_FULL) {
            dn_event_free(e);
            return verdict;
        }
    }
    dn_queue_push_fresh(&c->queue, e);
    c->hub->pending++;
    return verdict;
}

static void purge_reports(dn_client *c)
{
    dn_hub *hub = c->hub;
    dn_report **link = &hub->reports_head;
    hub->reports_tail = NULL;
    while (*link) {
        dn_report *r = *link;
        if (r->client == c) {
            *link = r->next;
            dn_report_free(r);
        } else {
            hub->reports_tail = r;
            link = &r->next;
        }
    }
    c->reports_pending = 0;
}

size_t dn_client_close(dn_client *c)
{
    /* A child's first call may be close: the parent's transfers are not its own. */
    dn_hub_check_fork(c->hub);
    if (c->closed) return 0;
    c->closed = true;
    size_t undelivered = 0;
    for (size_t i = 0; i < c->config.max_in_flight; i++) {
        dn_slot *slot = &c->slots[i];
        dn_event *e = dn_slot_cancel(&c->hub->transport, slot);
        if (e) {
            dn_event_free(e);
            undelivered++;
        }
        dn_slot_close(&c->hub->transport, slot);
    }
    c->in_flight = 0;
    c->in_flight_bytes = 0;
    for (dn_event *e = dn_queue_take_all(&c->queue); e;) {
        dn_event *next = e->next;
        dn_event_free(e);
        undelivered++;
        e = next;
    }
    c->hub->pending -= undelivered;
    c->stats.cancelled += undelivered;
    /* Spooled events are not done: the next writer of the folder sends them. */
    dn_spool_close(c->spool);
    c->spool = NULL;
    purge_reports(c);
    c->hub->idle_clients = true;
    return undelivered;
}

void dn_client_free(dn_client *c)
{
    if (!c) return;
    dn_hub *hub = c->hub;
    dn_hub_check_fork(hub);
    dn_client_close(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        hub->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    dn_config_free(&c->config);
    free(c->slots);
    free(c);
    dn_hub_release(hub);
}

/* ---- the hub: every client of one Lua state ---- */

dn_hub *dn_hub_new(void)
{
    if (!dn_transport_global_init()) return NULL;
    dn_hub *hub = calloc(1, sizeof *hub);
    if (!hub) return NULL;
    if (!dn_transport_init(&hub->transport)) {
        free(hub);
        return NULL;
    }
    hub->refs = 1;
    hub->spool_due_ms = INT64_MAX;
    return hub;
}

void dn_hub_release(dn_hub *hub)
{
    if (--hub->refs > 0) return;
    while (hub->reports_head) {
        dn_report *r = hub->reports_head;
        hub->reports_head = r->next;
        dn_report_free(r);
    }
    dn_hub_check_fork(hub); /* frees what a parent left in a child */
    dn_transport_cleanup(&hub->transport);
    free(hub);
}

void dn_hub_check_fork(dn_hub *hub)
{
    if (!dn_transport_forked(&hub->transport)) return;
    dn_transport_detach_inherited(&hub->transport);
    /* What was queued or in flight belongs to the parent, which goes on delivering it;
     * the child starts empty so that nothing is sent twice. */
    for (dn_client *c = hub->clients; c; c = c->next) {
        for (size_t i = 0; i < c->config.max_in_flight; i++) {
            dn_event *e = c->slots[i].event;
            dn_slot_release_inherited(&hub->transport, &c->slots[i]);
            dn_event_free(e);
        }
        c->in_flight = 0;
        c->in_flight_bytes = 0;
        dn_queue_free(&c->queue);
        c->reports_pending = 0;
        c->paused_until_ms = 0;
        memset(&c->stats, 0, sizeof c->stats);
        /* The parent keeps its spool writer; the child becomes a writer of its own on
         * its first event. */
        if (c->spool) dn_spool_abandon(c->spool);
        c->spool = NULL;
        c->spool_retry_ms = 0;
    }
    while (hub->reports_head) {
        dn_report *r = hub->reports_head;
        hub->reports_head = r->next;
        dn_report_free(r);
    }
    hub->reports_tail = NULL;
    hub->pending = 0;
    hub->spool_due_ms = INT64_MAX;
    hub->idle_clients = true;
    dn_transport_renew(&hub->transport);
}

static dn_slot *idle_slot(dn_client *c)
{
    for (size_t i = 0; i < c->config.max_in_flight; i++) {
        dn_slot *slot = &c->slots[i];
        if (slot->event) continue;
        if (slot->easy || dn_slot_open(slot, &c->hub->transport, c, &c->transport_options))
            return slot;
        return NULL;
    }
    return NULL;
}

/* Starts as many due events as the client's limits allow. */
static void start_due(dn_client *c, int64_t now_ms)
{
    if (c->closed || c->paused_until_ms > now_ms) return;
    while (c->in_flight < c->config.max_in_flight && dn_queue_next_due(&c->queue) <= now_ms) {
        dn_slot *slot = idle_slot(c);
        if (!slot) return;
        dn_event *e = dn_queue_pop_due(&c->queue, now_ms);
        if (!dn_slot_start(&c->hub->transport, slot, e)) {
            /* Out of memory in curl: try again a second later rather than lose it. */
            e->due_ms = now_ms + 1000;
            if (!dn_queue_push_retry(&c->queue, e)) {
                dn_event_free(e);
                c->stats.failed++;
                c->hub->pending--;
            }
            return;
        }
        c->in_flight++;
        c->in_flight_bytes += dn_event_size(e);
    }
}

static void settle(dn_client *c)
{
    if (!dn_client_busy(c)) c->hub->idle_clients = true;
}

/* The code and message on_error gets for an attempt that failed for good; made only
 * then, since nothing reads them for a delivered event or a retry. */
static void describe_failure(const dn_attempt_result *r, char *code, size_t code_size,
                             char *message, size_t message_size)
{
    if (r->curl_code != CURLE_OK) {
        snprintf(code, code_size, "%s", dn_curl_error_code(r->curl_code));
        snprintf(message, message_size, "%s", r->error_text);
        return;
    }
    /* dn_answer_code writes at most DN_CODE_MAX bytes and a NUL. */
    if (code_size < DN_CODE_MAX + 1 || !dn_answer_code(r->answer, r->answer_len, code))
        snprintf(code, code_size, "HTTP_%ld", r->status);
    snprintf(message, message_size, "the server answered HTTP %ld", r->status);
}

static void attempt_done(void *ud, dn_slot *slot, dn_event *e, const dn_attempt_result *r)
{
    dn_hub *hub = ud;
    dn_client *c = slot->owner;
    int64_t now = dn_mono_ms();
    c->in_flight--;
    c->in_flight_bytes -= dn_event_size(e);

    dn_verdict verdict = r->curl_code != CURLE_OK ? dn_verdict_for_curl(r->curl_code)
                                                  : dn_verdict_for_status(r->status);

    /* The server asked the whole client to hold off, not just this event: the pause
     * holds even when this event has no attempt left. */
    int64_t pause = 0;
    if (verdict == DN_VERDICT_RETRY && r->retry_after_ms > 0) {
        pause =
            r->retry_after_ms < c->config.retry_max_ms ? r->retry_after_ms : c->config.retry_max_ms;
        if (now + pause > c->paused_until_ms) c->paused_until_ms = now + pause;
    }

    bool finished = verdict != DN_VERDICT_RETRY || e->attempts > c->config.max_retries;
    if (finished && e->spool_id && c->spool) dn_spool_mark_done(c->spool, e->spool_id);

    if (verdict == DN_VERDICT_DELIVERED) {
        c->stats.sent++;
        hub->pending--;
        dn_event_free(e);
    } else if (verdict == DN_VERDICT_RETRY && e->attempts <= c->config.max_retries) {
        int64_t delay;
        if (pause > 0) {
            delay = pause;
        } else {
            delay = dn_backoff_ms(e->attempts, c->config.retry_base_ms, c->config.retry_max_ms,
                                  dn_random_u64());
        }
        e->due_ms = now + delay;
        if (dn_queue_push_retry(&c->queue, e)) {
            c->stats.retries++;
        } else {
            c->stats.failed++;
            hub->pending--;
            queue_report(c, "OUT_OF_MEMORY", 0, "no memory to schedule a retry", e);
        }
    } else {
        c->stats.failed++;
        hub->pending--;
        char code[DN_CODE_MAX + 1];
        char message[CURL_ERROR_SIZE + 64];
        describe_failure(r, code, sizeof code, message, sizeof message);
        queue_report(c, code, r->curl_code == CURLE_OK ? r->status : 0, message, e);
    }
    start_due(c, now);
    settle(c);
}

/* Spools tick after the pump's last transfer finished, so that the space of every
 * event delivered in this pump is reclaimed before the host hears pending is 0. */
static void tick_spools(dn_hub *hub, int64_t now)
{
    hub->spool_due_ms = INT64_MAX;
    for (dn_client *c = hub->clients; c; c = c->next) {
        if (!c->spool) continue;
        int64_t due = dn_spool_tick(c->spool, now);
        if (due < hub->spool_due_ms) hub->spool_due_ms = due;
    }
}

size_t dn_hub_pump(dn_hub *hub)
{
    if (hub->pending == 0) {
        if (hub->spool_due_ms == INT64_MAX) return 0;
        dn_hub_check_fork(hub); /* a child leaves its parent's spool files alone */
        int64_t now = dn_mono_ms();
        if (now >= hub->spool_due_ms) tick_spools(hub, now);
        return hub->pending;
    }
    dn_hub_check_fork(hub);
    dn_transport_perform(&hub->transport, attempt_done, hub);
    int64_t now = dn_mono_ms();
    for (dn_client *c = hub->clients; c; c = c->next) start_due(c, now);
    /* New attempts get their connect going now rather than at the next pump. */
    if (dn_transport_timeout_ms(&hub->transport, now) == 0)
        dn_transport_perform(&hub->transport, attempt_done, hub);
    tick_spools(hub, now);
    return hub->pending;
}

int dn_hub_idle_ms(dn_hub *hub, int64_t now_ms, int limit_ms)
{
    int64_t wait = limit_ms;
    long curl_ms = dn_transport_timeout_ms(&hub->transport, now_ms);
    if (curl_ms >= 0 && curl_ms < wait) wait = curl_ms;
    if (hub->spool_due_ms - now_ms < wait) wait = hub->spool_due_ms - now_ms;
    for (dn_client *c = hub->clients; c; c = c->next) {
        if (c->closed || c->queue.count == 0 || c->in_flight >= c->config.max_in_flight) continue;
        int64_t due = dn_queue_next_due(&c->queue);
        if (due < c->paused_until_ms) due = c->paused_until_ms;
        if (due - now_ms < wait) wait = due - now_ms;
    }
    return wait < 0 ? 0 : (int)wait;
}

void dn_hub_wait(dn_hub *hub, int timeout_ms)
{
    dn_transport_wait(&hub->transport, timeout_ms);
}

dn_report *dn_hub_take_report(dn_hub *hub)
{
    dn_report *r = hub->reports_head;
    if (!r) return NULL;
    hub->reports_head = r->next;
    if (!hub->reports_head) hub->reports_tail = NULL;
    r->next = NULL;
    r->client->reports_pending--;
    settle(r->client);
    return r;
}
