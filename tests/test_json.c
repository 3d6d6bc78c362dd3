/* The JSON reader and writer of the stored records and of servers' error answers. */
#include "check.h"
#include "json.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* Copies, so a member outlives the text it was read from. */
typedef struct member {
    char key[64];
    dn_json_type type;
    char raw[2048];
    size_t raw_len;
    dn_json_value value; /* points into the scanned text */
} member;

typedef struct members {
    member list[16];
    size_t count;
} members;

static void collect_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    members *m = ud;
    if (m->count == sizeof m->list / sizeof m->list[0] || key_len >= sizeof m->list[0].key ||
        value->len > sizeof m->list[0].raw) {
        FAIL("member too large for the test's collector");
        return;
    }
    member *slot = &m->list[m->count++];
    memcpy(slot->key, key, key_len);
    slot->key[key_len] = '\0';
    slot->type = value->type;
    memcpy(slot->raw, value->raw, value->len);
    slot->raw_len = value->len;
    slot->value = *value;
}

/* The text is copied into a buffer of exactly its length, so reading one byte past
 * the end shows up under valgrind and the sanitizers. */
static bool scan_exact(const char *text, size_t len, members *out)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    members ignored;
    members *m = out ? out : &ignored;
    m->count = 0;
    bool ok = dn_json_object_scan(copy, len, collect_member, m);
    free(copy);
    return ok;
}

static bool scan(const char *text, members *out)
{
    return scan_exact(text, strlen(text), out);
}

/* The value of `{"v":<json>}`, which must scan; the value points into text. */
static bool value_of(const char *text, dn_json_value *out)
{
    members m = {0};
    if (!dn_json_object_scan(text, strlen(text), collect_member, &m) || m.count != 1) return false;
    *out = m.list[0].value;
    return true;
}

static void check_member(const members *m, size_t i, const char *key, dn_json_type type,
                         const char *raw)
{
    if (!CHECK(i < m->count)) return;
    CHECK_STR_EQ(m->list[i].key, key);
    CHECK_INT_EQ(m->list[i].type, type);
    CHECK_MEM_EQ(m->list[i].raw, m->list[i].raw_len, raw, strlen(raw));
}

static void test_scan_reports_top_level_members(void)
{
    const char *text = "{\"s\":\"a\\\"b\",\"n\":-1.5e+3,\"t\":true,\"f\":false,\"z\":null,"
                       "\"o\":{\"a\":[1,2,{\"b\":null}],\"c\":\"}\"},\"a\":[[],{}],\"e\":{},"
                       "\"i\":0,\"x\":2E-7}";
    members m;
    if (!CHECK(scan(text, &m))) return;
    CHECK_UINT_EQ(m.count, 10);
    check_member(&m, 0, "s", DN_JSON_STRING, "a\\\"b");
    check_member(&m, 1, "n", DN_JSON_NUMBER, "-1.5e+3");
    check_member(&m, 2, "t", DN_JSON_TRUE, "true");
    check_member(&m, 3, "f", DN_JSON_FALSE, "false");
    check_member(&m, 4, "z", DN_JSON_NULL, "null");
    check_member(&m, 5, "o", DN_JSON_OBJECT, "{\"a\":[1,2,{\"b\":null}],\"c\":\"}\"}");
    check_member(&m, 6, "a", DN_JSON_ARRAY, "[[],{}]");
    check_member(&m, 7, "e", DN_JSON_OBJECT, "{}");
    check_member(&m, 8, "i", DN_JSON_NUMBER, "0");
    check_member(&m, 9, "x", DN_JSON_NUMBER, "2E-7");
}

