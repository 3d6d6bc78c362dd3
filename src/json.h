/* The small JSON jobs the C core does itself: reading the records it stored (and the
 * `code` of a server's error answer), writing those records back, and quoting the
 * strings of an event body (body.c; lua-cjson encodes the metadata). */
#ifndef DN_JSON_H
#define DN_JSON_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum dn_json_type {
    DN_JSON_STRING,
    DN_JSON_NUMBER,
    DN_JSON_TRUE,
    DN_JSON_FALSE,
    DN_JSON_NULL,
    DN_JSON_OBJECT,
    DN_JSON_ARRAY,
} dn_json_type;

/* For a string, raw points inside the quotes and is still escaped. */
typedef struct dn_json_value {
    dn_json_type type;
    const char *raw;
    size_t len;
} dn_json_value;

/* Called for each member of the top-level object; key is raw (escaped). */
typedef void (*dn_json_member_fn)(void *ud, const char *key, size_t key_len,
                                  const dn_json_value *value);

/* Nesting deeper than this is refused rather than followed. */
#define DN_JSON_MAX_DEPTH 32

/* True when text is exactly one well-formed JSON object (whitespace around it
 * allowed); members are reported as they are read, so a caller must not act on them
 * when the answer is false. */
bool dn_json_object_scan(const char *text, size_t len, dn_json_member_fn on_member, void *ud);

bool dn_json_key_is(const char *key, size_t key_len, const char *name);
/* Appends the decoded bytes of a string value (escapes resolved, \u to UTF-8). */
bool dn_json_string_decode(const dn_json_value *value, dn_buf *out);
/* A number value as a double; false when it does not fit one. */
bool dn_json_number(const dn_json_value *value, double *out);

/* Appends s as a quoted JSON string. Bytes >= 0x80 pass through unchanged. */
void dn_json_string_append(dn_buf *b, const char *s, size_t len);

#endif
