#include "session.h"
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dn_id_outcome dn_user_id_resolve(const char *stored, size_t len, int64_t now_ms,
                                 char out[DN_ID_MAX + 1], size_t *out_len)
{
    if (stored && dn_user_id_valid(stored, len)) {
        memcpy(out, stored, len);
        out[len] = '\0';
        *out_len = len;
        return DN_ID_KEPT;
    }
    *out_len = dn_user_id_make(out, now_ms);
    return *out_len ? DN_ID_CREATED : DN_ID_FAILED;
}

typedef struct record_fields {
    dn_json_value id, expires, start_page;
    bool has_id, has_expires, has_start_page;
} record_fields;

/* Later duplicates win, as with JSON.parse. */
static void collect_record_field(void *ud, const char *key, size_t key_len,
                                 const dn_json_value *value)
{
    record_fields *f = ud;
    if (dn_json_key_is(key, key_len, "id")) {
        f->id = *value;
        f->has_id = true;
    } else if (dn_json_key_is(key, key_len, "expires")) {
        f->expires = *value;
        f->has_expires = true;
    } else if (dn_json_key_is(key, key_len, "startPage")) {
        f->start_page = *value;
        f->has_start_page = true;
    }
}

void dn_session_clear(dn_session *session)
{
    free(session->start_page);
    memset(session, 0, sizeof *session);
}

bool dn_session_set_start_page(dn_session *session, const char *page, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, page, len);
    copy[len] = '\0';
    free(session->start_page);
    session->start_page = copy;
    session->start_page_len = len;
    return true;
}

bool dn_session_record_parse(const char *text, size_t len, dn_session *out)
{
    memset(out, 0, sizeof *out);
    if (len > DN_SESSION_RECORD_MAX) return false;
    record_fields f = {0};
    if (!dn_json_object_scan(text, len, collect_record_field, &f)) return false;
    if (!f.has_id || !f.has_expires || f.id.type != DN_JSON_STRING) return false;

    dn_buf id;
    dn_buf_init(&id);
    bool id_ok = dn_json_string_decode(&f.id, &id) && dn_session_id_valid(id.data, id.len);
    if (id_ok) {
        memcpy(out->id, id.data, id.len);
        out->id[id.len] = '\0';
        out->id_len = id.len;
    }
    dn_buf_free(&id);
    double expires;
    /* Milliseconds beyond 2^53 cannot come from Date.now(): a tampered record. */
    if (!id_ok || !dn_json_number(&f.expires, &expires) || fabs(expires) > 9007199254740992.0)
        return false;
    out->expires_ms = (int64_t)expires;

    /* A start page of the wrong type is forgotten, not a reason to end the session. */
    if (f.has_start_page && f.start_page.type == DN_JSON_STRING) {
        dn_buf page;
        dn_buf_init(&page);
        if (dn_json_string_decode(&f.start_page, &page))
            dn_session_set_start_page(out, page.len ? page.data : "", page.len);
        dn_buf_free(&page);
    }
    return true;
}

void dn_session_record_format(const dn_session *session, dn_buf *out)
{
    dn_buf_append_str(out, "{\"id\":");
    dn_json_string_append(out, session->id, session->id_len);
    dn_buf_append_str(out, ",\"expires\":");
    dn_buf_append_int(out, session->expires_ms);
    if (session->start_page) {
        dn_buf_append_str(out, ",\"startPage\":");
        dn_json_string_append(out, session->start_page, session->start_page_len);
    }
    dn_buf_append_char(out, '}');
}

size_t dn_session_record_with_expiry(const char *record, size_t len, size_t id_len,
                                     int64_t expires_ms, char *out, size_t out_size)
{
    /* Ids need no escaping, so the expiry starts right after {"id":"<id>","expires": */
    static const char id_head[] = "{\"id\":\"", expires_head[] = "\",\"expires\":";
    size_t start = sizeof id_head - 1 + id_len + sizeof expires_head - 1;
    if (start >= len || memcmp(record, id_head, sizeof id_head - 1) != 0 ||
        memcmp(record + start - (sizeof expires_head - 1), expires_head, sizeof expires_head - 1) !=
            0)
        return 0;
    size_t end = start;
    while (end < len && record[end] >= '0' && record[end] <= '9') end++;
    char digits[DN_INT_TEXT_MAX];
    size_t digits_len = dn_format_int(digits, expires_ms);
    size_t total = start + digits_len + (len - end);
    if (total > out_size) return 0;
    memcpy(out, record, start);
    memcpy(out + start, digits, digits_len);
    memcpy(out + start + digits_len, record + end, len - end);
    return total;
}

