/* The JSON reader behind stored records, the file storage and server answers: every
 * member it reports must decode, and the bytes of a key or string it decodes must
 * come back exactly when they are encoded into an object, scanned and decoded again. */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The one member of an object the round trip wrote, as the scan reports it. */
typedef struct only_member {
    dn_json_value value;
    int count;
} only_member;

static void take_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    only_member *m = ud;
    if (!dn_json_key_is(key, key_len, "k")) abort();
    m->value = *value;
    m->count++;
}

/* Decodes raw, encodes the bytes as {"k":"..."}, scans and decodes that: the same
 * bytes must come back. */
static void round_trip(const dn_json_value *raw)
{
    dn_buf decoded, encoded, again;
    dn_buf_init(&decoded);
    dn_buf_init(&encoded);
    dn_buf_init(&again);
    if (!dn_json_string_decode(raw, &decoded)) abort();
    dn_buf_append_char(&encoded, '{');
    dn_json_string_append(&encoded, "k", 1);
    dn_buf_append_char(&encoded, ':');
    dn_json_string_append(&encoded, decoded.data ? decoded.data : "", decoded.len);
    dn_buf_append_char(&encoded, '}');
    only_member m = {0};
    if (!dn_json_object_scan(encoded.data, encoded.len, take_member, &m)) abort();
    if (m.count != 1 || m.value.type != DN_JSON_STRING) abort();
    if (!dn_json_string_decode(&m.value, &again)) abort();
    if (again.len != decoded.len) abort();
    if (decoded.len && memcmp(again.data, decoded.data, decoded.len) != 0) abort();
    dn_buf_free(&again);
    dn_buf_free(&encoded);
    dn_buf_free(&decoded);
}

static void check_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    (void)ud;
    dn_json_value raw_key = {DN_JSON_STRING, key, key_len};
    round_trip(&raw_key);
    if (value->type == DN_JSON_NUMBER) {
        double ignored;
        (void)dn_json_number(value, &ignored);
    }
    if (value->type == DN_JSON_STRING) round_trip(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)dn_json_object_scan((const char *)data, size, check_member, NULL);
    return 0;
}