static void test_scan_allows_whitespace(void)
{
    members m;
    CHECK(scan(" \t\r\n{ \"a\" :\t1 ,\r\n\"b\" : [ 1 , { } ] ,\"c\":\"\" }\n ", &m));
    CHECK_UINT_EQ(m.count, 3);
    check_member(&m, 0, "a", DN_JSON_NUMBER, "1");
    check_member(&m, 1, "b", DN_JSON_ARRAY, "[ 1 , { } ]");
    check_member(&m, 2, "c", DN_JSON_STRING, "");

    CHECK(scan("{}", &m));
    CHECK_UINT_EQ(m.count, 0);
    CHECK(scan("  {  }  ", &m));
    CHECK_UINT_EQ(m.count, 0);
}

static void test_scan_keys_stay_escaped(void)
{
    members m;
    CHECK(scan("{\"a\\\"b\":1,\"\\u0069d\":2,\"\":3}", &m));
    CHECK_UINT_EQ(m.count, 3);
    check_member(&m, 0, "a\\\"b", DN_JSON_NUMBER, "1");
    check_member(&m, 1, "\\u0069d", DN_JSON_NUMBER, "2");
    check_member(&m, 2, "", DN_JSON_NUMBER, "3");
    CHECK(!dn_json_key_is(m.list[1].key, strlen(m.list[1].key), "id"));
}

