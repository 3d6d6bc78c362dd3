/* Stored session records come from cookies and files a visitor can edit: parsing
 * must never misbehave, and whatever it accepts must survive format + parse intact. */
#include "session.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dn_session first;
    if (!dn_session_record_parse((const char *)data, size, &first)) return 0;
    if (!dn_session_id_valid(first.id, first.id_len)) abort();

    dn_buf text;
    dn_buf_init(&text);
    dn_session_record_format(&first, &text);
    dn_session again;
    if (!dn_session_record_parse(text.data, text.len, &again)) abort();
    if (again.id_len != first.id_len || memcmp(again.id, first.id, first.id_len) != 0) abort();
    if (again.expires_ms != first.expires_ms) abort();
    if ((again.start_page == NULL) != (first.start_page == NULL)) abort();
    if (first.start_page && (again.start_page_len != first.start_page_len ||
                             memcmp(again.start_page, first.start_page, first.start_page_len)))
        abort();
    dn_buf_free(&text);
    dn_session_clear(&again);
    dn_session_clear(&first);
    return 0;
}
