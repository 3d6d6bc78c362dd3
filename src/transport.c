#include "transport.h"
#include "ids.h"
#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dn_once global_init_once = DN_ONCE_INIT;
static bool global_init_ok;

static void global_init(void)
{
    global_init_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

bool dn_transport_global_init(void)
{
    dn_once_run(&global_init_once, global_init);
    return global_init_ok;
}

/* Handles a forked child inherited from its parent's transfers and could not free
 * safely (see dn_slot_release_inherited): kept reachable here, on purpose, for the
 * life of the process. */
static dn_mutex inherited_lock = DN_MUTEX_INIT;
static void **inherited_handles;
static size_t inherited_count;

static void keep_inherited(void *handle)
{
    dn_mutex_lock(&inherited_lock);
    void **grown = realloc(inherited_handles, (inherited_count + 1) * sizeof *grown);
    if (grown) {
        inherited_handles = grown;
        inherited_handles[inherited_count++] = handle;
    }
    dn_mutex_unlock(&inherited_lock);
}

/* What the poller's set holds for each descriptor, indexed by its number. A finished
 * transfer's connection goes back to curl's pool, and curl stops watching it (REMOVE)
 * only to watch it again (IN) for the next event moments later: taking it out of the
 * set and putting it back cost two epoll_ctl calls per event, the largest piece of
 * the pump's kernel time. So a socket of ours stays in the set for reading while it
 * idles in the pool, marked unwanted: readiness it reports is dropped, and whatever
 * is unwanted leaves the set when no transfer is running, so an idle host is never
 * woken for it. */
enum {
    SOCKET_IN = DN_POLL_IN,   /* in the set for reading */
    SOCKET_OUT = DN_POLL_OUT, /* in the set for writing */
    SOCKET_WANTED = 4,        /* curl watches it now */
    SOCKET_OURS = 8,          /* opened by open_socket: its close comes through close_socket */
};
#define SOCKET_IN_SET (SOCKET_IN | SOCKET_OUT)

/* The state of fd, growing the table when asked; NULL when fd is out of reach. A
 * Windows SOCKET is a handle, a small multiple of 4: its table is only sparser. */
static uint8_t *socket_state(dn_transport *t, curl_socket_t fd, bool grow)
{
    if (fd == CURL_SOCKET_BAD) return NULL;
    size_t index = (size_t)fd;
    if (index >= t->socket_state_len) {
        if (!grow) return NULL;
        size_t len = t->socket_state_len ? t->socket_state_len : 64;
        while (len <= index) len *= 2;
        uint8_t *grown = realloc(t->socket_states, len);
        if (!grown) return NULL;
        memset(grown + t->socket_state_len, 0, len - t->socket_state_len);
        t->socket_states = grown;
        t->socket_state_len = len;
    }
    return &t->socket_states[index];
}

static void leave_set(dn_transport *t, curl_socket_t fd, uint8_t *state)
{
    if (!state || (*state & SOCKET_IN_SET))
        dn_poller_watch(t->poller, fd, state ? *state & SOCKET_IN_SET : SOCKET_IN_SET, 0);
    if (state) *state &= SOCKET_OURS;
}

static bool watch_socket(dn_transport *t, curl_socket_t fd, int what)
{
    uint8_t *state = socket_state(t, fd, true);
    if (!state) return false;
    uint8_t want = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) want |= SOCKET_IN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) want |= SOCKET_OUT;
    uint8_t in_set = *state & SOCKET_IN_SET;
    if (in_set != want && !dn_poller_watch(t->poller, fd, in_set, want)) return false;
    *state = (uint8_t)((*state & SOCKET_OURS) | want | SOCKET_WANTED);
    return true;
}

static void unwatch_socket(dn_transport *t, curl_socket_t fd)
{
    uint8_t *state = socket_state(t, fd, false);
    /* Only our own sockets may stay: close_socket takes them out before their number
     * can be reused. Others (a resolver's) are closed behind our back. */
    if (state && (*state & SOCKET_OURS) && (*state & SOCKET_IN_SET) == SOCKET_IN)
        *state &= (uint8_t)~SOCKET_WANTED;
    else
        leave_set(t, fd, state);
}

