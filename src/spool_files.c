#include "spool_files.h"
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

bool dn_spool_lock_name(char *out, const char *writer)
{
    int n = snprintf(out, DN_SPOOL_FILE_NAME_MAX, "%s.lock", writer);
    return n > 0 && n < DN_SPOOL_FILE_NAME_MAX;
}

bool dn_spool_segment_name(char *out, const char *writer, uint64_t seq)
{
    int n = snprintf(out, DN_SPOOL_FILE_NAME_MAX, "%s.%llu.log", writer, (unsigned long long)seq);
    return n > 0 && n < DN_SPOOL_FILE_NAME_MAX;
}

static bool read_at(int fd, uint8_t *out, uint64_t len, uint64_t offset)
{
    while (len > 0) {
        int64_t n = dn_os_read_at(fd, out, (size_t)len, offset);
        if (n < 0) return false;
        if (n == 0) {
            errno = EIO; /* the file is shorter than our bookkeeping says */
            return false;
        }
        out += n;
        len -= (uint64_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

bool dn_spool_read_whole_file(int fd, dn_buf *out)
{
    uint64_t size;
    dn_buf_clear(out);
    if (!dn_os_file_size(fd, &size)) return false;
    if (size > SIZE_MAX - 1 || !dn_buf_reserve(out, (size_t)size + 1)) {
        errno = ENOMEM;
        return false;
    }
    for (;;) {
        if (out->len == out->cap && !dn_buf_reserve(out, 65536)) {
            errno = ENOMEM;
            return false;
        }
        int64_t n = dn_os_read_at(fd, out->data + out->len, out->cap - out->len, out->len);
        if (n < 0) return false;
        if (n == 0) return true;
        out->len += (size_t)n;
    }
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Length of the "<pid>-<16 hex>" a file name starts with, 0 when it does not: files
 * of any other shape are not ours and are left alone. */
static size_t writer_prefix_len(const char *name)
{
    size_t i = 0;
    while (name[i] >= '0' && name[i] <= '9') i++;
    if (i == 0 || i > 20 || name[i] != '-') return 0;
    i++;
    for (size_t h = 0; h < 16; h++, i++)
        if (!is_lower_hex(name[i])) return 0;
    return i;
}

bool dn_spool_parse_file_name(const char *name, char writer[DN_SPOOL_WRITER_NAME_MAX + 1],
                              uint64_t *seq)
{
    size_t len = writer_prefix_len(name);
    if (len == 0) return false;
    const char *rest = name + len;
    *seq = 0;
    if (strcmp(rest, ".lock") != 0) {
        if (*rest++ != '.' || *rest < '1' || *rest > '9') return false;
        for (; *rest >= '0' && *rest <= '9'; rest++) {
            unsigned digit = (unsigned)(*rest - '0');
            if (*seq > (UINT64_MAX - digit) / 10) return false;
            *seq = *seq * 10 + digit;
        }
        if (strcmp(rest, ".log") != 0) return false;
    }
    memcpy(writer, name, len);
    writer[len] = '\0';
    return true;
}

bool dn_spool_read_event(int fd, uint64_t offset, uint64_t size, dn_buf *buf, dn_spool_record *r,
                         const char *dir, char *error, size_t error_size)
{
    dn_buf_clear(buf);
    if (!dn_buf_reserve(buf, (size_t)size)) {
        snprintf(error, error_size, "cannot read an event back: out of memory");
        return false;
    }
    if (!read_at(fd, (uint8_t *)buf->data, size, offset)) {
        snprintf(error, error_size, "cannot read an event back from %s: %s", dir, strerror(errno));
        return false;
    }
    buf->len = (size_t)size;
    if (!dn_spool_record_parse((const uint8_t *)buf->data, size, r) ||
        !dn_spool_record_is_event(r->type) || r->size != size) {
        snprintf(error, error_size, "an event in %s no longer reads back intact", dir);
        return false;
    }
    return true;
}