static void test_scan_accepts_valid_strings_and_numbers(void)
{
    const char *good[] = {
        "{\"v\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\uABCD\\uffff\"}",
        "{\"v\":\"\x7f \xc3\xa9 \xf0\x9f\x98\x80\"}",
        "{\"v\":0}",
        "{\"v\":-0}",
        "{\"v\":-0.0}",
        "{\"v\":10}",
        "{\"v\":1.25}",
        "{\"v\":1e5}",
        "{\"v\":1E+5}",
        "{\"v\":1e-05}",
        "{\"v\":-12.5e10}",
        "{\"v\":0e0}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!scan(good[i], NULL)) FAIL("refused: %s", good[i]);
}

static void test_scan_refuses_other_top_levels(void)
{
    const char *bad[] = {"",     "   ", "[]",  "[{}]", "\"{}\"", "1",       "true",
                         "null", "{",   "}",   "{{}}", "{[]}",   "{}{}",    "{} x",
                         "{}}",  "{},", "{};", "x{}",  "{}[]",   "{} \"\"", "\xef\xbb\xbf{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (scan(bad[i], NULL)) FAIL("accepted: %s", bad[i]);
}

static void test_scan_refuses_malformed(void)
{
    const char *bad[] = {
        "{\"a\":1,}",
        "{,}",
        "{,\"a\":1}",
        "{\"a\":1,,\"b\":2}",
        "{\"a\":[1,]}",
        "{\"a\":[,1]}",
        "{\"a\":{\"b\":1,}}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{\"a\"}",
        "{\"a\":1 \"b\":2}",
        "{a:1}",
        "{'a':1}",
        "{\"a\":'x'}",
        "{\"a\":1]",
        "{\"a\":[1}",
        "{\"a\":\"x}",
        "{\"a\":\"x",
        "{\"a\":\"x\\\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"line\nbreak\"}",
        "{\"a\":\"\x01\"}",
        "{\"a\":\"\x1f\"}",
        "{\"ke\ny\":1}",
        "{\"a\":\"\\x41\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u12G4\"}",
        "{\"a\":\"\\U0041\"}",
        "{\"a\":\"\\a\"}",
        "{\"a\":\"\\'\"}",
        "{\"a\":\"\\\"}",
        "{\"a\":01}",
        "{\"a\":-01}",
        "{\"a\":00}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":1e}",
        "{\"a\":1e+}",
        "{\"a\":1.5.2}",
        "{\"a\":0x10}",
        "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":NaN}",
        "{\"a\":tru}",
        "{\"a\":truex}",
        "{\"a\":nul}",
        "{\"a\":True}",
        "{\"a\":undefined}",
        "{\"a\":1}\x0c",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (scan(bad[i], NULL)) FAIL("accepted: %s", bad[i]);
}

static void test_scan_refuses_nul_bytes(void)
{
    const char nul_in_string[] = "{\"a\":\"x\0y\"}";
    const char nul_after[] = "{\"a\":1}\0";
    const char nul_before_value[] = "{\"a\":\0 1}";
    CHECK(!scan_exact(nul_in_string, sizeof nul_in_string - 1, NULL));
    CHECK(!scan_exact(nul_after, sizeof nul_after - 1, NULL));
    CHECK(!scan_exact(nul_before_value, sizeof nul_before_value - 1, NULL));
    CHECK(scan_exact(nul_after, sizeof nul_after - 2, NULL));
}

/* An object nested `levels` containers deep, the top-level object counting as one:
 * {"a":[[0]]} or {"a":{"a":{"a":0}}} for 3. */
static char *nested_text(int levels, bool arrays)
{
    char *text = malloc(8 * (size_t)levels + 8);
    size_t n = 0;
    for (int i = 0; i < levels; i++) {
        bool outer_object = i == 0 || !arrays;
        if (outer_object) {
            memcpy(text + n, "{\"a\":", 5);
            n += 5;
        } else {
            text[n++] = '[';
        }
    }
    text[n++] = '0';
    for (int i = levels - 1; i >= 0; i--) text[n++] = i == 0 || !arrays ? '}' : ']';
    text[n] = '\0';
    return text;
}

static void test_scan_depth_limit(void)
{
    /* DN_JSON_MAX_DEPTH counts containers, the top-level object included. */
    for (int arrays = 0; arrays < 2; arrays++) {
        char *at_limit = nested_text(DN_JSON_MAX_DEPTH, arrays);
        char *beyond = nested_text(DN_JSON_MAX_DEPTH + 1, arrays);
        char *shallow = nested_text(2, arrays);
        if (!scan(shallow, NULL)) FAIL("refused: %s", shallow);
        if (!scan(at_limit, NULL)) FAIL("refused at the limit: %s", at_limit);
        if (scan(beyond, NULL)) FAIL("accepted beyond the limit: %s", beyond);
        free(at_limit);
        free(beyond);
        free(shallow);
    }
    /* Far too deep must be refused without exhausting the stack. */
    char *very_deep = nested_text(200000, true);
    CHECK(!scan(very_deep, NULL));
    free(very_deep);
}

static void test_nested_text_helper(void)
{
    char *text = nested_text(3, true);
    CHECK_STR_EQ(text, "{\"a\":[[0]]}");
    free(text);
    text = nested_text(3, false);
    CHECK_STR_EQ(text, "{\"a\":{\"a\":{\"a\":0}}}");
    free(text);
    text = nested_text(1, true);
    CHECK_STR_EQ(text, "{\"a\":0}");
    free(text);
}

static void test_scan_refuses_every_truncation(void)
{
    const char *record = "{\"id\":\"SESSION-0f8fad5b-d9cb-469f-a165-70867728950e-1770179530638\","
                         "\"expires\":1770181330638,\"startPage\":\"https://shop.example/"
                         "caf\\u00e9?q=\\\"x\\\"&e=\\ud83d\\ude00\",\"n\":[1,-2.5e-3,true,false,"
                         "null,{\"k\":\"v\\\\\"}],\"last\":12}";
    size_t full = strlen(record);
    for (size_t len = 0; len < full; len++)
        if (scan_exact(record, len, NULL)) FAIL("accepted the first %zu bytes", len);
    CHECK(scan_exact(record, full, NULL));
}

static bool decode(const char *json_value, dn_buf *out)
{
    char text[256];
    snprintf(text, sizeof text, "{\"v\":%s}", json_value);
    dn_json_value value;
    dn_buf_clear(out);
    return value_of(text, &value) && dn_json_string_decode(&value, out);
}

#define CHECK_DECODES_TO(json_value, bytes)                                                        \
    do {                                                                                           \
        dn_buf decoded_;                                                                           \
        dn_buf_init(&decoded_);                                                                    \
        if (CHECK(decode(json_value, &decoded_)) && CHECK(dn_buf_terminate(&decoded_)))            \
            CHECK_MEM_EQ(decoded_.data, decoded_.len, bytes, sizeof bytes - 1);                    \
        dn_buf_free(&decoded_);                                                                    \
    } while (0)

static void test_decode_short_escapes(void)
{
    CHECK_DECODES_TO("\"plain\"", "plain");
    CHECK_DECODES_TO("\"\"", "");
    CHECK_DECODES_TO("\"a\\nb\"", "a\nb");
    CHECK_DECODES_TO("\"\\t\"", "\t");
    CHECK_DECODES_TO("\"\\\"\"", "\"");
    CHECK_DECODES_TO("\"\\\\\"", "\\");
    CHECK_DECODES_TO("\"\\/\"", "/");
    CHECK_DECODES_TO("\"\\b\"", "\b");
    CHECK_DECODES_TO("\"\\f\"", "\f");
    CHECK_DECODES_TO("\"\\r\"", "\r");
    CHECK_DECODES_TO("\"x\\\\n\\\"y\\\\\"", "x\\n\"y\\");
    CHECK_DECODES_TO("\"caf\xc3\xa9\"", "caf\xc3\xa9");
}

static void test_decode_unicode_escapes(void)
{
    CHECK_DECODES_TO("\"\\u0041\"", "A");
    CHECK_DECODES_TO("\"\\u00e9\"", "\xc3\xa9");
    CHECK_DECODES_TO("\"\\u00E9\"", "\xc3\xa9");
    CHECK_DECODES_TO("\"\\u07ff\"", "\xdf\xbf");
    CHECK_DECODES_TO("\"\\u0800\"", "\xe0\xa0\x80");
    CHECK_DECODES_TO("\"\\u20ac\"", "\xe2\x82\xac");
    CHECK_DECODES_TO("\"\\uffff\"", "\xef\xbf\xbf");
    CHECK_DECODES_TO("\"\\u0000\"", "\0");
    CHECK_DECODES_TO("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80");
    CHECK_DECODES_TO("\"\\uD83D\\uDE00!\"", "\xf0\x9f\x98\x80!");
    CHECK_DECODES_TO("\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf");
}

/* A lone surrogate has no UTF-8 form: U+FFFD, as a browser's TextEncoder writes. */
static void test_decode_lone_surrogates(void)
{
    CHECK_DECODES_TO("\"\\ud83d\"", "\xef\xbf\xbd");
    CHECK_DECODES_TO("\"\\ude00\"", "\xef\xbf\xbd");
    CHECK_DECODES_TO("\"a\\ud83dz\"", "a\xef\xbf\xbdz");
    CHECK_DECODES_TO("\"\\ud83d\\u0041\"", "\xef\xbf\xbd"
                                           "A");
    CHECK_DECODES_TO("\"\\ud83d\\ud83d\\ude00\"", "\xef\xbf\xbd\xf0\x9f\x98\x80");
    CHECK_DECODES_TO("\"\\ude00\\ud83d\"", "\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_DECODES_TO("\"\\ud83d\\n\"", "\xef\xbf\xbd\n");
}

static void test_decode_refuses_non_strings(void)
{
    dn_json_value value;
    dn_buf out;
    dn_buf_init(&out);
    if (CHECK(value_of("{\"v\":12}", &value))) CHECK(!dn_json_string_decode(&value, &out));
    if (CHECK(value_of("{\"v\":null}", &value))) CHECK(!dn_json_string_decode(&value, &out));
    CHECK_UINT_EQ(out.len, 0);
    dn_buf_free(&out);
}

static bool number(const char *json_value, double *out)
{
    char text[128];
    snprintf(text, sizeof text, "{\"v\":%s}", json_value);
    dn_json_value value;
    return value_of(text, &value) && dn_json_number(&value, out);
}

static void test_number(void)
{
    struct {
        const char *text;
        double expected;
    } cases[] = {
        {"0", 0},
        {"-0", 0},
        {"42", 42},
        {"-17", -17},
        {"1770181330638", 1770181330638.0},
        {"9007199254740992", 9007199254740992.0},
        {"1.5", 1.5},
        {"-0.25", -0.25},
        {"1e3", 1000},
        {"1E+3", 1000},
        {"25e-1", 2.5},
        {"1.770181330638e12", 1770181330638.0},
        {"1e300", 1e300},
        {"-1e300", -1e300},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -999;
        if (!number(cases[i].text, &v))
            FAIL("refused: %s", cases[i].text);
        else if (v != cases[i].expected)
            FAIL("%s read as %.17g", cases[i].text, v);
    }
}

static void test_number_out_of_range(void)
{
    double v = 7;
    CHECK(!number("1e400", &v));
    CHECK(!number("-1e400", &v));
    CHECK(!number("1e99999", &v));
    CHECK(v == 7);

    dn_json_value value;
    if (CHECK(value_of("{\"v\":\"12\"}", &value))) CHECK(!dn_json_number(&value, &v));
    if (CHECK(value_of("{\"v\":true}", &value))) CHECK(!dn_json_number(&value, &v));
}

static void append(dn_buf *b, const char *s, size_t len)
{
    dn_buf_clear(b);
    dn_json_string_append(b, s, len);
}

#define CHECK_APPENDS_TO(bytes, json)                                                              \
    do {                                                                                           \
        append(&b, bytes, sizeof bytes - 1);                                                       \
        CHECK_MEM_EQ(b.data, b.len, json, sizeof json - 1);                                        \
    } while (0)

/* The session record's expiry goes through dn_buf_append_int: the same digits as
 * printf's, at the edges too. */
static void test_append_int_matches_printf(void)
{
    const long long values[] = {0,
                                1,
                                -1,
                                9,
                                10,
                                -10,
                                1759904642100LL,
                                -1759904642100LL,
                                LLONG_MAX,
                                LLONG_MIN,
                                LLONG_MIN + 1,
                                1000000000000000000LL};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "%lld", values[i]);
        dn_buf b;
        dn_buf_init(&b);
        dn_buf_append_str(&b, "x");
        dn_buf_append_int(&b, values[i]);
        CHECK(dn_buf_terminate(&b) && strcmp(b.data + 1, want) == 0 && b.data[0] == 'x');
        dn_buf_free(&b);
    }
}

