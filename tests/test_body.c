/* The event body written around lua-cjson's metadata: all eight members, in order,
 * nulls where unknown, strings quoted, and well-formed JSON whatever the bytes. */
#include "body.h"
#include "check.h"
#include "json.h"

#define USER_ID    "0f8fad5b-d9cb-469f-a165-70867728950e-1770179530638"
#define SESSION_ID "SESSION-6ba7b810-9dad-41d1-80b4-00c04fd430c8-1770179000000"

static dn_body_text text(const char *s)
{
    return (dn_body_text){s, s ? strlen(s) : 0};
}

static dn_body_fields anonymous(const char *event, const char *metadata)
{
    return (dn_body_fields){
        .user_id = text(USER_ID),
        .session_id = text(SESSION_ID),
        .event = text(event),
        .metadata_json = metadata,
        .metadata_json_len = strlen(metadata),
    };
}

static void on_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    (void)key;
    (void)key_len;
    (void)value;
    ++*(int *)ud;
}

static int members_of(const dn_buf *b)
{
    int members = 0;
    return dn_json_object_scan(b->data, b->len, on_member, &members) ? members : -1;
}

/* The body written for f is exactly want, and has the eight members. */
static void check_written(const dn_body_fields *f, const char *want)
{
    dn_buf b;
    dn_buf_init(&b);
    dn_body_write(&b, f);
    CHECK_MEM_EQ(b.data, b.len, want, strlen(want));
    CHECK_INT_EQ(members_of(&b), 8);
    dn_buf_free(&b);
}

static void test_anonymous_visitor(void)
{
    dn_body_fields f = anonymous("page_view", "{}");
    check_written(&f, "{\"userId\":\"" USER_ID "\",\"sessionId\":\"" SESSION_ID "\","
                      "\"sessionStartPage\":null,\"referrerUrl\":null,"
                      "\"hasCustomerAccount\":false,\"customersId\":null,"
                      "\"event\":\"page_view\",\"metadata\":{}}");
}

static void test_every_member_given(void)
{
    dn_body_fields f = anonymous("add_to_cart", "{\"productId\":\"p_81\",\"quantity\":1}");
    f.session_start_page = text("/products/shoes");
    f.referrer_url = text("https://google.com/");
    f.has_customer_account = true;
    f.customers_id = text("c_42");
    check_written(&f, "{\"userId\":\"" USER_ID "\",\"sessionId\":\"" SESSION_ID "\","
                      "\"sessionStartPage\":\"/products/shoes\","
                      "\"referrerUrl\":\"https://google.com/\","
                      "\"hasCustomerAccount\":true,\"customersId\":\"c_42\","
                      "\"event\":\"add_to_cart\","
                      "\"metadata\":{\"productId\":\"p_81\",\"quantity\":1}}");
}

/* Quotes, backslashes, CR/LF, NUL and other control bytes stay inside their string;
 * the decoded value is the bytes given. */
static void test_strings_are_escaped(void)
{
    static const char hostile[] = "a\"b\\c\r\nSet-Cookie: x=1\0\x01\x1f\x7f\xff end";
    dn_buf b;
    dn_buf_init(&b);
    dn_body_fields f = anonymous("x", "{}");
    f.referrer_url = (dn_body_text){hostile, sizeof hostile - 1};
    f.event = (dn_body_text){hostile, sizeof hostile - 1};
    dn_body_write(&b, &f);
    CHECK_INT_EQ(members_of(&b), 8);
    CHECK(memchr(b.data, '\r', b.len) == NULL && memchr(b.data, '\n', b.len) == NULL);
    CHECK(memchr(b.data, '\0', b.len) == NULL);
    const char *field = strstr(b.data, "\"referrerUrl\":");
    CHECK(field != NULL);
    if (field) {
        dn_json_value v = {DN_JSON_STRING, field + strlen("\"referrerUrl\":\""), 0};
        const char *end = strstr(v.raw, "\",\"hasCustomerAccount\"");
        CHECK(end != NULL);
        if (end) {
            v.len = (size_t)(end - v.raw);
            dn_buf decoded;
            dn_buf_init(&decoded);
            CHECK(dn_json_string_decode(&v, &decoded));
            CHECK_MEM_EQ(decoded.data, decoded.len, hostile, sizeof hostile - 1);
            dn_buf_free(&decoded);
        }
    }
    dn_buf_free(&b);
}

/* The buffer is reused: a short body after a long one holds only the short one. */
static void test_buffer_reuse(void)
{
    dn_buf b;
    dn_buf_init(&b);
    char big[4096];
    memset(big, 'Z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dn_body_fields f = anonymous("x", "{}");
    f.customers_id = text(big);
    dn_body_write(&b, &f);
    CHECK(b.len > sizeof big);
    dn_body_fields small = anonymous("y", "{}");
    dn_body_write(&b, &small);
    CHECK_INT_EQ(members_of(&b), 8);
    CHECK(b.len < 300);
    CHECK(memchr(b.data, 'Z', b.len) == NULL);
    dn_buf_free(&b);
}

int main(void)
{
    RUN_CASE(test_anonymous_visitor);
    RUN_CASE(test_every_member_given);
    RUN_CASE(test_strings_are_escaped);
    RUN_CASE(test_buffer_reuse);
    return check_report("test_body");
}
