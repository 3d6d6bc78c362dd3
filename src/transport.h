/* The wire: one libcurl multi handle per Lua state, and slots that each hold one easy
 * handle carrying one event attempt at a time. Nothing here knows about queues or
 * retries; it starts attempts and reports how they ended. */
#ifndef DN_TRANSPORT_H
#define DN_TRANSPORT_H

#include "buf.h"
#include "os.h"
#include "queue.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum dn_http_version {
    DN_HTTP_DEFAULT, /* curl's choice: HTTP/2 over TLS when the server offers it */
    DN_HTTP_1_1,
    DN_HTTP_2,                 /* HTTP/2 over TLS, HTTP/1.1 in the clear */
    DN_HTTP_2_PRIOR_KNOWLEDGE, /* HTTP/2 in the clear too (h2c), without upgrade */
} dn_http_version;

/* Connection settings of one client, applied once to each of its easy handles. */
typedef struct dn_transport_options {
    const char *endpoint;
    const char *user_agent;
    const char *ca_file;
    const char *ca_path;
    const char *proxy;
    bool insecure;
    dn_http_version http_version;
    long timeout_ms;
    long connect_timeout_ms;
    struct curl_slist *headers; /* fixed for the client: content type and the user's */
} dn_transport_options;

/* How one attempt ended. The pointers stay valid until the slot starts again. */
typedef struct dn_attempt_result {
    CURLcode curl_code;
    long status;            /* 0 when no HTTP answer arrived */
    int64_t retry_after_ms; /* from Retry-After (seconds or HTTP-date); 0 when absent */
    const char *error_text; /* curl's description of a transport failure */
    const char *answer;     /* the first bytes of the answer body */
    size_t answer_len;
} dn_attempt_result;

#define DN_ANSWER_KEEP 1024

typedef struct dn_slot {
    CURL *easy;
    dn_event *event; /* the event in flight, NULL when the slot is idle */
    void *owner;
    /* Per-attempt headers, chained in front of the client's fixed list, so an attempt
     * allocates nothing once the slot has warmed up. */
    struct curl_slist attempt_headers[4];
    struct curl_slist *fixed_headers;
    dn_buf header_text;
    char answer[DN_ANSWER_KEEP];
    size_t answer_len;
    char error_text[CURL_ERROR_SIZE];
} dn_slot;

/* curl is driven with curl_multi_socket_action: it tells us which sockets to watch
 * and when its next timeout falls, we keep the sockets in a poller's set (os.h). A
 * pump asks that set (without waiting) which sockets are ready, so its cost follows
 * the work to do, and on Linux a host with an event loop can watch the one epoll
 * descriptor instead of pumping blindly. */
typedef struct dn_transport {
    CURLM *multi;
    unsigned fork_generation; /* the process generation the multi handle belongs to */
    size_t attached;          /* easy handles currently in the multi handle */
    size_t slots_open;        /* easy handles made (dn_slot_open) and not closed */
    dn_poller *poller;
    int64_t timer_due_ms;   /* curl's next timeout, monotonic; -1 when it has none */
    curl_socket_t *sockets; /* every socket curl opened and has not closed */
    size_t socket_count, socket_cap;
    uint8_t *socket_states; /* per descriptor number: what the set holds (transport.c) */
    size_t socket_state_len;
    bool keep_inherited; /* after fork: the parent's handles cannot be freed safely */
} dn_transport;

/* curl_global_init, once per process. */
bool dn_transport_global_init(void);

bool dn_transport_init(dn_transport *t);
void dn_transport_cleanup(dn_transport *t);
/* True when this process is a fork of the one that made the multi handle: the caller
 * must then release its slots (see below) before the transport starts afresh. */
bool dn_transport_forked(const dn_transport *t);
/* After a fork, in the child, before anything else: points the copies of the parent's
 * sockets at /dev/null, so that nothing the child does reaches the parent's peers. */
void dn_transport_detach_inherited(dn_transport *t);
/* Then, once every slot is released: frees the inherited multi handle (or keeps it,
 * see dn_slot_release_inherited) and makes a new one. */
bool dn_transport_renew(dn_transport *t);

typedef void (*dn_attempt_done_fn)(void *ud, dn_slot *slot, dn_event *event,
                                   const dn_attempt_result *result);
/* Drives every transfer as far as it goes without waiting, and reports each finished
 * one with its event, the slot being idle again; on_done may start new attempts. */
void dn_transport_perform(dn_transport *t, dn_attempt_done_fn on_done, void *ud);
/* Waits until a socket is ready or timeout_ms passes (the caller caps timeout_ms with
 * dn_transport_timeout_ms). */
void dn_transport_wait(dn_transport *t, int timeout_ms);
/* Milliseconds until curl's next timeout, -1 when it has none. Without a descriptor to
 * watch (dn_transport_fd is -1), at most DN_TRANSPORT_UNWATCHED_MS while a transfer
 * runs: a host that sleeps until then looks at its sockets that often. */
#define DN_TRANSPORT_UNWATCHED_MS 10
long dn_transport_timeout_ms(const dn_transport *t, int64_t now_ms);
/* The epoll descriptor, readable whenever a transfer has something to do; -1 where
 * the poller has no descriptor (dn_poller_fd). */
int dn_transport_fd(const dn_transport *t);

bool dn_slot_open(dn_slot *slot, dn_transport *t, void *owner, const dn_transport_options *options);
bool dn_slot_start(dn_transport *t, dn_slot *slot, dn_event *event);
/* Stops the attempt in flight; the event goes back to the caller. */
dn_event *dn_slot_cancel(dn_transport *t, dn_slot *slot);
void dn_slot_close(dn_transport *t, dn_slot *slot);
/* After a fork, between detach_inherited and renew: frees the slot's inherited handle,
 * unless it is still resolving a name (then it is kept, never used again). */
void dn_slot_release_inherited(dn_transport *t, dn_slot *slot);

#endif
