#include "spool_record.h"

#include <string.h>

#define RECORD_MAGIC   0x50534e44u /* "DNSP" as bytes on disk */
#define KEY_LEN        DN_SPOOL_KEY_LEN
#define HEADER         DN_SPOOL_RECORD_HEADER
#define EVENT_FIXED    (KEY_LEN + 8 + 4 + 2 + 2)
#define EVENT_AT_FIXED (EVENT_FIXED + 8)
#define EVENT_ORDER    (HEADER + KEY_LEN) /* where the order lies in a record */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), half a byte at a time: a
 * 16-entry table keeps it short while fast enough for appends of small events. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
    static const uint32_t nibble[16] = {
        0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
        0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
        0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
    };
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nibble[crc & 15];
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return crc;
}

static uint32_t record_crc(const uint8_t *record, uint32_t payload_len)
{
    uint32_t crc = crc32c_update(0xffffffffu, record + 4, 4);
    crc = crc32c_update(crc, record + HEADER - 1, (size_t)payload_len + 1);
    return ~crc;
}

static void seal(uint8_t *record)
{
    put_u32(record + 8, record_crc(record, get_u32(record + 4)));
}

/* Every length is checked against the room left, so a payload whose lengths do not
 * add up to its size is refused. */
static bool event_fields_read(uint8_t type, const uint8_t *payload, uint32_t len,
                              dn_spool_event_fields *ev)
{
    uint32_t fixed = type == DN_SPOOL_RECORD_EVENT_AT ? EVENT_AT_FIXED : EVENT_FIXED;
    if (len < fixed) return false;
    uint32_t room = len - fixed; /* bytes left for body, user agent and ip */
    const uint8_t *p = payload;
    ev->key = p;
    p += KEY_LEN;
    ev->order = get_u64(p);
    p += 8;
    ev->emitted_ms = 0;
    if (type == DN_SPOOL_RECORD_EVENT_AT) {
        ev->emitted_ms = (int64_t)get_u64(p);
        p += 8;
    }
    ev->body_len = get_u32(p);
    p += 4;
    if (ev->body_len > room) return false;
    room -= ev->body_len;
    ev->body = (const char *)p;
    p += ev->body_len;
    ev->user_agent_len = get_u16(p);
    p += 2;
    if (ev->user_agent_len > room) return false;
    room -= ev->user_agent_len;
    ev->user_agent = (const char *)p;
    p += ev->user_agent_len;
    ev->client_ip_len = get_u16(p);
    p += 2;
    if (ev->client_ip_len != room) return false;
    ev->client_ip = (const char *)p;
    return true;
}

bool dn_spool_record_parse(const uint8_t *data, uint64_t avail, dn_spool_record *r)
{
    if (avail < HEADER || get_u32(data) != RECORD_MAGIC) return false;
    uint32_t payload_len = get_u32(data + 4);
    if (payload_len > avail - HEADER) return false;
    if (record_crc(data, payload_len) != get_u32(data + 8)) return false;
    r->type = data[HEADER - 1];
    r->payload = data + HEADER;
    r->payload_len = payload_len;
    r->size = HEADER + (uint64_t)payload_len;
    dn_spool_event_fields ev;
    if (dn_spool_record_is_event(r->type))
        return event_fields_read(r->type, r->payload, payload_len, &ev);
    return r->type == DN_SPOOL_RECORD_DONE && payload_len == KEY_LEN;
}

void dn_spool_event_decode(const dn_spool_record *r, dn_spool_event_fields *fields)
{
    event_fields_read(r->type, r->payload, r->payload_len, fields);
}

uint64_t dn_spool_event_record_size(int64_t emitted_ms, size_t body_len, size_t user_agent_len,
                                    size_t client_ip_len)
{
    uint32_t fixed = emitted_ms > 0 ? EVENT_AT_FIXED : EVENT_FIXED;
    if (user_agent_len > UINT16_MAX || client_ip_len > UINT16_MAX ||
        body_len > UINT32_MAX - fixed - user_agent_len - client_ip_len)
        return 0;
    return HEADER + (uint64_t)fixed + body_len + user_agent_len + client_ip_len;
}

static void append_u16(dn_buf *b, uint16_t v)
{
    uint8_t bytes[2];
    put_u16(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

static void append_u32(dn_buf *b, uint32_t v)
{
    uint8_t bytes[4];
    put_u32(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

static void append_u64(dn_buf *b, uint64_t v)
{
    uint8_t bytes[8];
    put_u64(bytes, v);
    dn_buf_append(b, bytes, sizeof bytes);
}

bool dn_spool_event_encode(dn_buf *b, const dn_spool_event_fields *ev)
{
    uint64_t size = dn_spool_event_record_size(ev->emitted_ms, ev->body_len, ev->user_agent_len,
                                               ev->client_ip_len);
    dn_buf_clear(b);
    if (size == 0 || !dn_buf_reserve(b, (size_t)size)) return false;
    uint8_t header[HEADER] = {0};
    put_u32(header, RECORD_MAGIC);
    put_u32(header + 4, (uint32_t)(size - HEADER));
    header[HEADER - 1] = ev->emitted_ms > 0 ? DN_SPOOL_RECORD_EVENT_AT : DN_SPOOL_RECORD_EVENT;
    dn_buf_append(b, header, sizeof header);
    dn_buf_append(b, ev->key, KEY_LEN);
    append_u64(b, ev->order);
    if (ev->emitted_ms > 0) append_u64(b, (uint64_t)ev->emitted_ms);
    append_u32(b, ev->body_len);
    dn_buf_append(b, ev->body, ev->body_len);
    append_u16(b, ev->user_agent_len);
    dn_buf_append(b, ev->user_agent, ev->user_agent_len);
    append_u16(b, ev->client_ip_len);
    dn_buf_append(b, ev->client_ip, ev->client_ip_len);
    if (b->failed) return false;
    seal((uint8_t *)b->data);
    return true;
}

void dn_spool_done_encode(uint8_t out[DN_SPOOL_DONE_RECORD_SIZE],
                          const uint8_t key[DN_SPOOL_KEY_LEN])
{
    put_u32(out, RECORD_MAGIC);
    put_u32(out + 4, KEY_LEN);
    out[HEADER - 1] = DN_SPOOL_RECORD_DONE;
    memcpy(out + HEADER, key, KEY_LEN);
    seal(out);
}

void dn_spool_event_set_order(uint8_t *record, uint64_t order)
{
    put_u64(record + EVENT_ORDER, order);
    seal(record);
}
