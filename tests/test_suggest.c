/* "Did you mean": folded names, aliases, near misses, and no suggestion for names
 * that resemble nothing. */
#include "check.h"
#include "suggest.h"

static const char *const options[] = {"endpoint",    "on_error",  "timeout", "connect_timeout",
                                      "max_retries", "retry_max", "spool",   NULL};
static const dn_alias option_aliases[] = {{"url", "endpoint"}, {"uri", "endpoint"}, {NULL, NULL}};
static const char *const fields[] = {"referrerUrl", "userAgent", "clientIp", NULL};
static const dn_alias field_aliases[] = {{"referer", "referrerUrl"}, {NULL, NULL}};

static void check_suggest(const char *name, const char *const *known, const dn_alias *aliases,
                          const char *expected)
{
    const char *got = dn_suggest(name, known, aliases);
    if (!expected && got) FAIL("%s: suggested %s, expected nothing", name, got);
    if (expected && (!got || strcmp(got, expected) != 0))
        FAIL("%s: suggested %s, expected %s", name, got ? got : "nothing", expected);
}

static void test_folded_names(void)
{
    check_suggest("onError", options, option_aliases, "on_error");
    check_suggest("ON-ERROR", options, option_aliases, "on_error");
    check_suggest("maxRetries", options, option_aliases, "max_retries");
    check_suggest("user_agent", fields, field_aliases, "userAgent");
    check_suggest("client_ip", fields, field_aliases, "clientIp");
}

static void test_aliases(void)
{
    check_suggest("url", options, option_aliases, "endpoint");
    check_suggest("URL", options, option_aliases, "endpoint");
    check_suggest("referer", fields, field_aliases, "referrerUrl");
    check_suggest("referer", fields, NULL, NULL);
}

static void test_near_misses(void)
{
    check_suggest("endpont", options, option_aliases, "endpoint");
    check_suggest("timout", options, option_aliases, "timeout");
    check_suggest("spol", options, option_aliases, "spool");
    check_suggest("retry_maxx", options, option_aliases, "retry_max");
}

static void test_nothing_close(void)
{
    check_suggest("colour", options, option_aliases, NULL);
    check_suggest("x", options, option_aliases, NULL);
    check_suggest("", options, option_aliases, NULL);
    check_suggest("__", options, option_aliases, NULL);
    char long_name[200];
    memset(long_name, 'e', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    check_suggest(long_name, options, option_aliases, NULL);
}

int main(void)
{
    RUN_CASE(test_folded_names);
    RUN_CASE(test_aliases);
    RUN_CASE(test_near_misses);
    RUN_CASE(test_nothing_close);
    return check_report("test_suggest");
}
