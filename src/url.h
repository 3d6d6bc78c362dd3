/* Rules about the endpoint URL: what makes it unusable, and how it is shown. */
#ifndef DN_URL_H
#define DN_URL_H

#include <stdbool.h>
#include <stddef.h>

#define DN_URL_MAX 8192

/* Why url (len bytes, may hold NUL) cannot be an endpoint, or NULL when it can: an
 * http or https URL with a host, one line, at most DN_URL_MAX bytes. */
const char *dn_url_problem(const char *url, size_t len);

/* Writes url into out (size bytes, NUL-terminated, cut when it does not fit) with the
 * user name and password of its authority, when it has any, replaced by three
 * asterisks (tests/test_url.c shows examples). Works on text that is not a valid URL
 * too, since an error message may have to show one. Answers the bytes written. */
size_t dn_url_redact(const char *url, size_t len, char *out, size_t size);

#endif
