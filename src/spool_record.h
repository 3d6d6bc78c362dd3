/* The spool's record format: how one EVENT or DONE record is laid out on disk, built
 * and checked. Nothing here knows of files or writers (see spool.c).
 *
 * On disk, little-endian, packed byte by byte:
 *   u32 magic, u32 payload length, u32 CRC-32C, u8 type, payload
 * The CRC covers the length, the type and the payload, so a flipped length is caught
 * too. EVENT payload: key[16], u64 order, u32 body length, body, u16 user agent
 * length, user agent, u16 client ip length, client ip. EVENT_AT payload: the same
 * with an i64 after the order, the wall-clock milliseconds of the event's emit, so
 * that its max_age counts from then also after a restart; an event whose emit time
 * is not known is written as an EVENT. DONE payload: key[16].
 *
 * The order is the id the writer handed out for the event: it counts up in the order
 * events were first appended (or adopted), and compaction copies a record unchanged,
 * so sorting a writer's EVENT records by order gives back its append order wherever
 * they now lie. Type 1 was the EVENT record before it carried an order; it now reads
 * as an unknown type, that is as damage. */
#ifndef DN_SPOOL_RECORD_H
#define DN_SPOOL_RECORD_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DN_SPOOL_RECORD_HEADER    13
#define DN_SPOOL_KEY_LEN          16
#define DN_SPOOL_DONE_RECORD_SIZE (DN_SPOOL_RECORD_HEADER + DN_SPOOL_KEY_LEN)

typedef enum dn_spool_record_type {
    DN_SPOOL_RECORD_DONE = 2,
    DN_SPOOL_RECORD_EVENT = 3,
    DN_SPOOL_RECORD_EVENT_AT = 4, /* an EVENT with its emit time */
} dn_spool_record_type;

/* EVENT or EVENT_AT. */
static inline bool dn_spool_record_is_event(uint8_t type)
{
    return type == DN_SPOOL_RECORD_EVENT || type == DN_SPOOL_RECORD_EVENT_AT;
}

/* One record found at the start of some bytes; payload points into them. */
typedef struct dn_spool_record {
    uint8_t type;
    const uint8_t *payload; /* begins with the key, for both types */
    uint32_t payload_len;
    uint64_t size; /* of the whole record */
} dn_spool_record;

/* The fields of an EVENT payload; pointers into it. */
typedef struct dn_spool_event_fields {
    const uint8_t *key;
    uint64_t order;
    int64_t emitted_ms; /* wall-clock milliseconds of its emit; 0 when not known */
    const char *body;
    uint32_t body_len;
    const char *user_agent;
    uint16_t user_agent_len;
    const char *client_ip;
    uint16_t client_ip_len;
} dn_spool_event_fields;

/* False when data does not start with a whole, intact record of a known type whose
 * inner lengths add up: a torn tail and a corrupt record look the same to a reader. */
bool dn_spool_record_parse(const uint8_t *data, uint64_t avail, dn_spool_record *record);
/* The fields of an EVENT record that dn_spool_record_parse accepted. */
void dn_spool_event_decode(const dn_spool_record *record, dn_spool_event_fields *fields);

/* The size of the EVENT (or, with an emit time, EVENT_AT) record for these lengths,
 * or 0 when they do not fit its length fields. */
uint64_t dn_spool_event_record_size(int64_t emitted_ms, size_t body_len, size_t user_agent_len,
                                    size_t client_ip_len);
/* Builds one whole EVENT record in b (cleared first), so that it reaches the file in
 * a single write; the lengths must have passed dn_spool_event_record_size. False when
 * out of memory. */
bool dn_spool_event_encode(dn_buf *b, const dn_spool_event_fields *fields);
void dn_spool_done_encode(uint8_t out[DN_SPOOL_DONE_RECORD_SIZE],
                          const uint8_t key[DN_SPOOL_KEY_LEN]);
/* Gives an intact EVENT record another order, its CRC updated to match. */
void dn_spool_event_set_order(uint8_t *record, uint64_t order);

#endif
