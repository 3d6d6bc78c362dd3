/* "Did you mean": the known name closest to one that is not known. */
#ifndef DN_SUGGEST_H
#define DN_SUGGEST_H

/* A name users write for another: {"url", "endpoint"}. */
typedef struct dn_alias {
    const char *written;
    const char *meant;
} dn_alias;

/* The name of known (NULL-terminated) that name most likely meant, or NULL. Case,
 * '_' and '-' do not count ("onError" -> "on_error"); then aliases (may be NULL,
 * ends with {NULL, NULL}); then the nearest by edit distance, when it is within a
 * third of the name's length. */
const char *dn_suggest(const char *name, const char *const *known, const dn_alias *aliases);

#endif
