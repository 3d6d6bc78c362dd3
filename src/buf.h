/* A growable byte buffer, and room in growable arrays: the one place that owns
 * realloc arithmetic. */
#ifndef DN_BUF_H
#define DN_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dn_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed: contents are incomplete */
} dn_buf;

void dn_buf_init(dn_buf *b);
void dn_buf_free(dn_buf *b);
void dn_buf_clear(dn_buf *b);
bool dn_buf_reserve(dn_buf *b, size_t extra);
void dn_buf_append(dn_buf *b, const void *data, size_t len);
void dn_buf_append_str(dn_buf *b, const char *s);
void dn_buf_append_char(dn_buf *b, char c);
void dn_buf_append_int(dn_buf *b, long long v);
/* Writes v in decimal, without a terminator; answers the length. */
#define DN_INT_TEXT_MAX 24
size_t dn_format_int(char out[DN_INT_TEXT_MAX], long long v);
/* NUL-terminates without counting the terminator in len; false when out of memory. */
bool dn_buf_terminate(dn_buf *b);

/* Room for one more item in an array of item_size items holding len of cap: the
 * array itself when there is room, else it grown (cap doubled, or first_cap for an
 * empty one, *cap updated), or NULL when out of memory (the array untouched). */
void *dn_array_reserve(void *items, size_t len, size_t *cap, size_t item_size, size_t first_cap);

#endif
