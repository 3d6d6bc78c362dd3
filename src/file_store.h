/* A small key/value file for hosts with a disk and no browser (a game, a kiosk): one
 * JSON object of strings, replaced atomically on every change. */
#ifndef DN_FILE_STORE_H
#define DN_FILE_STORE_H

#include "buf.h"
#include "os.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct dn_file_entry {
    char *key;
    char *value;
    size_t value_len;
} dn_file_entry;

typedef struct dn_file_store {
    char *path;
    dn_file_entry *entries;
    size_t count;
    /* What the file was when last read: another process may replace it. */
    bool loaded;
    dn_os_file_stamp stamp;
    char error[256];
} dn_file_store;

dn_file_store *dn_file_store_new(const char *path);
void dn_file_store_free(dn_file_store *store);
/* *value is NULL when the key is absent; it points into the store until the next call.
 * False on an I/O error (store->error says which). A file that is not a JSON object of
 * strings reads as empty and is replaced on the next set. */
bool dn_file_store_get(dn_file_store *store, const char *key, const char **value, size_t *len);
/* Writes a temporary file (mode 0600) beside the target, fsyncs it, renames it over the
 * target and fsyncs the folder. */
bool dn_file_store_set(dn_file_store *store, const char *key, const char *value, size_t len);

#endif
