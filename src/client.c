#include "client.h"
#include "ids.h"
#include "os.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DN_VERSION_UA "dukanext-lua/" DN_VERSION

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
    /* max_age counts from the emit, in whichever run it happened; the monotonic clock
     * does not span runs, the wall clock does. */
    int64_t age = spooled->emitted_ms > 0 ? dn_wall_ms() - spooled->emitted_ms : 0;
    if (age < 0) age = 0;
    int64_t now = dn_mono_ms();
    dn_event_set_deadline(e, now + c->config.max_age_ms - age, now);
    int64_t deadline = dn_event_deadline_ms(e, now);
    if (deadline < c->expiry_check_ms) c->expiry_check_ms = deadline;
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

static void limit_host_connections(dn_hub *hub);
static void update_connection_holders(dn_client *c);

dn_client *dn_client_new(dn_hub *hub, dn_config *config)
{
    /* In a child whose first call is new: settle the fork now, or the next call would
     * take the new client for the parent's and drop the spool it just opened. */
    dn_hub_check_fork(hub);
    dn_client *c = calloc(1, sizeof *c);
    size_t slot_count = config->max_in_flight ? config->max_in_flight : config->max_in_flight_cap;
    dn_slot *slots = slot_count ? calloc(slot_count, sizeof *slots) : NULL;
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
    c->slot_count = slot_count;
    dn_concurrency_init(&c->concurrency, (unsigned)c->config.max_in_flight, (unsigned)slot_count,
                        dn_mono_us());
    dn_queue_init(&c->queue);
    c->ramp_in_flight = SIZE_MAX;
    c->expiry_check_ms = INT64_MAX;
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
    if (c->hub->forks_before_pumping == dn_fork_generation() + 1) return DN_REFUSED_BEFORE_FORK;
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
        status =
            dn_spool_append(c->spool, e->idempotency_key, dn_wall_ms(), dn_event_body(e),
                            e->body_len, ua, e->user_agent_len, ip, e->client_ip_len, &e->spool_id);
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
    int64_t now = dn_mono_ms();
    dn_event_set_deadline(e, now + c->config.max_age_ms, now);
    int64_t deadline = dn_event_deadline_ms(e, now);
    if (deadline < c->expiry_check_ms) c->expiry_check_ms = deadline;
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
    for (size_t i = 0; i < c->slot_count; i++) {
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
    update_connection_holders(c);
    c->probe = NULL;
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

static void free_reports(dn_hub *hub)
{
    while (hub->reports_head) {
        dn_report *r = hub->reports_head;
        hub->reports_head = r->next;
        dn_report_free(r);
    }
    hub->reports_tail = NULL;
}

void dn_hub_release(dn_hub *hub)
{
    if (--hub->refs > 0) return;
    free_reports(hub);
    dn_hub_check_fork(hub); /* frees what a parent left in a child */
    dn_transport_cleanup(&hub->transport);
    free(hub);
}

bool dn_hub_take_idle_change(dn_hub *hub)
{
    bool changed = hub->idle_clients;
    hub->idle_clients = false;
    return changed;
}

void dn_client_set_host(dn_client *c, void *host)
{
    c->host = host;
}

void dn_client_want_reports(dn_client *c, bool wanted)
{
    c->wants_reports = wanted;
}

void dn_hub_mark_forks_before_pumping(dn_hub *hub)
{
    hub->forks_before_pumping = dn_fork_generation() + 1;
}

void dn_hub_check_fork(dn_hub *hub)
{
    if (!dn_transport_forked(&hub->transport)) return;
    dn_transport_detach_inherited(&hub->transport);
    /* What was queued or in flight belongs to the parent, which goes on delivering it;
     * the child starts empty so that nothing is sent twice. */
    for (dn_client *c = hub->clients; c; c = c->next) {
        for (size_t i = 0; i < c->slot_count; i++) {
            dn_event *e = c->slots[i].event;
            dn_slot_release_inherited(&hub->transport, &c->slots[i]);
            dn_event_free(e);
        }
        c->in_flight = 0;
        c->in_flight_bytes = 0;
        dn_queue_free(&c->queue);
        c->reports_pending = 0;
        c->paused_until_ms = 0;
        c->holds_connections = false;
        c->offline = false;
        c->probe = NULL;
        c->ramp_in_flight = SIZE_MAX;
        c->expiry_check_ms = INT64_MAX;
        memset(&c->stats, 0, sizeof c->stats);
        /* The parent keeps its spool writer; the child becomes a writer of its own on
         * its first event. */
        if (c->spool) dn_spool_abandon(c->spool);
        c->spool = NULL;
        c->spool_retry_ms = 0;
    }
    free_reports(hub);
    hub->pending = 0;
    hub->spool_due_ms = INT64_MAX;
    hub->idle_clients = true;
    dn_transport_renew(&hub->transport);
    limit_host_connections(hub);
}

/* curl has one bound of connections per host for the whole multi handle: the largest
 * any client with attempts in flight needs. An idle client's HTTP/1.1 bound must not
 * let a busy HTTP/2 client's burst open a connection per attempt (see
 * follow_protocol); when no client is busy the bound stays as it was. */
static void limit_host_connections(dn_hub *hub)
{
    size_t most = 0;
    for (dn_client *c = hub->clients; c; c = c->next)
        if (c->holds_connections && c->host_connections > most) most = c->host_connections;
    if (most > 0) dn_transport_limit_host_connections(&hub->transport, (long)most);
}

/* Called whenever in_flight may have left or reached 0. */
static void update_connection_holders(dn_client *c)
{
    bool holds = !c->closed && c->in_flight > 0;
    if (holds == c->holds_connections) return;
    c->holds_connections = holds;
    limit_host_connections(c->hub);
}

static dn_slot *idle_slot(dn_client *c)
{
    for (size_t i = 0; i < c->slot_count; i++) {
        dn_slot *slot = &c->slots[i];
        if (slot->event) continue;
        if (slot->easy || dn_slot_open(slot, &c->hub->transport, c, &c->transport_options))
            return slot;
        return NULL;
    }
    return NULL;
}

/* Offline, a single attempt at a time finds out whether the network is back; coming
 * back, the limit grows from one as answers arrive. */
/* Attempts allowed in flight now: the one probe while offline; coming back, a ramp
 * that grows by one per answer; otherwise what the concurrency rule allows. */
static size_t in_flight_limit(const dn_client *c)
{
    if (c->offline) return 1;
    size_t limit = dn_concurrency_limit(&c->concurrency);
    return c->ramp_in_flight < limit ? c->ramp_in_flight : limit;
}

/* Puts an event back in the queue, to be attempted again from due_ms on. */
static bool requeue(dn_client *c, dn_event *e, int64_t due_ms)
{
    e->due_ms = due_ms;
    if (!dn_queue_push_retry(&c->queue, e)) return false;
    int64_t deadline = dn_event_deadline_ms(e, due_ms);
    if (deadline < c->expiry_check_ms) c->expiry_check_ms = deadline;
    c->stats.retries++;
    return true;
}

/* An event that needs no more sending: its spool record is done, it leaves pending. */
static void finish(dn_client *c, dn_event *e)
{
    if (e->spool_id && c->spool) dn_spool_mark_done(c->spool, e->spool_id);
    c->hub->pending--;
}

static void fail(dn_client *c, dn_event *e, const char *code, long status, const char *message)
{
    finish(c, e);
    c->stats.failed++;
    queue_report(c, code, status, message, e);
}

/* Gives up an event max_age after its emit; why it was not delivered is the last
 * failure when there was one. */
static void expire(dn_client *c, dn_event *e, const char *last_failure)
{
    char message[DN_FAILURE_TEXT_MAX + 128];
    int n = snprintf(message, sizeof message, "not delivered within max_age (%g s) of its emit",
                     (double)c->config.max_age_ms / 1000.0);
    if (last_failure && *last_failure && n > 0 && (size_t)n < sizeof message)
        snprintf(message + n, sizeof message - (size_t)n, "; last failure: %s", last_failure);
    fail(c, e, "EXPIRED", 0, message);
}

/* Expires every queued event whose max_age has passed. One pass over the queue, so
 * it runs no more than once a second, and only when something is due to expire. */
static void expire_queued(dn_client *c, int64_t now_ms)
{
    int64_t next = INT64_MAX;
    dn_event *e = dn_queue_take_expired(&c->queue, now_ms, &next);
    c->expiry_check_ms = next < now_ms + 1000 ? now_ms + 1000 : next;
    while (e) {
        dn_event *following = e->next;
        e->next = NULL;
        expire(c, e, c->offline ? c->offline_reason : NULL);
        e = following;
    }
}

/* Starts as many due events as the client's limits allow. */
static void start_due(dn_client *c, int64_t now_ms)
{
    if (c->closed) return;
    if (now_ms >= c->expiry_check_ms) expire_queued(c, now_ms);
    if (c->paused_until_ms > now_ms) return;
    /* Until an answer tells the protocol, the bound of HTTP/1.1. */
    if (c->host_connections == 0) c->host_connections = c->config.max_connections;
    /* Counted before the first attempt starts, so that its bound is in force. */
    if (!c->holds_connections && dn_queue_next_due(&c->queue) <= now_ms) {
        c->holds_connections = true;
        limit_host_connections(c->hub);
    }
    size_t limit = in_flight_limit(c);
    while (dn_queue_next_due(&c->queue) <= now_ms) {
        if (c->in_flight >= limit) {
            /* A backlog at the rule's own limit is what lets it grow. */
            if (limit == dn_concurrency_limit(&c->concurrency))
                dn_concurrency_saturated(&c->concurrency);
            return;
        }
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
        slot->started_us = dn_mono_us();
        if (c->offline) c->probe = e;
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

/* Once curl has learnt that a server multiplexes, it opens a new connection for every
 * attempt that finds the existing ones full, until that connection has said it
 * multiplexes too (libcurl 7.88): a burst beyond the streams of one connection would
 * open as many connections as attempts. Bounding the connections per host makes
 * those attempts wait in curl for a stream instead. */
static void follow_protocol(dn_client *c, long http_version)
{
    bool one_per_connection =
        http_version == CURL_HTTP_VERSION_1_0 || http_version == CURL_HTTP_VERSION_1_1;
    size_t wanted = c->config.max_connections;
    if (http_version != 0 && !one_per_connection)
        wanted = (c->slot_count + DN_STREAMS_PER_CONNECTION - 1) / DN_STREAMS_PER_CONNECTION;
    if (http_version != 0)
        dn_concurrency_set_ceiling(&c->concurrency,
                                   one_per_connection ? (unsigned)c->config.max_connections : 0);
    if (wanted != c->host_connections) {
        c->host_connections = wanted;
        limit_host_connections(c->hub);
    }
}

/* Feeds the concurrency rule and the connection counters with one attempt's end. */
static void observe_attempt(dn_client *c, const dn_slot *slot, const dn_attempt_result *r)
{
    if (r->new_connection) c->stats.connects++;
    if (r->tls_resumed) c->stats.tls_resumed++;
    follow_protocol(c, r->http_version);
    bool overload =
        r->curl_code != CURLE_OK || r->status == 429 || r->status == 503 || r->status == 504;
    dn_concurrency_attempt_done(&c->concurrency, slot->started_us, dn_mono_us(), r->latency_us,
                                overload ? DN_SIGNAL_OVERLOAD : DN_SIGNAL_ANSWERED);
}

/* A no-network failure. The first one takes the client offline; from then on only the
 * probe's failures move the next probe further out (full jitter capped at
 * retry_max), so attempts that were already in flight do not count twice. */
static void note_offline(dn_client *c, bool was_probe, const dn_attempt_result *r, int64_t now)
{
    if (c->offline && !was_probe) return;
    if (!c->offline) {
        c->offline = true;
        c->offline_probes = 0;
    }
    if (c->offline_probes < 64) c->offline_probes++;
    int64_t delay = dn_backoff_ms(c->offline_probes, c->config.retry_base_ms,
                                  c->config.retry_max_ms, dn_random_u64());
    if (now + delay > c->paused_until_ms) c->paused_until_ms = now + delay;
    snprintf(c->offline_reason, sizeof c->offline_reason, "%s: %s",
             dn_curl_error_code(r->curl_code), r->error_text);
}

/* Something answered: back online, the backlog going out a few at a time at first. */
static void note_reached(dn_client *c)
{
    if (c->offline) {
        c->offline = false;
        c->ramp_in_flight = 1;
    } else if (c->ramp_in_flight < dn_concurrency_limit(&c->concurrency)) {
        c->ramp_in_flight++;
    } else {
        c->ramp_in_flight = SIZE_MAX; /* back to the concurrency rule alone */
    }
}

static void attempt_done(void *ud, dn_slot *slot, dn_event *e, const dn_attempt_result *r)
{
    (void)ud;
    dn_client *c = slot->owner;
    int64_t now = dn_mono_ms();
    c->in_flight--;
    c->in_flight_bytes -= dn_event_size(e);
    observe_attempt(c, slot, r);
    bool was_probe = c->probe == e;
    if (was_probe) c->probe = NULL;

    dn_verdict verdict = r->curl_code != CURLE_OK ? dn_verdict_for_curl(r->curl_code)
                                                  : dn_verdict_for_status(r->status);
    if (verdict == DN_VERDICT_OFFLINE)
        note_offline(c, was_probe, r, now);
    else
        note_reached(c);

    /* The server asked the whole client to hold off, not just this event: the pause
     * holds even when this event has no attempt left. */
    int64_t pause = 0;
    if (verdict == DN_VERDICT_RETRY && r->retry_after_ms > 0) {
        pause =
            r->retry_after_ms < c->config.retry_max_ms ? r->retry_after_ms : c->config.retry_max_ms;
        if (now + pause > c->paused_until_ms) c->paused_until_ms = now + pause;
    }

    bool retry = false;
    if (verdict == DN_VERDICT_RETRY) {
        if (e->server_retries < UINT8_MAX) e->server_retries++;
        retry = e->server_retries <= c->config.max_retries;
    }
    if (verdict == DN_VERDICT_DELIVERED) {
        finish(c, e);
        c->stats.sent++;
        dn_event_free(e);
    } else if ((retry || verdict == DN_VERDICT_OFFLINE) && dn_event_expired(e, now)) {
        char code[DN_CODE_MAX + 1];
        char message[CURL_ERROR_SIZE + 64];
        char last[DN_FAILURE_TEXT_MAX];
        describe_failure(r, code, sizeof code, message, sizeof message);
        snprintf(last, sizeof last, "%s: %s", code, message);
        expire(c, e, last);
    } else if (retry || verdict == DN_VERDICT_OFFLINE) {
        /* Offline, the event waits for the probe's pause like every other one. */
        int64_t delay = 0;
        if (pause > 0)
            delay = pause;
        else if (retry)
            delay = dn_backoff_ms(e->server_retries, c->config.retry_base_ms,
                                  c->config.retry_max_ms, dn_random_u64());
        if (!requeue(c, e, now + delay)) {
            finish(c, e);
            c->stats.failed++;
            queue_report(c, "OUT_OF_MEMORY", 0, "no memory to schedule a retry", e);
        }
    } else {
        char code[DN_CODE_MAX + 1];
        char message[CURL_ERROR_SIZE + 64];
        describe_failure(r, code, sizeof code, message, sizeof message);
        fail(c, e, code, r->curl_code == CURLE_OK ? r->status : 0, message);
    }
    start_due(c, now);
    update_connection_holders(c);
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
        if (c->closed || c->queue.count == 0) continue;
        if (c->expiry_check_ms - now_ms < wait) wait = c->expiry_check_ms - now_ms;
        if (c->in_flight >= in_flight_limit(c)) continue;
        int64_t due = dn_queue_next_due(&c->queue);
        if (due < c->paused_until_ms) due = c->paused_until_ms;
        if (due - now_ms < wait) wait = due - now_ms;
    }
    return wait < 0 ? 0 : (int)wait;
}

int dn_hub_next_pump_ms(dn_hub *hub, int64_t now_ms, int limit_ms)
{
    if (hub->reports_head) return 0;
    if (hub->pending == 0 && hub->spool_due_ms == INT64_MAX) return -1;
    return dn_hub_idle_ms(hub, now_ms, limit_ms);
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