/* With no transfer running, nothing unwanted may stay in the set: an idle pooled
 * connection that the server closes would keep the descriptor readable. */
static void drop_unwanted(dn_transport *t)
{
    for (size_t i = 0; i < t->socket_count; i++) {
        uint8_t *state = socket_state(t, t->sockets[i], false);
        if (state && !(*state & SOCKET_WANTED)) leave_set(t, t->sockets[i], state);
    }
}

/* curl opens and closes every socket through these, so that a forked child knows
 * which of its descriptors are copies of its parent's connections. */
static curl_socket_t open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *address)
{
    (void)purpose;
    dn_transport *t = userp;
    if (t->socket_count == t->socket_cap) {
        size_t cap = t->socket_cap ? t->socket_cap * 2 : 16;
        curl_socket_t *grown = realloc(t->sockets, cap * sizeof *grown);
        if (!grown) return CURL_SOCKET_BAD;
        t->sockets = grown;
        t->socket_cap = cap;
    }
    /* Close-on-exec: a host that execs (nginx's binary upgrade) must not carry them. */
    curl_socket_t fd = dn_os_socket_open(address->family, address->socktype, address->protocol);
    if (fd == CURL_SOCKET_BAD) return CURL_SOCKET_BAD;
    uint8_t *state = socket_state(t, fd, true);
    if (!state) {
        dn_os_socket_close(fd);
        return CURL_SOCKET_BAD;
    }
    *state = SOCKET_OURS;
    t->sockets[t->socket_count++] = fd;
    return fd;
}

static int close_socket(void *userp, curl_socket_t fd)
{
    dn_transport *t = userp;
    for (size_t i = 0; i < t->socket_count; i++) {
        if (t->sockets[i] == fd) {
            t->sockets[i] = t->sockets[--t->socket_count];
            break;
        }
    }
    /* Out of the set before the close: a forked child may still hold a copy of the
     * socket, and the set would go on reporting it under a number reused by then. */
    uint8_t *state = socket_state(t, fd, false);
    if (state) {
        leave_set(t, fd, state);
        *state = 0;
    }
    return dn_os_socket_close(fd);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    dn_transport *t = userp;
    if (what == CURL_POLL_REMOVE)
        unwatch_socket(t, fd);
    else if (!watch_socket(t, fd, what))
        return -1;
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    dn_transport *t = userp;
    t->timer_due_ms = timeout_ms < 0 ? -1 : dn_mono_ms() + timeout_ms;
    return 0;
}

bool dn_transport_init(dn_transport *t)
{
    memset(t, 0, sizeof *t);
    t->fork_generation = dn_fork_generation();
    t->timer_due_ms = -1;
    t->poller = dn_poller_new();
    t->multi = t->poller ? curl_multi_init() : NULL;
    if (!t->multi) {
        dn_poller_free(t->poller);
        t->poller = NULL;
        return false;
    }
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
    return true;
}

void dn_transport_cleanup(dn_transport *t)
{
    if (t->multi) curl_multi_cleanup(t->multi);
    dn_poller_free(t->poller);
    free(t->sockets);
    free(t->socket_states);
    t->multi = NULL;
    t->poller = NULL;
    t->sockets = NULL;
    t->socket_states = NULL;
    t->socket_state_len = 0;
}

bool dn_transport_forked(const dn_transport *t)
{
    return t->fork_generation != dn_fork_generation();
}

void dn_transport_detach_inherited(dn_transport *t)
{
    /* Every copy of a parent's socket now writes to /dev/null: freeing the inherited
     * handles below may say goodbye on a connection (a TLS close_notify, an HTTP/2
     * GOAWAY), which must not reach the parent's peer. */
    for (size_t i = 0; i < t->socket_count; i++) {
        if (!dn_os_socket_silence(t->sockets[i])) {
            /* Cannot be made harmless: keep the handles and their descriptors. */
            t->keep_inherited = true;
        }
    }
    /* An epoll set is shared with the parent across fork: we only drop our reference
     * to it, and curl must not tell it anything more. */
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, NULL);
    dn_poller_free(t->poller);
    t->poller = NULL;
}

