/* The visitor's two stored records, read and written byte-compatibly with the browser
 * client: `dn_user_id` holds the bare id, `dn_session_id` holds
 * {"id":"SESSION-<uuid>-<ms>","expires":<ms>} plus our optional "startPage". */
#ifndef DN_SESSION_H
#define DN_SESSION_H

#include "buf.h"
#include "ids.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DN_USER_ID_KEY    "dn_user_id"
#define DN_SESSION_ID_KEY "dn_session_id"
/* A stored session record larger than this is treated as corrupt, so a tampered
 * cookie cannot make every event parse megabytes. */
#define DN_SESSION_RECORD_MAX 16384
/* Longer first pages are sent but not remembered, which keeps the record small. */
#define DN_START_PAGE_MAX 4096

typedef struct dn_session {
    char id[DN_ID_MAX + 1];
    size_t id_len;
    int64_t expires_ms;
    char *start_page; /* malloc'd, NULL when the session has none yet */
    size_t start_page_len;
} dn_session;

typedef enum dn_id_outcome {
    DN_ID_KEPT,    /* the stored value was valid and is used as it is */
    DN_ID_CREATED, /* missing, expired or invalid: a new id was made and must be stored */
    DN_ID_FAILED,  /* no randomness or no memory: nothing was made */
} dn_id_outcome;

/* stored may be NULL (nothing stored). out receives the id to use. */
dn_id_outcome dn_user_id_resolve(const char *stored, size_t len, int64_t now_ms,
                                 char out[DN_ID_MAX + 1], size_t *out_len);

/* Parses a stored record; false for anything the browser client would not accept as a
 * live session record (not an object, id missing or malformed, expires not a number). */
bool dn_session_record_parse(const char *text, size_t len, dn_session *out);
void dn_session_record_format(const dn_session *session, dn_buf *out);
/* A record dn_session_record_format wrote for an id of id_len bytes, with the expiry
 * replaced, into out: what formatting the same session with that expiry gives, without
 * escaping the start page again. 0 when record lacks that shape or out is too small. */
size_t dn_session_record_with_expiry(const char *record, size_t len, size_t id_len,
                                     int64_t expires_ms, char *out, size_t out_size);

/* Continues the stored session if it is alive at now_ms, else starts a new one; either
 * way the expiry slides to now_ms + ttl_ms, so the record must be stored again. */
dn_id_outcome dn_session_resolve(const char *stored, size_t len, int64_t now_ms, int64_t ttl_ms,
                                 dn_session *out);
bool dn_session_set_start_page(dn_session *session, const char *page, size_t len);
void dn_session_clear(dn_session *session);

/* The session record a client last wrote and the session it says: when the storage
 * gives the same bytes back, emit neither validates nor parses them again. A memo
 * answers as dn_session_resolve would for any record and clock (test_session.c). */
typedef struct dn_session_memo {
    char *record; /* malloc'd; record_len 0 when nothing is remembered */
    size_t record_len;
    size_t record_cap; /* grown only: a session's record keeps its size from emit to emit */
    dn_session session;
} dn_session_memo;

/* Remembers record (just written) and the session it says. Only when parsing the
 * record would give back exactly this session; otherwise the memo is emptied. */
void dn_session_memo_remember(dn_session_memo *memo, const dn_session *session, const char *record,
                              size_t record_len);
/* dn_session_resolve, answered from the memo when stored is the remembered record and
 * still alive; *as_written says whether it was. */
dn_id_outcome dn_session_memo_resolve(const dn_session_memo *memo, const char *stored, size_t len,
                                      int64_t now_ms, int64_t ttl_ms, dn_session *out,
                                      bool *as_written);
/* The remembered record with the expiry replaced (see dn_session_record_with_expiry). */
size_t dn_session_memo_record_with_expiry(const dn_session_memo *memo, int64_t expires_ms,
                                          char *out, size_t out_size);
void dn_session_memo_free(dn_session_memo *memo);

#endif
