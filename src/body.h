/* The JSON body of one event. lua-cjson encodes the metadata, the one part that can
 * be any Lua table; the seven other members are strings, a boolean and nulls that the
 * core writes around it, in a fixed order, without building a Lua table per event. */
#ifndef DN_BODY_H
#define DN_BODY_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

/* A string member; data NULL means JSON null. */
typedef struct dn_body_text {
    const char *data;
    size_t len;
} dn_body_text;

typedef struct dn_body_fields {
    dn_body_text user_id;
    dn_body_text session_id;
    dn_body_text session_start_page;
    dn_body_text referrer_url;
    bool has_customer_account;
    dn_body_text customers_id;
    dn_body_text event;
    /* Already JSON: an object, as lua-cjson wrote it. */
    const char *metadata_json;
    size_t metadata_json_len;
} dn_body_fields;

/* Replaces out's contents with the body; out->failed tells of a failed allocation. */
void dn_body_write(dn_buf *out, const dn_body_fields *fields);

#endif
