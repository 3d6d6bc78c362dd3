#include "file_store.h"
#include "ids.h"
#include "json.h"
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Larger files are not ours: reading them on every get would stall the host. */
#define DN_FILE_STORE_MAX (1024 * 1024)

dn_file_store *dn_file_store_new(const char *path)
{
    dn_file_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return NULL;
    }
    return s;
}

static void forget_entries(dn_file_store *s)
{
    for (size_t i = 0; i < s->count; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    free(s->entries);
    s->entries = NULL;
    s->count = 0;
}

void dn_file_store_free(dn_file_store *s)
{
    if (!s) return;
    forget_entries(s);
    free(s->path);
    free(s);
}

static dn_file_entry *find(dn_file_store *s, const char *key)
{
    for (size_t i = 0; i < s->count; i++)
        if (strcmp(s->entries[i].key, key) == 0) return &s->entries[i];
    return NULL;
}

static bool put(dn_file_store *s, const char *key, size_t key_len, const char *value, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, value, len);
    copy[len] = '\0';
    char *key_copy = malloc(key_len + 1);
    if (!key_copy) {
        free(copy);
        return false;
    }
    memcpy(key_copy, key, key_len);
    key_copy[key_len] = '\0';
    dn_file_entry *e = find(s, key_copy);
    if (e) {
        free(key_copy);
        free(e->value);
    } else {
        dn_file_entry *grown = realloc(s->entries, (s->count + 1) * sizeof *grown);
        if (!grown) {
            free(copy);
            free(key_copy);
            return false;
        }
        s->entries = grown;
        e = &s->entries[s->count++];
        e->key = key_copy;
    }
    e->value = copy;
    e->value_len = len;
    return true;
}

typedef struct load_state {
    dn_file_store *store;
    bool ok;
} load_state;

static void load_member(void *ud, const char *key, size_t key_len, const dn_json_value *value)
{
    load_state *ls = ud;
    if (value->type != DN_JSON_STRING) return;
    dn_buf k, v;
    dn_buf_init(&k);
    dn_buf_init(&v);
    dn_json_value raw_key = {DN_JSON_STRING, key, key_len};
    if (!dn_json_string_decode(&raw_key, &k) || !dn_json_string_decode(value, &v) ||
        !dn_buf_terminate(&k) || memchr(k.data, '\0', k.len) ||
        !put(ls->store, k.data, k.len, v.len ? v.data : "", v.len))
        ls->ok = false;
    dn_buf_free(&k);
    dn_buf_free(&v);
}

static bool fail(dn_file_store *s, const char *what)
{
    snprintf(s->error, sizeof s->error, "%s %s: %s", what, s->path, strerror(errno));
    return false;
}

static bool same_file(const dn_file_store *s, const dn_os_file_stamp *st)
{
    return s->loaded && s->stamp.device == st->device && s->stamp.file == st->file &&
           s->stamp.size == st->size && s->stamp.mtime_ns == st->mtime_ns;
}

static void remember_file(dn_file_store *s, const dn_os_file_stamp *st)
{
    s->loaded = true;
    s->stamp = *st;
}

/* Reads the file again only when it changed since we last read or wrote it. */
static bool refresh(dn_file_store *s)
{
    dn_os_file_stamp st;
    if (!dn_os_file_stamp_of(s->path, &st)) {
        if (errno != ENOENT) return fail(s, "cannot stat");
        forget_entries(s);
        s->loaded = false;
        return true;
    }
    if (same_file(s, &st)) return true;
    forget_entries(s);
    int fd = dn_os_open(s->path, 0);
    if (fd < 0) return fail(s, "cannot open");
    dn_buf text;
    dn_buf_init(&text);
    bool ok = true;
    for (;;) {
        if (text.len > DN_FILE_STORE_MAX || !dn_buf_reserve(&text, 4096)) break;
        int64_t n = dn_os_read_at(fd, text.data + text.len, 4096, text.len);
        if (n < 0) {
            ok = fail(s, "cannot read");
            break;
        }
        if (n == 0) break;
        text.len += (size_t)n;
    }
    dn_os_close(fd);
    if (ok && text.len <= DN_FILE_STORE_MAX) {
        load_state ls = {s, true};
        if (!dn_json_object_scan(text.data, text.len, load_member, &ls) || !ls.ok)
            forget_entries(s);
    }
    dn_buf_free(&text);
    if (ok) remember_file(s, &st);
    return ok;
}

bool dn_file_store_get(dn_file_store *s, const char *key, const char **value, size_t *len)
{
    *value = NULL;
    *len = 0;
    if (!refresh(s)) return false;
    dn_file_entry *e = find(s, key);
    if (e) {
        *value = e->value;
        *len = e->value_len;
    }
    return true;
}

bool dn_file_store_set(dn_file_store *s, const char *key, const char *value, size_t len)
{
    if (!refresh(s)) return false;
    if (!put(s, key, strlen(key), value, len)) {
        errno = ENOMEM;
        return fail(s, "cannot update");
    }
    dn_buf text;
    dn_buf_init(&text);
    dn_buf_append_char(&text, '{');
    for (size_t i = 0; i < s->count; i++) {
        if (i) dn_buf_append_char(&text, ',');
        dn_json_string_append(&text, s->entries[i].key, strlen(s->entries[i].key));
        dn_buf_append_char(&text, ':');
        dn_json_string_append(&text, s->entries[i].value, s->entries[i].value_len);
    }
    dn_buf_append_str(&text, "}\n");
    if (text.failed) {
        dn_buf_free(&text);
        errno = ENOMEM;
        return fail(s, "cannot update");
    }

    char suffix[DN_UUID_LEN + 1];
    dn_uuid_v4(suffix);
    size_t tmp_len = strlen(s->path) + sizeof suffix + 8;
    char *tmp = malloc(tmp_len);
    bool ok = tmp != NULL;
    if (!ok) errno = ENOMEM;
    if (ok) snprintf(tmp, tmp_len, "%s.%s.tmp", s->path, suffix);
    int fd = ok ? dn_os_open(tmp, DN_OS_WRITE | DN_OS_CREATE_NEW) : -1;
    if (ok && fd < 0) ok = fail(s, "cannot create a temporary file beside");
    if (ok && (!dn_os_write_all(fd, text.data, text.len) || !dn_os_sync_file(fd)))
        ok = fail(s, "cannot write");
    if (fd >= 0 && !dn_os_close(fd) && ok) ok = fail(s, "cannot write");
    if (ok && !dn_os_replace(tmp, s->path)) ok = fail(s, "cannot replace");
    if (!ok && fd >= 0) dn_os_remove(tmp);
    free(tmp);
    dn_buf_free(&text);
    if (!ok) {
        s->loaded = false; /* our entries may now differ from the file: read it again */
        return false;
    }
    dn_os_sync_parent_folder(s->path);
    dn_os_file_stamp st;
    if (dn_os_file_stamp_of(s->path, &st)) remember_file(s, &st);
    return true;
}
