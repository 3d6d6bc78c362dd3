/* The endpoint rules: what is refused and why, and userinfo hidden whenever a URL is
 * shown. */
#include "check.h"
#include "url.h"

static void check_problem(const char *url, const char *expected_start)
{
    const char *problem = dn_url_problem(url, strlen(url));
    if (!expected_start) {
        if (problem) FAIL("%s: unexpected problem \"%s\"", url, problem);
        return;
    }
    if (!problem || strncmp(problem, expected_start, strlen(expected_start)) != 0)
        FAIL("%s: problem \"%s\", expected \"%s...\"", url, problem ? problem : "(none)",
             expected_start);
}

static void test_problems(void)
{
    check_problem("http://127.0.0.1:8080/x", NULL);
    check_problem("https://user:pw@example.com/access/api/v1/analytics", NULL);
    check_problem("HTTPS://example.com", NULL);
    check_problem("127.0.0.1:8080/x", "has no scheme: http:// or https:// is required");
    check_problem("localhost:8080/x", "has no scheme: http:// or https:// is required");
    check_problem("example.com/x", "has no scheme: http:// or https:// is required");
    check_problem("", "has no scheme");
    check_problem("gopher://x/", "must be an http:// or https:// URL");
    check_problem("file:///etc/passwd", "must be an http:// or https:// URL");
    check_problem("http://", "is not a valid URL");
    check_problem("http://x/\r\nHost: y", "must not contain NUL, CR or LF");
    CHECK_STR_EQ(dn_url_problem("http://x/\0y", 11), "must not contain NUL, CR or LF");
    static char huge[DN_URL_MAX + 64];
    memset(huge, 'a', sizeof huge - 1);
    memcpy(huge, "http://x/", 9);
    check_problem(huge, "must be at most 8192 bytes long");
}

static void check_redact(const char *url, const char *expected)
{
    char out[256];
    size_t n = dn_url_redact(url, strlen(url), out, sizeof out);
    CHECK_STR_EQ(out, expected);
    CHECK_UINT_EQ(n, strlen(expected));
}

static void test_redact(void)
{
    check_redact("https://user:secret@example.com/x", "https://***@example.com/x");
    check_redact("http://user@example.com", "http://***@example.com");
    check_redact("http://a:b@c@example.com:81/p?q=x@y#f@g",
                 "http://***@example.com:81/p?q=x@y#f@g");
    check_redact("http://example.com/p?mail=a@b", "http://example.com/p?mail=a@b");
    check_redact("user:pw@host/x", "***@host/x");
    check_redact("gopher://u:p@x/", "gopher://***@x/");
    check_redact("", "");
    /* Cut to the room given, still NUL-terminated, the secret never shown. */
    char small[12];
    dn_url_redact("http://user:secret@h/", 21, small, sizeof small);
    CHECK_STR_EQ(small, "http://***@");
    CHECK_UINT_EQ(dn_url_redact("x", 1, small, 0), 0);
}

int main(void)
{
    RUN_CASE(test_problems);
    RUN_CASE(test_redact);
    return check_report("test_url");
}
