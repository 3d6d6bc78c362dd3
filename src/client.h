/* A client: its settings, the events it accepted, the attempts it has in flight and
 * what it counted. Clients of one Lua state share a hub: one transport, pumped
 * together, and one list of failure reports waiting for on_error. */
#ifndef DN_CLIENT_H
#define DN_CLIENT_H

#include "concurrency.h"
#include "config.h"
#include "policy.h"
#include "queue.h"
#include "spool.h"
#include "transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dn_stats {
    uint64_t sent;              /* delivered: a 2xx answer */
    uint64_t failed;            /* failed for good, reported to on_error */
    uint64_t dropped;           /* refused by emit for want of room (QUEUE_FULL), for any reason */
    uint64_t dropped_max_queue; /* ... because max_queue events were waiting */
    uint64_t dropped_max_queue_bytes; /* ... because they held max_queue_bytes */
    uint64_t dropped_spool_max_bytes; /* ... because the spool held spool_max_bytes */
    uint64_t replayed;                /* events read back from the spool at start */
    uint64_t unspooled;               /* accepted in memory only: the spool failed */
    uint64_t retries;                 /* further attempts scheduled after a retryable failure */
    uint64_t cancelled;               /* undelivered when the client was closed */
    uint64_t connects;                /* connections its attempts opened */
    uint64_t tls_resumed;             /* ... of which resumed a TLS session */
} dn_stats;

/* A failure waiting to be passed to on_error from the next pump, flush or close. */
typedef struct dn_report {
    struct dn_report *next;
    struct dn_client *client;
    char code[DN_CODE_MAX + 1];
    long status;     /* HTTP status, 0 when none */
    char *message;   /* malloc'd, may be NULL */
    dn_event *event; /* the failed event (owned), NULL for storage errors */
    unsigned attempts;
} dn_report;

void dn_report_free(dn_report *report);

typedef struct dn_hub dn_hub;

/* Room for "CODE: message" of a failed attempt. */
#define DN_FAILURE_TEXT_MAX (DN_CODE_MAX + CURL_ERROR_SIZE + 80)

typedef struct dn_client {
    dn_hub *hub;
    struct dn_client *prev, *next; /* in hub->clients */
    dn_config config;
    dn_transport_options transport_options;
    dn_queue queue;
    dn_slot *slots;    /* slot_count of them, opened on first use */
    size_t slot_count; /* a fixed max_in_flight, or auto's cap */
    dn_concurrency concurrency;
    /* Connections it needs to its endpoint: max_connections until an answer says the
     * endpoint multiplexes (HTTP/2), then enough for its limit's streams; counted in
     * the transport's bound while it has attempts in flight (holds_connections). */
    size_t host_connections;
    bool holds_connections;
    size_t in_flight;
    size_t in_flight_bytes;
    int64_t paused_until_ms; /* Retry-After or offline: no attempt starts before */
    /* No network: one attempt at a time (the probe) tells when it is back. */
    bool offline;
    unsigned offline_probes;                  /* no-network failures in a row, for the backoff */
    const dn_event *probe;                    /* the attempt started while offline, if in flight */
    char offline_reason[DN_FAILURE_TEXT_MAX]; /* "CODE: text" of the last one */
    size_t ramp_in_flight; /* back online: the in-flight bound grows by one per answer (SIZE_MAX: none) */
    int64_t expiry_check_ms;                  /* no queued event expires before this */
    dn_stats stats;
    size_t reports_pending;
    bool wants_reports; /* false: failures are counted, not reported */
    bool closed;
    dn_spool *spool;           /* NULL without a spool, or while it cannot be opened */
    char spool_error[256];     /* why the spool last failed */
    int64_t spool_retry_ms;    /* when to try opening a failed spool again */
    int64_t spool_reported_ms; /* when on_error last heard of a spool failure */
    void *host;                /* the binding's per-client data */
} dn_client;

