#include "policy.h"
#include "json.h"

#include <string.h>

dn_verdict dn_verdict_for_status(long status)
{
    if (status >= 200 && status < 300) return DN_VERDICT_DELIVERED;
    if (status == 408 || status == 429) return DN_VERDICT_RETRY;
    if (status >= 500 && status < 600 && status != 501 && status != 505) return DN_VERDICT_RETRY;
    return DN_VERDICT_FAILED;
}

dn_verdict dn_verdict_for_curl(CURLcode code)
{
    switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_FUNCTION_NOT_FOUND:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_LOGIN_DENIED:
        return DN_VERDICT_FAILED;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_SSL_CONNECT_ERROR:
        return DN_VERDICT_RETRY;
    default:
        /* Whatever on_error would call DNS_ERROR, CONNECT_ERROR, TIMEOUT or
         * NETWORK_ERROR: the server was never reached or never answered. */
        return DN_VERDICT_OFFLINE;
    }
}

const char *dn_curl_error_code(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "DNS_ERROR";
    case CURLE_COULDNT_CONNECT:
        return "CONNECT_ERROR";
    case CURLE_OPERATION_TIMEDOUT:
        return "TIMEOUT";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return "TLS_ERROR";
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "PROTOCOL_ERROR";
    case CURLE_TOO_MANY_REDIRECTS:
        return "REDIRECT_ERROR";
    case CURLE_URL_MALFORMAT:
        return "URL_ERROR";
    case CURLE_OUT_OF_MEMORY:
        return "OUT_OF_MEMORY";
    default:
        return "NETWORK_ERROR";
    }
}

int64_t dn_backoff_ms(unsigned retry, int64_t base_ms, int64_t max_ms, uint64_t random)
{
    if (base_ms <= 0 || max_ms <= 0) return 0;
    if (retry == 0) retry = 1;
    int64_t ceiling = base_ms;
    /* Doubling stops before it could overflow: past max_ms / 2 the cap decides. */
    for (unsigned i = 1; i < retry && ceiling < max_ms; i++)
        ceiling = ceiling > max_ms / 2 ? max_ms : ceiling * 2;
    if (ceiling > max_ms) ceiling = max_ms;
    return (int64_t)(random % ((uint64_t)ceiling + 1));
}

typedef struct code_search {
    dn_json_value value;
    bool found;
} code_search;

static void find_code(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    code_search *s = ud;
    if (dn_json_key_is(key, key_len, "code")) {
        s->value = *value;
        s->found = true;
    }
}

bool dn_answer_code(const char *body, size_t len, char out[DN_CODE_MAX + 1])
{
    code_search s = {.found = false};
    if (!body || !dn_json_object_scan(body, len, find_code, &s) || !s.found) return false;
    if (s.value.type != DN_JSON_STRING || s.value.len == 0 || s.value.len > DN_CODE_MAX)
        return false;
    /* Only a plain identifier is passed on: it becomes err.code, which users match on. */
    for (size_t i = 0; i < s.value.len; i++) {
        char c = s.value.raw[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    memcpy(out, s.value.raw, s.value.len);
    out[s.value.len] = '\0';
    return true;
}