static void test_string_append_escapes(void)
{
    dn_buf b;
    dn_buf_init(&b);
    CHECK_APPENDS_TO("", "\"\"");
    CHECK_APPENDS_TO("plain text", "\"plain text\"");
    CHECK_APPENDS_TO("a\"b", "\"a\\\"b\"");
    CHECK_APPENDS_TO("a\\b", "\"a\\\\b\"");
    CHECK_APPENDS_TO("\n\r\t", "\"\\n\\r\\t\"");
    CHECK_APPENDS_TO("\x01", "\"\\u0001\"");
    CHECK_APPENDS_TO("\0", "\"\\u0000\"");
    CHECK_APPENDS_TO("\x1f", "\"\\u001f\"");
    CHECK_APPENDS_TO("\b\f", "\"\\u0008\\u000c\"");
    CHECK_APPENDS_TO("/", "\"/\"");
    CHECK_APPENDS_TO("\x7f", "\"\x7f\"");
    CHECK_APPENDS_TO("caf\xc3\xa9 \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
    CHECK_APPENDS_TO("\x80\xff\xfe", "\"\x80\xff\xfe\"");
    CHECK_APPENDS_TO("x\"\\\ny", "\"x\\\"\\\\\\ny\"");

    /* Appends after what the buffer holds. */
    dn_buf_clear(&b);
    dn_buf_append_str(&b, "{\"k\":");
    dn_json_string_append(&b, "v", 1);
    CHECK_MEM_EQ(b.data, b.len, "{\"k\":\"v\"", 8);
    dn_buf_free(&b);
}

/* What the writer writes, the reader reads back byte for byte. */
static bool round_trips(const char *bytes, size_t len)
{
    dn_buf text, decoded;
    dn_buf_init(&text);
    dn_buf_init(&decoded);
    dn_buf_append_str(&text, "{\"v\":");
    dn_json_string_append(&text, bytes, len);
    dn_buf_append_char(&text, '}');
    members m = {0};
    bool ok = scan_exact(text.data, text.len, NULL) &&
              dn_json_object_scan(text.data, text.len, collect_member, &m) && m.count == 1 &&
              dn_json_string_decode(&m.list[0].value, &decoded) && decoded.len == len &&
              (len == 0 || memcmp(decoded.data, bytes, len) == 0);
    dn_buf_free(&text);
    dn_buf_free(&decoded);
    return ok;
}

static void test_string_round_trip_every_byte(void)
{
    char all[256];
    for (int c = 0; c < 256; c++) {
        char around[3] = {'x', (char)c, 'y'};
        if (!round_trips(around, sizeof around)) FAIL("byte 0x%02x does not round-trip", c);
        char alone = (char)c;
        if (!round_trips(&alone, 1)) FAIL("byte 0x%02x alone does not round-trip", c);
        all[c] = (char)c;
    }
    CHECK(round_trips(all, sizeof all));
    CHECK(round_trips("", 0));

    /* Every byte at every place of strings long enough for the eight-at-a-time scan,
     * amid plain ASCII and amid bytes above 0x7f, whose borrows the scan must survive. */
    for (int c = 0; c < 256; c++) {
        for (size_t at = 0; at < 17; at++) {
            char text[17];
            memset(text, 'a', sizeof text);
            text[at] = (char)c;
            if (!round_trips(text, sizeof text)) FAIL("byte 0x%02x at %zu among 'a'", c, at);
            memset(text, '\xff', sizeof text);
            text[at] = (char)c;
            if (!round_trips(text, sizeof text)) FAIL("byte 0x%02x at %zu among 0xff", c, at);
        }
    }
}

static void test_key_is(void)
{
    CHECK(dn_json_key_is("id", 2, "id"));
    CHECK(dn_json_key_is("", 0, ""));
    CHECK(!dn_json_key_is("ids", 3, "id"));
    CHECK(!dn_json_key_is("i", 1, "id"));
    CHECK(!dn_json_key_is("ID", 2, "id"));
    CHECK(dn_json_key_is("idx", 2, "id"));
}

int main(void)
{
    RUN_CASE(test_scan_reports_top_level_members);
    RUN_CASE(test_scan_allows_whitespace);
    RUN_CASE(test_scan_keys_stay_escaped);
    RUN_CASE(test_scan_accepts_valid_strings_and_numbers);
    RUN_CASE(test_scan_refuses_other_top_levels);
    RUN_CASE(test_scan_refuses_malformed);
    RUN_CASE(test_scan_refuses_nul_bytes);
    RUN_CASE(test_nested_text_helper);
    RUN_CASE(test_scan_depth_limit);
    RUN_CASE(test_scan_refuses_every_truncation);
    RUN_CASE(test_decode_short_escapes);
    RUN_CASE(test_decode_unicode_escapes);
    RUN_CASE(test_decode_lone_surrogates);
    RUN_CASE(test_decode_refuses_non_strings);
    RUN_CASE(test_number);
    RUN_CASE(test_number_out_of_range);
    RUN_CASE(test_append_int_matches_printf);
    RUN_CASE(test_string_append_escapes);
    RUN_CASE(test_string_round_trip_every_byte);
    RUN_CASE(test_key_is);
    return check_report("test_json");
}
