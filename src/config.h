/* A client's settings: their fields and defaults, and the checks of the values a user
 * gives (header names and values, a visitor's user agent and client ip), which hold
 * whatever language the values come from; the endpoint's rules are url.c's. The
 * binding turns Lua values into these; each check answers, the binding words the
 * error. */
#ifndef DN_CONFIG_H
#define DN_CONFIG_H

#include "spool.h"
#include "transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Also what lua/dukanext/ngx.lua cuts a request's User-Agent to (dukanext.USER_AGENT_MAX). */
#define DN_USER_AGENT_MAX 2048
#define DN_CLIENT_IP_MAX  255

typedef struct dn_config {
    char *endpoint; /* NULL: nothing is accepted (NO_ENDPOINT) */
    char *user_agent;
    char *ca_file;
    char *ca_path;
    char *proxy;
    bool insecure;
    dn_http_version http_version;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    size_t max_queue;
    size_t max_queue_bytes;
    size_t max_in_flight;     /* 0: auto (the concurrency rule), else fixed */
    size_t max_in_flight_cap; /* auto's ceiling */
    size_t max_connections;   /* per host: HTTP/1.1 carries one attempt per connection */
    size_t max_retries;
    size_t max_body;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t max_age_ms; /* an event not delivered this long after emit is EXPIRED */
    int64_t session_timeout_ms;
    struct curl_slist *headers; /* "Name: value" lines sent with every event */
    char *spool_dir;            /* NULL: events live in memory only */
    dn_spool_sync spool_sync;
    int64_t spool_interval_ms;
    size_t spool_max_bytes;
} dn_config;

void dn_config_defaults(dn_config *config);
void dn_config_free(dn_config *config);
/* Sets a string field of config to a copy of value (NULL clears it). */
bool dn_config_set_string(char **field, const char *value);
bool dn_config_add_header(dn_config *config, const char *name, const char *value);

/* A value that goes into a header line or a curl option: no NUL, CR or LF. */
bool dn_config_is_single_line(const char *s, size_t len);
/* An HTTP token (RFC 9110), without NUL. */
bool dn_config_is_header_name(const char *s, size_t len);
/* Headers dukanext sets itself; letting a user set them would break the protocol. */
bool dn_config_is_reserved_header(const char *name);
/* A visitor's User-Agent as an emit field: one line of at most DN_USER_AGENT_MAX bytes. */
bool dn_config_is_user_agent(const char *s, size_t len);
/* A visitor's address as an emit field: one address or an X-Forwarded-For list. */
bool dn_config_is_client_ip(const char *s, size_t len);

#endif
