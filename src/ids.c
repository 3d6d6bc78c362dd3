#include "ids.h"
#include "os.h"

#include <stdio.h>
#include <string.h>

/* One OS call serves many uuids: ids and idempotency keys are made on the emit path,
 * and a syscall per event would cost more than the rest of the id work. */
static DN_THREAD_LOCAL struct {
    uint8_t bytes[512];
    size_t used;
    unsigned generation;
    bool filled;
} pool;

bool dn_random_fill(void *buf, size_t len)
{
    unsigned generation = dn_fork_generation();
    if (len > sizeof pool.bytes) return dn_os_random(buf, len);
    if (!pool.filled || pool.generation != generation || sizeof pool.bytes - pool.used < len) {
        /* A forked child must not replay the parent's unused bytes. */
        if (!dn_os_random(pool.bytes, sizeof pool.bytes)) return false;
        pool.used = 0;
        pool.generation = generation;
        pool.filled = true;
    }
    memcpy(buf, pool.bytes + pool.used, len);
    /* Bytes handed out are wiped so that a later copy of this memory cannot reveal them. */
    memset(pool.bytes + pool.used, 0, len);
    pool.used += len;
    return true;
}

uint64_t dn_random_u64(void)
{
    uint64_t v = 0;
    dn_random_fill(&v, sizeof v);
    return v;
}

void dn_uuid_mark_v4(uint8_t bytes[16])
{
    bytes[6] = (uint8_t)((bytes[6] & 0x0f) | 0x40); /* version 4 */
    bytes[8] = (uint8_t)((bytes[8] & 0x3f) | 0x80); /* variant 10xx */
}

void dn_uuid_format(const uint8_t bytes[16], char out[DN_UUID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[bytes[i] >> 4];
        out[o++] = hex[bytes[i] & 0x0f];
    }
    out[o] = '\0';
}

bool dn_uuid_v4(char out[DN_UUID_LEN + 1])
{
    uint8_t bytes[16];
    if (!dn_random_fill(bytes, sizeof bytes)) return false;
    dn_uuid_mark_v4(bytes);
    dn_uuid_format(bytes, out);
    return true;
}

static size_t id_make(char *out, const char *prefix, int64_t now_ms)
{
    char uuid[DN_UUID_LEN + 1];
    if (!dn_uuid_v4(uuid)) return 0;
    int n = snprintf(out, DN_ID_MAX + 1, "%s%s-%lld", prefix, uuid, (long long)now_ms);
    return n > 0 ? (size_t)n : 0;
}

size_t dn_user_id_make(char *out, int64_t now_ms)
{
    return id_make(out, "", now_ms);
}

size_t dn_session_id_make(char *out, int64_t now_ms)
{
    return id_make(out, "SESSION-", now_ms);
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx-<1..16 digits>`, nothing before or after. Any
 * uuid version is kept: the shape, not the generator, is what the service relies on. */
static bool uuid_ms_valid(const char *s, size_t len)
{
    if (len < DN_UUID_LEN + 2 || len > DN_UUID_LEN + 1 + 16) return false;
    for (size_t i = 0; i < DN_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i])) return false;
    }
    if (s[DN_UUID_LEN] != '-') return false;
    for (size_t i = DN_UUID_LEN + 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

bool dn_user_id_valid(const char *s, size_t len)
{
    return len <= DN_ID_MAX && uuid_ms_valid(s, len);
}

bool dn_session_id_valid(const char *s, size_t len)
{
    static const char prefix[] = "SESSION-";
    const size_t plen = sizeof prefix - 1;
    return len <= DN_ID_MAX && len > plen && memcmp(s, prefix, plen) == 0 &&
           uuid_ms_valid(s + plen, len - plen);
}