bool dn_transport_renew(dn_transport *t)
{
    if (t->keep_inherited) {
        keep_inherited(t->multi);
    } else {
        curl_multi_cleanup(t->multi);
    }
    /* What is left are copies curl did not close: ours to close, the parent's
     * connections are unaffected. */
    for (size_t i = 0; i < t->socket_count && !t->keep_inherited; i++)
        dn_os_socket_close(t->sockets[i]);
    free(t->sockets);
    free(t->socket_states);
    return dn_transport_init(t);
}

/* The libcurl loaded at run time, not the one compiled against: a distribution can
 * update it underneath. */
static bool h2c_reuse_broken(void)
{
    unsigned int version = curl_version_info(CURLVERSION_NOW)->version_num;
    return version >= 0x075800 && version < 0x075900;
}

/* One kept connection per slot. Left to itself, curl sizes its pool at four per
 * transfer running at the moment: when a burst ends and few transfers run, it closes
 * the connections the next burst would reuse, and each of those events pays for a new
 * connection (one in about 120 at 16 in flight in bench/throughput.lua). */
static void keep_connections(dn_transport *t, size_t slots)
{
    t->slots_open = slots;
    curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, (long)(slots > 0 ? slots : 1));
}

static size_t keep_answer(char *data, size_t size, size_t nmemb, void *userdata)
{
    dn_slot *slot = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof slot->answer - 1 - slot->answer_len;
    size_t keep = n < room ? n : room;
    memcpy(slot->answer + slot->answer_len, data, keep);
    slot->answer_len += keep;
    slot->answer[slot->answer_len] = '\0';
    return n; /* the rest is read and dropped, never an error */
}

bool dn_slot_open(dn_slot *slot, dn_transport *t, void *owner, const dn_transport_options *o)
{
    memset(slot, 0, sizeof *slot);
    dn_buf_init(&slot->header_text);
    slot->owner = owner;
    CURL *e = curl_easy_init();
    if (!e) return false;
    slot->easy = e;

    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_URL, o->endpoint);
    SET(CURLOPT_CUSTOMREQUEST, "PUT");
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SET(CURLOPT_USERAGENT, o->user_agent);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, 3L);
    /* A redirected event keeps its method and body whatever the status says. */
    SET(CURLOPT_POSTREDIR, (long)CURL_REDIR_POST_ALL);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_WRITEFUNCTION, keep_answer);
    SET(CURLOPT_WRITEDATA, slot);
    SET(CURLOPT_ERRORBUFFER, slot->error_text);
    SET(CURLOPT_PRIVATE, slot);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, t);
    SET(CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, t);
#if LIBCURL_VERSION_NUM >= 0x075700
    /* Lets close() leave a name lookup that hangs instead of joining its thread: the
     * flush and close deadlines would otherwise depend on the resolver. */
    SET(CURLOPT_QUICK_EXIT, 1L);
#endif
    if (o->ca_file) SET(CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path) SET(CURLOPT_CAPATH, o->ca_path);
    if (o->proxy) SET(CURLOPT_PROXY, o->proxy);
    if (o->http_version == DN_HTTP_1_1) SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (o->http_version == DN_HTTP_2) SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (o->http_version == DN_HTTP_2_PRIOR_KNOWLEDGE) {
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        /* libcurl 7.88.0 and 7.88.1 (Debian 12's) fail every transfer that reuses an
         * h2c connection with "Error in the HTTP2 framing layer" (curl issue 10634,
         * fixed in 7.89.0). There, each attempt gets a connection of its own: slower,
         * but every event arrives. */
        if (h2c_reuse_broken()) {
            SET(CURLOPT_FRESH_CONNECT, 1L);
            SET(CURLOPT_FORBID_REUSE, 1L);
        }
    }
    /* With HTTP/2 a new attempt waits for the connection being set up and multiplexes
     * over it, instead of opening one connection per attempt. */
    if (o->http_version == DN_HTTP_2) SET(CURLOPT_PIPEWAIT, 1L);
    if (o->insecure) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    }
