#include "url.h"

#include <curl/curl.h>
#include <string.h>

/* "gopher://", "http//host": something before "://" or a scheme-like word. */
static bool has_scheme(const char *url, size_t len)
{
    const char *sep = memchr(url, ':', len);
    if (!sep || sep == url) return false;
    for (const char *p = url; p < sep; p++) {
        char c = *p;
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
        if (!letter && !(p > url && other)) return false;
    }
    return (size_t)(sep - url) + 3 <= len && sep[1] == '/' && sep[2] == '/';
}

const char *dn_url_problem(const char *url, size_t len)
{
    if (len > DN_URL_MAX) return "must be at most 8192 bytes long";
    if (strlen(url) != len || memchr(url, '\r', len) || memchr(url, '\n', len))
        return "must not contain NUL, CR or LF";
    if (!has_scheme(url, len))
        return "has no scheme: http:// or https:// is required (\"https://host/path\")";
    CURLU *u = curl_url();
    if (!u) return "could not be checked (out of memory)";
    const char *problem = NULL;
    char *scheme = NULL, *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        problem = "is not a valid URL";
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (!curl_strequal(scheme, "http") && !curl_strequal(scheme, "https"))) {
        problem = "must be an http:// or https:// URL";
    } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        problem = "has no host";
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return problem;
}

static size_t append(char *out, size_t size, size_t at, const char *s, size_t n)
{
    if (at + 1 >= size) return at;
    size_t room = size - 1 - at;
    if (n > room) n = room;
    memcpy(out + at, s, n);
    out[at + n] = '\0';
    return at + n;
}

size_t dn_url_redact(const char *url, size_t len, char *out, size_t size)
{
    if (size == 0) return 0;
    out[0] = '\0';
    /* The authority runs from after "//" (or from the start) to the first / ? or #;
     * what comes before its last '@' is userinfo. */
    size_t start = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (url[i] == '/' && url[i + 1] == '/') {
            start = i + 2;
            break;
        }
    }
    size_t end = start;
    while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#') end++;
    size_t at_sign = end;
    for (size_t i = start; i < end; i++)
        if (url[i] == '@') at_sign = i;
    if (at_sign == end) return append(out, size, 0, url, len);
    size_t n = append(out, size, 0, url, start);
    n = append(out, size, n, "***", 3);
    return append(out, size, n, url + at_sign, len - at_sign);
}
