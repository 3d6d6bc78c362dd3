#include "config.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dn_config_defaults(dn_config *c)
{
    memset(c, 0, sizeof *c);
    c->timeout_ms = 10000;
    c->connect_timeout_ms = 5000;
    c->max_queue = 10000;
    c->max_queue_bytes = 32 * 1024 * 1024;
    c->max_in_flight = 0;
    c->max_in_flight_cap = 256;
    c->max_connections = 32;
    c->max_retries = 5;
    c->max_body = 65536;
    c->retry_base_ms = 500;
    c->retry_max_ms = 60000;
    c->max_age_ms = (int64_t)24 * 3600 * 1000;
    c->session_timeout_ms = 1800 * 1000;
    c->spool_sync = DN_SPOOL_SYNC_INTERVAL;
    c->spool_interval_ms = 1000;
    c->spool_max_bytes = (size_t)64 << 20;
}

void dn_config_free(dn_config *c)
{
    free(c->endpoint);
    free(c->user_agent);
    free(c->ca_file);
    free(c->ca_path);
    free(c->proxy);
    free(c->spool_dir);
    curl_slist_free_all(c->headers);
    memset(c, 0, sizeof *c);
}

bool dn_config_set_string(char **field, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value))) return false;
    free(*field);
    *field = copy;
    return true;
}

bool dn_config_add_header(dn_config *c, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line) return false;
    /* "Name:" with an empty value would tell curl to remove the header: send it empty. */
    if (*value)
        snprintf(line, n, "%s: %s", name, value);
    else
        snprintf(line, n, "%s;", name);
    struct curl_slist *grown = curl_slist_append(c->headers, line);
    free(line);
    if (!grown) return false;
    c->headers = grown;
    return true;
}

bool dn_config_is_single_line(const char *s, size_t len)
{
    return strlen(s) == len && !strpbrk(s, "\r\n");
}

bool dn_config_is_header_name(const char *s, size_t len)
{
    if (len == 0 || strlen(s) != len) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !strchr("!#$%&'*+-.^_`|~", c)) return false;
    }
    return true;
}

bool dn_config_is_reserved_header(const char *name)
{
    static const char *const reserved[] = {
        "content-type", "content-length",  "transfer-encoding",  "host", "expect",
        "connection",   "idempotency-key", "x-dukanext-attempt", NULL,
    };
    for (size_t i = 0; reserved[i]; i++)
        if (curl_strequal(name, reserved[i])) return true;
    return false;
}

bool dn_config_is_client_ip(const char *s, size_t len)
{
    if (len == 0 || len > DN_CLIENT_IP_MAX || strlen(s) != len) return false;
    /* One address or an X-Forwarded-For list of them. */
    return strspn(s, "0123456789abcdefABCDEF.:, []") == len;
}

bool dn_config_is_user_agent(const char *s, size_t len)
{
    return len <= DN_USER_AGENT_MAX && dn_config_is_single_line(s, len);
}
