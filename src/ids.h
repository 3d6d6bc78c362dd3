/* Ids exactly as the browser client makes them: `<uuid v4>-<ms>` for the visitor,
 * `SESSION-<uuid v4>-<ms>` for the session. */
#ifndef DN_IDS_H
#define DN_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DN_UUID_LEN 36
/* A stored id longer than this is tampered with, whatever it looks like. */
#define DN_ID_MAX 128

/* Fills buf from the OS CSPRNG (dn_os_random, through a per-thread pool that a fork
 * discards). False only when the OS gives no randomness at all. */
bool dn_random_fill(void *buf, size_t len);
uint64_t dn_random_u64(void);

/* RFC 9562 version 4, lowercase, NUL-terminated. */
bool dn_uuid_v4(char out[DN_UUID_LEN + 1]);
void dn_uuid_format(const uint8_t bytes[16], char out[DN_UUID_LEN + 1]);
/* Turns 16 random bytes into a version 4 uuid by setting the version and variant bits. */
void dn_uuid_mark_v4(uint8_t bytes[16]);

/* Both write a NUL-terminated id into out (at least DN_ID_MAX + 1 bytes) and return
 * its length, or 0 when no randomness was available. */
size_t dn_user_id_make(char *out, int64_t now_ms);
size_t dn_session_id_make(char *out, int64_t now_ms);

bool dn_user_id_valid(const char *s, size_t len);
bool dn_session_id_valid(const char *s, size_t len);

#endif
