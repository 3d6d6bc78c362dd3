/* A client's settings: the defaults, and the checks of what a user gives. */
#include "check.h"
#include "config.h"

#include <curl/curl.h>
#include <stdlib.h>

static void test_header_names(void)
{
    CHECK(dn_config_is_header_name("X-Shop", 6));
    CHECK(dn_config_is_header_name("a!#$%&'*+-.^_`|~9", 17));
    CHECK(!dn_config_is_header_name("", 0));
    CHECK(!dn_config_is_header_name("X Shop", 6));
    CHECK(!dn_config_is_header_name("X:Shop", 6));
    CHECK(!dn_config_is_header_name("X\0S", 3));
    CHECK(!dn_config_is_header_name("caf\xc3\xa9", 5));
}

static void test_reserved_headers(void)
{
    CHECK(dn_config_is_reserved_header("Content-Type"));
    CHECK(dn_config_is_reserved_header("IDEMPOTENCY-KEY"));
    CHECK(dn_config_is_reserved_header("x-dukanext-attempt"));
    CHECK(dn_config_is_reserved_header("Host"));
    CHECK(!dn_config_is_reserved_header("X-Shop"));
    CHECK(!dn_config_is_reserved_header("Content-Type2"));
}

static void test_single_line_and_user_agent(void)
{
    CHECK(dn_config_is_single_line("Mozilla/5.0", 11));
    CHECK(dn_config_is_single_line("", 0));
    CHECK(!dn_config_is_single_line("a\nb", 3));
    CHECK(!dn_config_is_single_line("a\rb", 3));
    CHECK(!dn_config_is_single_line("a\0b", 3));
    char ua[DN_USER_AGENT_MAX + 2];
    memset(ua, 'u', sizeof ua);
    ua[DN_USER_AGENT_MAX] = '\0';
    CHECK(dn_config_is_user_agent(ua, DN_USER_AGENT_MAX));
    ua[DN_USER_AGENT_MAX] = 'u';
    ua[DN_USER_AGENT_MAX + 1] = '\0';
    CHECK(!dn_config_is_user_agent(ua, DN_USER_AGENT_MAX + 1));
    CHECK(!dn_config_is_user_agent("a\nb", 3));
}

static void test_client_ip(void)
{
    CHECK(dn_config_is_client_ip("203.0.113.7", 11));
    CHECK(dn_config_is_client_ip("2001:db8::1", 11));
    CHECK(dn_config_is_client_ip("[2001:db8::1]", 13));
    CHECK(dn_config_is_client_ip("203.0.113.7, 10.0.0.1", 21));
    CHECK(!dn_config_is_client_ip("", 0));
    CHECK(!dn_config_is_client_ip("localhost", 9));
    CHECK(!dn_config_is_client_ip("1.2.3.4\n", 8));
    CHECK(!dn_config_is_client_ip("1.2\0.3", 6));
    char many[DN_CLIENT_IP_MAX + 2];
    memset(many, '1', sizeof many);
    many[DN_CLIENT_IP_MAX] = '\0';
    CHECK(dn_config_is_client_ip(many, DN_CLIENT_IP_MAX));
    many[DN_CLIENT_IP_MAX] = '1';
    many[DN_CLIENT_IP_MAX + 1] = '\0';
    CHECK(!dn_config_is_client_ip(many, DN_CLIENT_IP_MAX + 1));
}

static void test_defaults_and_fields(void)
{
    dn_config c;
    dn_config_defaults(&c);
    CHECK(c.endpoint == NULL);
    CHECK_INT_EQ(c.timeout_ms, 10000);
    CHECK_UINT_EQ(c.max_queue, 10000);
    CHECK_INT_EQ(c.session_timeout_ms, 1800 * 1000);
    CHECK_INT_EQ(c.spool_sync, DN_SPOOL_SYNC_INTERVAL);
    CHECK(dn_config_set_string(&c.endpoint, "http://a/"));
    CHECK_STR_EQ(c.endpoint, "http://a/");
    CHECK(dn_config_set_string(&c.endpoint, NULL));
    CHECK(c.endpoint == NULL);
    CHECK(dn_config_add_header(&c, "X-Shop", "one"));
    CHECK(dn_config_add_header(&c, "X-Empty", ""));
    if (CHECK(c.headers != NULL) && CHECK(c.headers->next != NULL)) {
        CHECK_STR_EQ(c.headers->data, "X-Shop: one");
        /* "X-Empty:" would tell curl to remove the header. */
        CHECK_STR_EQ(c.headers->next->data, "X-Empty;");
    }
    dn_config_free(&c);
    CHECK(c.headers == NULL);
}

int main(void)
{
    RUN_CASE(test_header_names);
    RUN_CASE(test_reserved_headers);
    RUN_CASE(test_single_line_and_user_agent);
    RUN_CASE(test_client_ip);
    RUN_CASE(test_defaults_and_fields);
    return check_report("test_config");
}