dn_id_outcome dn_session_resolve(const char *stored, size_t len, int64_t now_ms, int64_t ttl_ms,
                                 dn_session *out)
{
    /* The browser keeps a session while Date.now() < expires. */
    if (stored && dn_session_record_parse(stored, len, out) && now_ms < out->expires_ms) {
        out->expires_ms = now_ms + ttl_ms;
        return DN_ID_KEPT;
    }
    dn_session_clear(out);
    out->id_len = dn_session_id_make(out->id, now_ms);
    if (out->id_len == 0) return DN_ID_FAILED;
    out->expires_ms = now_ms + ttl_ms;
    return DN_ID_CREATED;
}

/* A start page of printable ASCII (other bytes may not survive the JSON round trip)
 * and an expiry within a double's integers. */
static bool memo_exact(const dn_session *session)
{
    bool exact = session->expires_ms < 9007199254740992LL;
    for (size_t i = 0; exact && session->start_page && i < session->start_page_len; i++)
        exact = session->start_page[i] >= 0x20 && session->start_page[i] < 0x7f;
    return exact;
}

void dn_session_memo_remember(dn_session_memo *memo, const dn_session *session, const char *record,
                              size_t record_len)
{
    memo->record_len = 0;
    if (!memo_exact(session)) return;
    if (record_len > memo->record_cap || !memo->record) {
        char *text = realloc(memo->record, record_len ? record_len : 1);
        if (!text) return;
        memo->record = text;
        memo->record_cap = record_len;
    }
    dn_session *known = &memo->session;
    bool same_page = known->start_page && session->start_page &&
                     known->start_page_len == session->start_page_len &&
                     memcmp(known->start_page, session->start_page, session->start_page_len) == 0;
    if (!same_page) {
        dn_session_clear(known);
        if (session->start_page &&
            !dn_session_set_start_page(known, session->start_page, session->start_page_len))
            return;
    }
    memcpy(known->id, session->id, session->id_len + 1);
    known->id_len = session->id_len;
    known->expires_ms = session->expires_ms;
    memcpy(memo->record, record, record_len);
    memo->record_len = record_len;
}

dn_id_outcome dn_session_memo_resolve(const dn_session_memo *memo, const char *stored, size_t len,
                                      int64_t now_ms, int64_t ttl_ms, dn_session *out,
                                      bool *as_written)
{
    const dn_session *known = &memo->session;
    *as_written = stored && memo->record_len && len == memo->record_len &&
                  memcmp(stored, memo->record, len) == 0 && now_ms < known->expires_ms;
    if (!*as_written) return dn_session_resolve(stored, len, now_ms, ttl_ms, out);
    /* What dn_session_resolve would make of these bytes, without parsing them. */
    memset(out, 0, sizeof *out);
    memcpy(out->id, known->id, known->id_len + 1);
    out->id_len = known->id_len;
    if (known->start_page) dn_session_set_start_page(out, known->start_page, known->start_page_len);
    out->expires_ms = now_ms + ttl_ms;
    return DN_ID_KEPT;
}

size_t dn_session_memo_record_with_expiry(const dn_session_memo *memo, int64_t expires_ms,
                                          char *out, size_t out_size)
{
    if (!memo->record_len) return 0;
    return dn_session_record_with_expiry(memo->record, memo->record_len, memo->session.id_len,
                                         expires_ms, out, out_size);
}

void dn_session_memo_free(dn_session_memo *memo)
{
    free(memo->record);
    dn_session_clear(&memo->session);
    memo->record = NULL;
    memo->record_len = 0;
    memo->record_cap = 0;
}