struct dn_hub {
    dn_transport transport;
    dn_client *clients;
    unsigned refs;  /* the Lua-side hub object and each client */
    size_t pending; /* queued and in flight, over all clients */
    /* When a spool wants a tick though nothing is pending; INT64_MAX for never. */
    int64_t spool_due_ms;
    dn_report *reports_head, *reports_tail;
    /* Set when some client stopped being busy: the binding may release its anchor. */
    bool idle_clients;
    /* 1 + the fork generation of a process that forks before it ever pumps (nginx's
     * master); 0 when unmarked. Its children are not marked. */
    unsigned forks_before_pumping;
};

dn_hub *dn_hub_new(void);
void dn_hub_release(dn_hub *hub);
/* Never waits: finishes completed attempts, starts due ones. Answers the number of
 * events queued or in flight over all clients. */
size_t dn_hub_pump(dn_hub *hub);
/* How long a flush may sleep before something is due, capped at limit_ms. */
int dn_hub_idle_ms(dn_hub *hub, int64_t now_ms, int limit_ms);
/* When the host should pump next, in milliseconds from now_ms, at most limit_ms: 0
 * while a report waits for on_error, -1 when nothing is pending nor due (no pump is
 * needed before the next emit). */
int dn_hub_next_pump_ms(dn_hub *hub, int64_t now_ms, int limit_ms);
void dn_hub_wait(dn_hub *hub, int timeout_ms);
dn_report *dn_hub_take_report(dn_hub *hub);
/* Whether a client may have become idle since the last call: answers true once per
 * such change, for the host to release what it holds for idle clients. */
bool dn_hub_take_idle_change(dn_hub *hub);
/* Makes sure the hub does not carry a parent process's transfers. */
void dn_hub_check_fork(dn_hub *hub);
/* Marks this process as one that forks before it pumps: nothing it accepted would
 * be delivered or reported, so its clients refuse events (DN_REFUSED_BEFORE_FORK)
 * while the processes it forks accept them. */
void dn_hub_mark_forks_before_pumping(dn_hub *hub);

/* Takes ownership of config (also on failure). */
dn_client *dn_client_new(dn_hub *hub, dn_config *config);
/* The host's data for this client (handed back in reports and the hub's client list). */
void dn_client_set_host(dn_client *client, void *host);
/* Whether failures become reports for on_error (else they are only counted). */
void dn_client_want_reports(dn_client *client, bool wanted);
void dn_client_free(dn_client *client);

typedef enum dn_accept {
    DN_ACCEPTED,
    DN_REFUSED_NO_ENDPOINT,
    DN_REFUSED_CLOSED,
    DN_REFUSED_TOO_LARGE,
    DN_REFUSED_QUEUE_FULL,
    DN_REFUSED_QUEUE_BYTES,
    DN_REFUSED_SPOOL_FULL,
    DN_REFUSED_NO_MEMORY,
    DN_REFUSED_BEFORE_FORK, /* see dn_hub_mark_forks_before_pumping */
    /* Queued, but the spool could not keep it (client->spool_error says why): it is
     * delivered if the process lives, and lost if it does not. */
    DN_ACCEPTED_IN_MEMORY,
} dn_accept;

/* Checks what can be checked before the body is built, so a refused event costs
 * nothing; counts QUEUE_FULL refusals in stats.dropped. */
dn_accept dn_client_can_accept(dn_client *client);
dn_accept dn_client_accept(dn_client *client, const char *body, size_t body_len,
                           const char *user_agent, size_t user_agent_len, const char *client_ip,
                           size_t client_ip_len);
size_t dn_client_pending(const dn_client *client);
/* Memory held by the events queued or in flight. */
size_t dn_client_pending_bytes(const dn_client *client);
bool dn_client_busy(const dn_client *client);
/* Queues a report not tied to an event (a storage that failed). */
void dn_client_report(dn_client *client, const char *code, const char *message);
/* Cancels what is in flight and drops what is queued; answers how many events were
 * undelivered. Idempotent. */
size_t dn_client_close(dn_client *client);

#endif
