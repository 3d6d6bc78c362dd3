#include "body.h"
#include "json.h"

#include <string.h>

#define APPEND_LITERAL(b, s) dn_buf_append((b), (s), sizeof(s) - 1)

static void append_text(dn_buf *out, const dn_body_text *text)
{
    if (text->data)
        dn_json_string_append(out, text->data, text->len);
    else
        APPEND_LITERAL(out, "null");
}

void dn_body_write(dn_buf *out, const dn_body_fields *f)
{
    dn_buf_clear(out);
    /* The fixed members' names and punctuation take about 150 bytes. */
    dn_buf_reserve(out, 160 + f->user_id.len + f->session_id.len + f->session_start_page.len +
                            f->referrer_url.len + f->customers_id.len + f->event.len +
                            f->metadata_json_len);
    APPEND_LITERAL(out, "{\"userId\":");
    append_text(out, &f->user_id);
    APPEND_LITERAL(out, ",\"sessionId\":");
    append_text(out, &f->session_id);
    APPEND_LITERAL(out, ",\"sessionStartPage\":");
    append_text(out, &f->session_start_page);
    APPEND_LITERAL(out, ",\"referrerUrl\":");
    append_text(out, &f->referrer_url);
    if (f->has_customer_account)
        APPEND_LITERAL(out, ",\"hasCustomerAccount\":true");
    else
        APPEND_LITERAL(out, ",\"hasCustomerAccount\":false");
    APPEND_LITERAL(out, ",\"customersId\":");
    append_text(out, &f->customers_id);
    APPEND_LITERAL(out, ",\"event\":");
    append_text(out, &f->event);
    APPEND_LITERAL(out, ",\"metadata\":");
    dn_buf_append(out, f->metadata_json, f->metadata_json_len);
    dn_buf_append_char(out, '}');
}
