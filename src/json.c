#include "json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const char *p;
    const char *end;
} reader;

static void skip_space(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static bool is_hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* On entry r->p is at the opening quote; on success it is past the closing one. */
static bool read_string(reader *r, const char **raw, size_t *len)
{
    r->p++;
    const char *start = r->p;
    while (r->p < r->end) {
        unsigned char c = (unsigned char)*r->p;
        if (c == '"') {
            *raw = start;
            *len = (size_t)(r->p - start);
            r->p++;
            return true;
        }
        if (c < 0x20) return false;
        if (c == '\\') {
            if (r->end - r->p < 2) return false;
            char e = r->p[1];
            if (e == 'u') {
                if (r->end - r->p < 6) return false;
                for (int i = 2; i < 6; i++)
                    if (!is_hex_digit(r->p[i])) return false;
                r->p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0') return false;
            r->p += 2;
            continue;
        }
        r->p++;
    }
    return false;
}

static bool read_digits(reader *r)
{
    const char *start = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    return r->p > start;
}

static bool read_number(reader *r)
{
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p < r->end && *r->p == '0') {
        r->p++;
    } else if (!read_digits(r)) {
        return false;
    }
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (!read_digits(r)) return false;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!read_digits(r)) return false;
    }
    return true;
}

static bool read_literal(reader *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return false;
    r->p += n;
    return true;
}

static bool read_value(reader *r, int depth, dn_json_value *out);

static bool read_container(reader *r, int depth, char close, dn_json_member_fn on_member, void *ud)
{
    if (depth > DN_JSON_MAX_DEPTH) return false;
    r->p++;
    skip_space(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return true;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        skip_space(r);
        if (close == '}') {
            if (r->p >= r->end || *r->p != '"' || !read_string(r, &key, &key_len)) return false;
            skip_space(r);
            if (r->p >= r->end || *r->p != ':') return false;
            r->p++;
            skip_space(r);
        }
        dn_json_value value;
        if (!read_value(r, depth + 1, &value)) return false;
        if (on_member) on_member(ud, key, key_len, &value);
        skip_space(r);
        if (r->p >= r->end) return false;
        if (*r->p == close) {
            r->p++;
            return true;
        }
        if (*r->p != ',') return false;
        r->p++;
    }
}

static bool read_value(reader *r, int depth, dn_json_value *out)
{
    if (r->p >= r->end) return false;
    const char *start = r->p;
    bool ok;
    switch (*r->p) {
    case '"':
        out->type = DN_JSON_STRING;
        return read_string(r, &out->raw, &out->len);
    case '{':
        out->type = DN_JSON_OBJECT;
        ok = read_container(r, depth, '}', NULL, NULL);
        break;
    case '[':
        out->type = DN_JSON_ARRAY;
        ok = read_container(r, depth, ']', NULL, NULL);
        break;
    case 't':
        out->type = DN_JSON_TRUE;
        ok = read_literal(r, "true");
        break;
    case 'f':
        out->type = DN_JSON_FALSE;
        ok = read_literal(r, "false");
        break;
    case 'n':
        out->type = DN_JSON_NULL;
        ok = read_literal(r, "null");
        break;
    default:
        out->type = DN_JSON_NUMBER;
        ok = read_number(r);
        break;
    }
    out->raw = start;
    out->len = (size_t)(r->p - start);
    return ok;
}

bool dn_json_object_scan(const char *text, size_t len, dn_json_member_fn on_member, void *ud)
{
    reader r = {text, text + len};
    skip_space(&r);
    if (r.p >= r.end || *r.p != '{') return false;
    if (!read_container(&r, 1, '}', on_member, ud)) return false;
    skip_space(&r);
    return r.p == r.end;
}

bool dn_json_key_is(const char *key, size_t key_len, const char *name)
{
    return key_len == strlen(name) && memcmp(key, name, key_len) == 0;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else
            v |= (unsigned)(c - 'A' + 10);
    }
    return v;
}

static void append_utf8(dn_buf *out, unsigned cp)
{
    char bytes[4];
    size_t n;
    if (cp < 0x80) {
        bytes[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        bytes[0] = (char)(0xc0 | (cp >> 6));
        bytes[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        bytes[0] = (char)(0xe0 | (cp >> 12));
        bytes[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        bytes[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        bytes[0] = (char)(0xf0 | (cp >> 18));
        bytes[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        bytes[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        bytes[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    dn_buf_append(out, bytes, n);
}

/* The value was already checked by the scanner, so escapes are well-formed here. */
bool dn_json_string_decode(const dn_json_value *value, dn_buf *out)
{
    if (value->type != DN_JSON_STRING) return false;
    const char *p = value->raw;
    const char *end = p + value->len;
    while (p < end) {
        const char *plain = p;
        while (p < end && *p != '\\') p++;
        dn_buf_append(out, plain, (size_t)(p - plain));
        if (p >= end) break;
        char e = p[1];
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt";
            static const char to[] = "\"\\/\b\f\n\r\t";
            dn_buf_append_char(out, to[strchr(from, e) - from]);
            p += 2;
            continue;
        }
        unsigned cp = hex4(p + 2);
        p += 6;
        if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
            unsigned low = hex4(p + 2);
            if (low >= 0xdc00 && low < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            }
        }
        /* A lone surrogate has no UTF-8 form: U+FFFD, as a browser's decoder does. */
        if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
        append_utf8(out, cp);
    }
    return !out->failed;
}

bool dn_json_number(const dn_json_value *value, double *out)
{
    char digits[64];
    if (value->type != DN_JSON_NUMBER || value->len >= sizeof digits) return false;
    memcpy(digits, value->raw, value->len);
    digits[value->len] = '\0';
    char *end;
    double v = strtod(digits, &end);
    if (*end != '\0' || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* The bytes a JSON string cannot hold as they are: control characters, the quote and
 * the backslash. A table, because emit quotes every id and name of every event. */
static const bool must_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
};

void dn_json_string_append(dn_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* Room for the common case, a string with nothing to escape, in one go. */
    if (len > SIZE_MAX - 2 || !dn_buf_reserve(b, len + 2)) {
        b->failed = true;
        return;
    }
    b->data[b->len++] = '"';
    size_t plain = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!must_escape[c]) continue;
        dn_buf_append(b, s + plain, i - plain);
        plain = i + 1;
        switch (c) {
        case '"':
            dn_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            dn_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            dn_buf_append(b, "\\n", 2);
            break;
        case '\r':
            dn_buf_append(b, "\\r", 2);
            break;
        case '\t':
            dn_buf_append(b, "\\t", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0x0f]};
            dn_buf_append(b, esc, sizeof esc);
        }
        }
    }
    dn_buf_append(b, s + plain, len - plain);
    dn_buf_append_char(b, '"');
}
