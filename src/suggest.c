#include "suggest.h"

#include <stddef.h>
#include <string.h>

/* Longer names are never meant for any of ours. */
#define NAME_MAX_COMPARED 48

/* Lower case without '_' and '-', cut at NAME_MAX_COMPARED bytes. */
static size_t fold(const char *name, char out[NAME_MAX_COMPARED + 1])
{
    size_t n = 0;
    for (const char *p = name; *p && n < NAME_MAX_COMPARED; p++) {
        char c = *p;
        if (c == '_' || c == '-') continue;
        out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return n;
}

/* Levenshtein distance of two folded names, one row at a time. */
static size_t distance(const char *a, size_t a_len, const char *b, size_t b_len)
{
    size_t row[NAME_MAX_COMPARED + 1];
    for (size_t j = 0; j <= b_len; j++) row[j] = j;
    for (size_t i = 1; i <= a_len; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b_len; j++) {
            size_t above = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diagonal + cost;
            if (above + 1 < best) best = above + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
        }
    }
    return row[b_len];
}

const char *dn_suggest(const char *name, const char *const *known, const dn_alias *aliases)
{
    if (strlen(name) > NAME_MAX_COMPARED) return NULL;
    char folded[NAME_MAX_COMPARED + 1], candidate[NAME_MAX_COMPARED + 1];
    size_t len = fold(name, folded);
    if (len == 0) return NULL;
    for (size_t i = 0; known[i]; i++) {
        fold(known[i], candidate);
        if (strcmp(folded, candidate) == 0) return known[i];
    }
    for (size_t i = 0; aliases && aliases[i].written; i++) {
        fold(aliases[i].written, candidate);
        if (strcmp(folded, candidate) == 0) return aliases[i].meant;
    }
    const char *best = NULL;
    size_t best_distance = len / 3 + 1;
    for (size_t i = 0; known[i]; i++) {
        size_t d = distance(folded, len, candidate, fold(known[i], candidate));
        if (d < best_distance) {
            best = known[i];
            best_distance = d;
        }
    }
    return best;
}
