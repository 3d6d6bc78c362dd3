#include "transport.h"
#include "ids.h"
#include "process.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t global_init_once = PTHREAD_ONCE_INIT;
static bool global_init_ok;

static void global_init(void)
{
    global_init_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

bool dn_transport_global_init(void)
{
    pthread_once(&global_init_once, global_init);
    return global_init_ok;
}

bool dn_transport_init(dn_transport *t)
{
    t->multi = curl_multi_init();
    t->fork_generation = dn_fork_generation();
    t->attached = 0;
    return t->multi != NULL;
}

void dn_transport_cleanup(dn_transport *t)
{
    if (t->multi && !dn_transport_forked(t)) curl_multi_cleanup(t->multi);
    t->multi = NULL;
}

bool dn_transport_forked(const dn_transport *t)
{
    return t->fork_generation != dn_fork_generation();
}

bool dn_transport_renew(dn_transport *t)
{
    /* The parent's multi handle is left alone on purpose: cleaning it up here would
     * close TLS sessions that the parent still uses. Its memory is the price. */
    return dn_transport_init(t);
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

bool dn_slot_open(dn_slot *slot, void *owner, const dn_transport_options *o)
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
    if (o->http_version == DN_HTTP_2_PRIOR_KNOWLEDGE)
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
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
    slot->event = NULL;
    return event;
}

void dn_slot_close(dn_transport *t, dn_slot *slot)
{
    dn_slot_cancel(t, slot);
    if (slot->easy) curl_easy_cleanup(slot->easy);
    slot->easy = NULL;
    dn_buf_free(&slot->header_text);
}

void dn_slot_abandon(dn_slot *slot)
{
    slot->easy = NULL;
    slot->event = NULL;
    dn_buf_free(&slot->header_text);
}

void dn_transport_perform(dn_transport *t, dn_attempt_done_fn on_done, void *ud)
{
    if (t->attached == 0) return;
    int running = 0;
    curl_multi_perform(t->multi, &running);
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
}

void dn_transport_wait(dn_transport *t, int timeout_ms)
{
    if (timeout_ms < 0) timeout_ms = 0;
    int ready = 0;
    curl_multi_poll(t->multi, NULL, 0, timeout_ms, &ready);
}

long dn_transport_timeout_ms(dn_transport *t)
{
    long ms = -1;
    if (t->attached > 0) curl_multi_timeout(t->multi, &ms);
    return ms;
}
