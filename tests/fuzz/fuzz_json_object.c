/* The JSON reader behind stored records, the file storage and server answers: every
 * member it reports must decode, and a string it decodes must encode back to a string
 * that decodes to the same bytes. */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    (void)ud;
    dn_json_value raw_key = {DN_JSON_STRING, key, key_len};
    dn_buf decoded;
    dn_buf_init(&decoded);
    if (!dn_json_string_decode(&raw_key, &decoded)) abort();
    dn_buf_free(&decoded);
    if (value->type == DN_JSON_NUMBER) {
        double ignored;
        (void)dn_json_number(value, &ignored);
    }
    if (value->type != DN_JSON_STRING) return;

    dn_buf_init(&decoded);
    if (!dn_json_string_decode(value, &decoded)) abort();
    dn_buf encoded;
    dn_buf_init(&encoded);
    dn_buf_append_char(&encoded, '{');
    dn_json_string_append(&encoded, "k", 1);
    dn_buf_append_char(&encoded, ':');
    dn_json_string_append(&encoded, decoded.data ? decoded.data : "", decoded.len);
    dn_buf_append_char(&encoded, '}');
    if (!dn_json_object_scan(encoded.data, encoded.len, NULL, NULL)) abort();
    dn_buf_free(&encoded);
    dn_buf_free(&decoded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)dn_json_object_scan((const char *)data, size, check_member, NULL);
    return 0;
}