#undef SET
    /* The fixed headers are chained after the per-attempt ones when an attempt starts. */
    slot->fixed_headers = o->headers;
    if (rc != CURLE_OK) {
        curl_easy_cleanup(e);
        slot->easy = NULL;
        return false;
    }
    keep_connections(t, t->slots_open + 1);
    return true;
}

/* Builds "Idempotency-Key", "X-Dukanext-Attempt" and, when the event carries them, the
 * visitor's "User-Agent" and "X-Forwarded-For" into slot->attempt_headers. */
static struct curl_slist *attempt_headers(dn_slot *slot, const dn_event *event)
{
    char key[DN_UUID_LEN + 1];
    dn_uuid_format(event->idempotency_key, key);
    const char *ua = dn_event_user_agent(event);
    const char *ip = dn_event_client_ip(event);

    dn_buf *t = &slot->header_text;
    dn_buf_clear(t);
    size_t offsets[4];
    size_t count = 0;
    offsets[count++] = t->len;
    dn_buf_append_str(t, "Idempotency-Key: ");
    dn_buf_append(t, key, DN_UUID_LEN);
    dn_buf_append_char(t, '\0');
    offsets[count++] = t->len;
    dn_buf_append_str(t, "X-Dukanext-Attempt: ");
    dn_buf_append_int(t, event->attempts);
    dn_buf_append_char(t, '\0');
    if (ua) {
        offsets[count++] = t->len;
        dn_buf_append_str(t, "User-Agent: ");
        dn_buf_append(t, ua, event->user_agent_len);
        dn_buf_append_char(t, '\0');
    }
    if (ip) {
        offsets[count++] = t->len;
        dn_buf_append_str(t, "X-Forwarded-For: ");
        dn_buf_append(t, ip, event->client_ip_len);
        dn_buf_append_char(t, '\0');
    }
    if (t->failed) return NULL;
    for (size_t i = 0; i < count; i++) {
        slot->attempt_headers[i].data = t->data + offsets[i];
        slot->attempt_headers[i].next =
            i + 1 < count ? &slot->attempt_headers[i + 1] : slot->fixed_headers;
    }
    return &slot->attempt_headers[0];
}

bool dn_slot_start(dn_transport *t, dn_slot *slot, dn_event *event)
{
    event->attempts++;
    struct curl_slist *headers = attempt_headers(slot, event);
    if (!headers) {
        event->attempts--;
        return false;
    }
    slot->answer_len = 0;
    slot->answer[0] = '\0';
    slot->error_text[0] = '\0';
    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)event->body_len);
    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDS, dn_event_body(event));
    curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, headers);
    if (curl_multi_add_handle(t->multi, slot->easy) != CURLM_OK) {
        event->attempts--;
        return false;
    }
    t->attached++;
    slot->event = event;
    return true;
}

static void detach(dn_transport *t, dn_slot *slot)
{
    curl_multi_remove_handle(t->multi, slot->easy);
    t->attached--;
}

dn_event *dn_slot_cancel(dn_transport *t, dn_slot *slot)
{
    dn_event *event = slot->event;
    if (event) detach(t, slot);
    if (event && t->attached == 0) drop_unwanted(t);
    slot->event = NULL;
    return event;
}

void dn_slot_close(dn_transport *t, dn_slot *slot)
{
    dn_slot_cancel(t, slot);
    if (slot->easy) {
        curl_easy_cleanup(slot->easy);
        keep_connections(t, t->slots_open - 1);
    }
    slot->easy = NULL;
    dn_buf_free(&slot->header_text);
}

