#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void dn_buf_init(dn_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = false;
}

void dn_buf_free(dn_buf *b)
{
    free(b->data);
    dn_buf_init(b);
}

void dn_buf_clear(dn_buf *b)
{
    b->len = 0;
    b->failed = false;
}

bool dn_buf_reserve(dn_buf *b, size_t extra)
{
    if (b->failed) return false;
    if (extra <= b->cap - b->len) return true;
    size_t want = b->len + extra;
    if (want < b->len) {
        b->failed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want) cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
        b->failed = true;
        return false;
    }
    b->data = grown;
    b->cap = cap;
    return true;
}

void *dn_array_reserve(void *items, size_t len, size_t *cap, size_t item_size, size_t first_cap)
{
    if (len < *cap) return items;
    size_t grown_cap = *cap ? *cap * 2 : first_cap;
    if (grown_cap < *cap || grown_cap > SIZE_MAX / item_size) return NULL;
    void *grown = realloc(items, grown_cap * item_size);
    if (grown) *cap = grown_cap;
    return grown;
}

void dn_buf_append(dn_buf *b, const void *data, size_t len)
{
    if (len == 0 || !dn_buf_reserve(b, len)) return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void dn_buf_append_str(dn_buf *b, const char *s)
{
    dn_buf_append(b, s, strlen(s));
}

void dn_buf_append_char(dn_buf *b, char c)
{
    if (!dn_buf_reserve(b, 1)) return;
    b->data[b->len++] = c;
}

/* By hand rather than with snprintf: emit writes the session record, with its expiry
 * in milliseconds, on every event. */
size_t dn_format_int(char out[DN_INT_TEXT_MAX], long long v)
{
    char digits[DN_INT_TEXT_MAX];
    char *end = digits + sizeof digits, *p = end;
    /* Negated as unsigned, so that LLONG_MIN has a magnitude too. */
    unsigned long long magnitude = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude > 0);
    if (v < 0) *--p = '-';
    size_t len = (size_t)(end - p);
    memcpy(out, p, len);
    return len;
}

void dn_buf_append_int(dn_buf *b, long long v)
{
    char digits[DN_INT_TEXT_MAX];
    dn_buf_append(b, digits, dn_format_int(digits, v));
}

bool dn_buf_terminate(dn_buf *b)
{
    if (!dn_buf_reserve(b, 1)) return false;
    b->data[b->len] = '\0';
    return true;
}
