/* What the answer to one attempt means, and when the next attempt may start. */
#ifndef DN_POLICY_H
#define DN_POLICY_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dn_verdict {
    DN_VERDICT_DELIVERED,
    DN_VERDICT_RETRY,   /* the server answered: worth another attempt after a pause */
    DN_VERDICT_OFFLINE, /* no server was reached: wait for the network to come back */
    DN_VERDICT_FAILED,  /* another attempt would get the same answer */
} dn_verdict;

/* 2xx delivered; 408, 429 and 5xx but 501 and 505 retried; everything else failed. */
dn_verdict dn_verdict_for_status(long status);
/* Transport failures: no network (DNS, connect, a dropped connection, a timeout) is
 * waited out, another fault of the transfer is retried, a refusal by policy (TLS
 * verification, a disallowed redirect) is not. */
dn_verdict dn_verdict_for_curl(CURLcode code);
/* The stable upper-case code on_error reports for a transport failure. */
const char *dn_curl_error_code(CURLcode code);

/* Full jitter: a uniform delay in [0, min(max_ms, base_ms * 2^(retry-1))]; retry
 * counts from 1. random is any uniformly random 64-bit value. */
int64_t dn_backoff_ms(unsigned retry, int64_t base_ms, int64_t max_ms, uint64_t random);

#define DN_CODE_MAX 64
/* Copies the "code" member of a JSON error answer into out when it is an upper-case
 * identifier; false when the answer carries none. */
bool dn_answer_code(const char *body, size_t len, char out[DN_CODE_MAX + 1]);

#endif