void dn_slot_release_inherited(dn_transport *t, dn_slot *slot)
{
    CURL *easy = slot->easy;
    if (easy && slot->event) {
        /* A transfer still looking up its name has a resolver thread in the parent
         * only: curl would wait for it, or for a lock it held, forever. Such handles
         * are kept, and the multi handle with them. */
        curl_socket_t active = CURL_SOCKET_BAD;
        if (t->keep_inherited ||
            curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &active) != CURLE_OK ||
            active == CURL_SOCKET_BAD) {
            t->keep_inherited = true;
            keep_inherited(easy);
            easy = NULL;
        } else {
            curl_multi_remove_handle(t->multi, easy);
        }
    }
    if (easy) {
        if (t->keep_inherited) {
            keep_inherited(easy);
        } else {
            curl_easy_cleanup(easy);
        }
    }
    slot->easy = NULL;
    slot->event = NULL;
    dn_buf_free(&slot->header_text);
}

/* Lets curl act on every ready socket and on its timeout, without waiting. */
static void drive(dn_transport *t)
{
    dn_poll_event ready[64];
    int running = 0;
    int n = dn_poller_ready(t->poller, ready, (int)(sizeof ready / sizeof ready[0]), 0);
    for (int i = 0; i < n; i++) {
        curl_socket_t fd = ready[i].fd;
        uint8_t *state = socket_state(t, fd, false);
        if (state && !(*state & SOCKET_WANTED)) {
            /* A pooled connection curl is not watching: it checks the connection
             * itself before reusing it. */
            leave_set(t, fd, state);
            continue;
        }
        int mask = 0;
        if (ready[i].events & DN_POLL_IN) mask |= CURL_CSELECT_IN;
        if (ready[i].events & DN_POLL_OUT) mask |= CURL_CSELECT_OUT;
        if (ready[i].events & DN_POLL_ERR) mask |= CURL_CSELECT_ERR;
        curl_multi_socket_action(t->multi, fd, mask, &running);
    }
    if (t->timer_due_ms >= 0 && t->timer_due_ms <= dn_mono_ms()) {
        t->timer_due_ms = -1;
        curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
}

void dn_transport_perform(dn_transport *t, dn_attempt_done_fn on_done, void *ud)
{
    if (t->attached == 0) return;
    drive(t);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(t->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        dn_slot *slot = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&slot);

        dn_attempt_result result = {.curl_code = msg->data.result};
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result.status);
        curl_off_t retry_after = 0;
        if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
            retry_after > 0)
            result.retry_after_ms = (int64_t)retry_after * 1000;
        if (result.curl_code != CURLE_OK && slot->error_text[0] == '\0')
            snprintf(slot->error_text, sizeof slot->error_text, "%s",
                     curl_easy_strerror(result.curl_code));
        result.error_text = slot->error_text;
        result.answer = slot->answer;
        result.answer_len = slot->answer_len;

        /* msg points into curl's memory: read everything before removing the handle. */
        detach(t, slot);
        dn_event *event = slot->event;
        slot->event = NULL;
        on_done(ud, slot, event, &result);
    }
    if (t->attached == 0) drop_unwanted(t);
}

void dn_transport_wait(dn_transport *t, int timeout_ms)
{
    if (timeout_ms < 0) timeout_ms = 0;
    /* Level-triggered: what this reports is reported again to the next drive(). */
    dn_poll_event ready;
    dn_poller_ready(t->poller, &ready, 1, timeout_ms);
}

long dn_transport_timeout_ms(const dn_transport *t, int64_t now_ms)
{
    if (t->attached == 0) return -1;
    /* Where no descriptor can wake the host, this timeout is its only wake-up while
     * transfers wait on the network. */
    long unwatched = dn_poller_fd(t->poller) < 0 ? DN_TRANSPORT_UNWATCHED_MS : -1;
    if (t->timer_due_ms < 0) return unwatched;
    long due = t->timer_due_ms > now_ms ? (long)(t->timer_due_ms - now_ms) : 0;
    return unwatched >= 0 && unwatched < due ? unwatched : due;
}

int dn_transport_fd(const dn_transport *t)
{
    return dn_poller_fd(t->poller);
}
