/* The spool's on-disk format, written out independently of src/spool.c, for the
 * tests that lay records down by hand (test_spool.c) and the fuzzer of what a spool
 * folder may hold (fuzz/fuzz_spool_segment.c). */
#ifndef DUKANEXT_TESTS_SPOOL_FORMAT_H
#define DUKANEXT_TESTS_SPOOL_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAGIC      0x50534e44u
#define HEADER     13
#define TYPE_EVENT 3
#define TYPE_EVENT_AT 4 /* an EVENT with its emit time after the order */
#define TYPE_DONE  2
#define DONE_SIZE  (HEADER + 16)

static inline void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Bitwise, the slowest and plainest way, to check the table-driven one in spool.c. */
static inline uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len--) {
        crc ^= *p++;
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return crc;
}

static inline uint32_t crc32c(const void *data, size_t len)
{
    return ~crc32c_update(0xffffffffu, data, len);
}

/* The header of a record whose payload is already at out + HEADER: magic, length
 * and type, and the CRC over length, type and payload. Answers the record's size. */
static inline size_t seal_record(uint8_t *out, uint8_t type, uint32_t len)
{
    put_u32(out, MAGIC);
    put_u32(out + 4, len);
    out[12] = type;
    uint32_t crc = crc32c_update(0xffffffffu, out + 4, 4);
    put_u32(out + 8, ~crc32c_update(crc, out + 12, 1 + (size_t)len));
    return HEADER + (size_t)len;
}

/* Any record with a correct CRC, whatever its payload says. */
static inline size_t encode_raw(uint8_t *out, uint8_t type, const uint8_t *payload, uint32_t len)
{
    memcpy(out + HEADER, payload, len);
    return seal_record(out, type, len);
}

#endif
