#include "crash_disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR  512
#define MAX_FDS 4096

typedef enum op_kind {
    OP_CREATE,   /* a file: name in dir, node */
    OP_MKDIR,    /* a folder: name in dir, node */
    OP_WRITE,    /* len bytes of data at offset of node */
    OP_TRUNCATE, /* node cut or extended to offset */
    OP_SYNC,     /* fsync or fdatasync of node, a file or a folder */
    OP_RENAME,   /* node from name in dir to to_name in to_dir */
    OP_UNLINK,   /* name in dir */
} op_kind;

typedef struct op {
    op_kind kind;
    int node;
    int dir, to_dir;
    char *name, *to_name;
    uint64_t offset, len;
    uint8_t *data;
} op;

/* Names point into the record's operations, which outlive every model. */
typedef struct entry {
    const char *name;
    int node;
} entry;

typedef struct entries {
    entry *items;
    size_t count, cap;
} entries;

/* A file or a folder as it is now and as of its last sync, and the operations since
 * that sync, which a power cut may keep or lose. */
typedef struct node {
    bool is_dir;
    uint8_t *now;
    size_t now_len, now_cap;
    uint8_t *synced;
    size_t synced_len;
    entries now_entries, synced_entries;
    size_t *unsynced; /* indexes into the record */
    size_t unsynced_count, unsynced_cap;
} node;

typedef struct model {
    node *nodes;
    size_t count, cap;
} model;

/* The operations recorded under root, and the folder as they left it (to resolve
 * names while recording). */
struct crash_record {
    op *ops;
    size_t op_count, op_cap;
    model live;
    char *root;
    size_t root_len;
    size_t first_point; /* operations that laid down what root held when recording began */
    size_t folder_syncs, file_syncs, unlinks, writes;
};

static crash_record rec;
static bool recording;
static int fd_node[MAX_FDS]; /* 1 + the node an open descriptor refers to; 0 untracked */

static void *must_alloc(void *p)
{
    if (!p) {
        fprintf(stderr, "crash_disk: out of memory\n");
        abort();
    }
    return p;
}

static void grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return;
    size_t cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need) cap2 *= 2;
    *items = must_alloc(realloc(*items, cap2 * size));
    *cap = cap2;
}

/* Entries of a folder. */

static long entries_find(const entries *e, const char *name)
{
    for (size_t i = 0; i < e->count; i++)
        if (strcmp(e->items[i].name, name) == 0) return (long)i;
    return -1;
}

static int entries_node(const entries *e, const char *name)
{
    long i = entries_find(e, name);
    return i < 0 ? -1 : e->items[i].node;
}

static void entries_set(entries *e, const char *name, int node_id)
{
    long i = entries_find(e, name);
    if (i >= 0) {
        e->items[i].node = node_id;
        return;
    }
    grow((void **)&e->items, &e->cap, e->count + 1, sizeof *e->items);
    e->items[e->count++] = (entry){name, node_id};
}

static void entries_remove(entries *e, const char *name)
{
    long i = entries_find(e, name);
    if (i >= 0) e->items[i] = e->items[--e->count];
}

static void entries_copy(entries *to, const entries *from)
{
    to->count = 0;
    grow((void **)&to->items, &to->cap, from->count, sizeof *to->items);
    if (from->count) memcpy(to->items, from->items, from->count * sizeof *from->items);
    to->count = from->count;
}

/* The model: replaying the record into it gives the state of every node at a point. */

static int model_add(model *m, bool is_dir)
{
    grow((void **)&m->nodes, &m->cap, m->count + 1, sizeof *m->nodes);
    node *n = &m->nodes[m->count];
    memset(n, 0, sizeof *n);
    n->is_dir = is_dir;
    return (int)m->count++;
}

static void model_init(model *m)
{
    memset(m, 0, sizeof *m);
    model_add(m, true); /* the root: there, and synced, before the first operation */
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->count; i++) {
        node *n = &m->nodes[i];
        free(n->now);
        free(n->synced);
        free(n->now_entries.items);
        free(n->synced_entries.items);
        free(n->unsynced);
    }
    free(m->nodes);
    memset(m, 0, sizeof *m);
}

static void node_note_unsynced(node *n, size_t op_index)
{
    grow((void **)&n->unsynced, &n->unsynced_cap, n->unsynced_count + 1, sizeof *n->unsynced);
    n->unsynced[n->unsynced_count++] = op_index;
}

static void node_resize(node *n, size_t len)
{
    grow((void **)&n->now, &n->now_cap, len, 1);
    if (len > n->now_len) memset(n->now + n->now_len, 0, len - n->now_len);
    n->now_len = len;
}

static void model_apply(model *m, size_t op_index)
{
    const op *o = &rec.ops[op_index];
    switch (o->kind) {
    case OP_CREATE:
    case OP_MKDIR:
        if ((size_t)o->node >= m->count) model_add(m, o->kind == OP_MKDIR);
        entries_set(&m->nodes[o->dir].now_entries, o->name, o->node);
        node_note_unsynced(&m->nodes[o->dir], op_index);
        break;
    case OP_WRITE: {
        node *n = &m->nodes[o->node];
        if (o->offset + o->len > n->now_len) node_resize(n, o->offset + o->len);
        memcpy(n->now + o->offset, o->data, o->len);
        node_note_unsynced(n, op_index);
        break;
    }
    case OP_TRUNCATE:
        node_resize(&m->nodes[o->node], o->offset);
        node_note_unsynced(&m->nodes[o->node], op_index);
        break;
    case OP_SYNC: {
        node *n = &m->nodes[o->node];
        if (n->is_dir) {
            entries_copy(&n->synced_entries, &n->now_entries);
        } else {
            free(n->synced);
            n->synced = must_alloc(malloc(n->now_len ? n->now_len : 1));
            if (n->now_len) memcpy(n->synced, n->now, n->now_len);
            n->synced_len = n->now_len;
        }
        n->unsynced_count = 0;
        break;
    }
    case OP_RENAME:
        entries_remove(&m->nodes[o->dir].now_entries, o->name);
        entries_set(&m->nodes[o->to_dir].now_entries, o->to_name, o->node);
        node_note_unsynced(&m->nodes[o->dir], op_index);
        if (o->to_dir != o->dir) node_note_unsynced(&m->nodes[o->to_dir], op_index);
        break;
    case OP_UNLINK:
        entries_remove(&m->nodes[o->dir].now_entries, o->name);
        node_note_unsynced(&m->nodes[o->dir], op_index);
        break;
    }
}

/* Recording. */

static void record(op o)
{
    grow((void **)&rec.ops, &rec.op_cap, rec.op_count + 1, sizeof *rec.ops);
    rec.ops[rec.op_count] = o;
    model_apply(&rec.live, rec.op_count);
    rec.op_count++;
}

static char *copy_name(const char *name)
{
    return name ? must_alloc(strdup(name)) : NULL;
}

/* Where a path leads under the root: the folder that holds its last part (dir, name)
 * and the node it names now (-1 when none), or the root itself (dir -1, node 0). */
typedef struct target {
    int dir;
    char name[256];
    int node;
} target;

static bool resolve(int dirfd, const char *path, target *t)
{
    int at = 0;
    const char *rel;
    if (path[0] == '/') {
        if (strncmp(path, rec.root, rec.root_len) != 0 ||
            (path[rec.root_len] != '/' && path[rec.root_len] != '\0'))
            return false;
        rel = path + rec.root_len;
    } else {
        if (dirfd < 0 || dirfd >= MAX_FDS || fd_node[dirfd] == 0) return false;
        at = fd_node[dirfd] - 1;
        if (!rec.live.nodes[at].is_dir) return false;
        rel = path;
    }
    while (*rel == '/') rel++;
    if (*rel == '\0') {
        if (at != 0) return false;
        *t = (target){.dir = -1, .node = 0};
        return true;
    }
    for (;;) {
        const char *slash = strchr(rel, '/');
        size_t len = slash ? (size_t)(slash - rel) : strlen(rel);
        if (len == 0 || len >= sizeof t->name) return false;
        memcpy(t->name, rel, len);
        t->name[len] = '\0';
        while (slash && slash[1] == '/') slash++;
        if (!slash || slash[1] == '\0') break;
        int next = entries_node(&rec.live.nodes[at].now_entries, t->name);
        if (next < 0 || !rec.live.nodes[next].is_dir) return false;
        at = next;
        rel = slash + 1;
    }
    t->dir = at;
    t->node = entries_node(&rec.live.nodes[at].now_entries, t->name);
    return true;
}

static int tracked(int fd)
{
    return recording && fd >= 0 && fd < MAX_FDS ? fd_node[fd] - 1 : -1;
}

/* What root holds when recording begins is recorded first, as made and synced: the
 * disk a power cut left, from which the next run starts. */
static void import_tree(int dir, const char *path)
{
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *found;
    while ((found = readdir(d)) != NULL) {
        if (strcmp(found->d_name, ".") == 0 || strcmp(found->d_name, "..") == 0) continue;
        char child[4096];
        int len = snprintf(child, sizeof child, "%s/%s", path, found->d_name);
        struct stat st;
        if (len < 0 || (size_t)len >= sizeof child || lstat(child, &st) != 0) continue;
        int id = (int)rec.live.count;
        if (S_ISDIR(st.st_mode)) {
            record(
                (op){.kind = OP_MKDIR, .node = id, .dir = dir, .name = copy_name(found->d_name)});
            import_tree(id, child);
        } else if (S_ISREG(st.st_mode)) {
            record(
                (op){.kind = OP_CREATE, .node = id, .dir = dir, .name = copy_name(found->d_name)});
            uint8_t *bytes = st.st_size ? must_alloc(malloc((size_t)st.st_size)) : NULL;
            FILE *f = fopen(child, "rb");
            size_t got = f && bytes ? fread(bytes, 1, (size_t)st.st_size, f) : 0;
            if (f) fclose(f);
            if (got)
                record((op){.kind = OP_WRITE, .node = id, .len = got, .data = bytes});
            else
                free(bytes);
            record((op){.kind = OP_SYNC, .node = id});
        }
    }
    closedir(d);
    record((op){.kind = OP_SYNC, .node = dir});
}

void crash_disk_record(const char *folder)
{
    crash_disk_forget();
    rec.root = must_alloc(strdup(folder));
    rec.root_len = strlen(rec.root);
    while (rec.root_len > 1 && rec.root[rec.root_len - 1] == '/') rec.root[--rec.root_len] = '\0';
    model_init(&rec.live);
    import_tree(0, rec.root);
    rec.first_point = rec.op_count;
    recording = true;
}

void crash_disk_stop(void)
{
    recording = false;
}

void crash_disk_forget(void)
{
    recording = false;
    for (size_t i = 0; i < rec.op_count; i++) {
        free(rec.ops[i].name);
        free(rec.ops[i].to_name);
        free(rec.ops[i].data);
    }
    free(rec.ops);
    rec.ops = NULL;
    rec.op_count = rec.op_cap = 0;
    model_free(&rec.live);
    free(rec.root);
    memset(&rec, 0, sizeof rec);
}

crash_record *crash_disk_set_aside(void)
{
    crash_record *saved = must_alloc(malloc(sizeof *saved));
    *saved = rec;
    memset(&rec, 0, sizeof rec);
    recording = false;
    return saved;
}

void crash_disk_take_back(crash_record *saved)
{
    crash_disk_forget();
    rec = *saved;
    free(saved);
}

size_t crash_disk_first_point(void)
{
    return rec.first_point;
}

size_t crash_disk_ops(void)
{
    return rec.op_count;
}

size_t crash_disk_folder_syncs(void)
{
    return rec.folder_syncs;
}

size_t crash_disk_file_syncs(void)
{
    return rec.file_syncs;
}

size_t crash_disk_unlinks(void)
{
    return rec.unlinks;
}

size_t crash_disk_writes(void)
{
    return rec.writes;
}

/* The libc calls, as the linker's --wrap hands them to us. */

int __real_openat(int dirfd, const char *path, int flags, ...);
ssize_t __real_write(int fd, const void *data, size_t len);
int __real_ftruncate(int fd, off_t len);
int __real_close(int fd);
int __real_renameat(int from_dirfd, const char *from, int to_dirfd, const char *to);
int __real_unlinkat(int dirfd, const char *path, int flags);
int __real_mkdirat(int dirfd, const char *path, mode_t mode);

int __wrap_openat(int dirfd, const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...);
ssize_t __wrap_write(int fd, const void *data, size_t len);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_close(int fd);
int __wrap_renameat(int from_dirfd, const char *from, int to_dirfd, const char *to);
int __wrap_rename(const char *from, const char *to);
int __wrap_unlinkat(int dirfd, const char *path, int flags);
int __wrap_unlink(const char *path);
int __wrap_mkdirat(int dirfd, const char *path, mode_t mode);
int __wrap_mkdir(const char *path, mode_t mode);

static int open_tracked(int dirfd, const char *path, int flags, mode_t mode)
{
    target t;
    bool under_root = recording && resolve(dirfd, path, &t);
    int fd = __real_openat(dirfd, path, flags, mode);
    if (!under_root || fd < 0) return fd;
    int node_id = t.node;
    if (node_id < 0 && (flags & O_CREAT)) {
        node_id = (int)rec.live.count;
        record((op){.kind = OP_CREATE, .node = node_id, .dir = t.dir, .name = copy_name(t.name)});
    } else if (node_id >= 0 && (flags & O_TRUNC) && !rec.live.nodes[node_id].is_dir) {
        record((op){.kind = OP_TRUNCATE, .node = node_id, .offset = 0});
    }
    if (node_id >= 0 && fd < MAX_FDS) fd_node[fd] = node_id + 1;
    return fd;
}

int __wrap_openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = flags & O_CREAT ? va_arg(ap, mode_t) : 0; /* there only with O_CREAT */
    va_end(ap);
    return open_tracked(dirfd, path, flags, mode);
}

int __wrap_open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = flags & O_CREAT ? va_arg(ap, mode_t) : 0; /* there only with O_CREAT */
    va_end(ap);
    return open_tracked(AT_FDCWD, path, flags, mode);
}

ssize_t __wrap_write(int fd, const void *data, size_t len)
{
    ssize_t n = __real_write(fd, data, len);
    int node_id = tracked(fd);
    if (n <= 0 || node_id < 0) return n;
    /* After the write the position is its end, with O_APPEND or without. */
    off_t end = lseek(fd, 0, SEEK_CUR);
    rec.writes++;
    uint8_t *copy = must_alloc(malloc((size_t)n));
    memcpy(copy, data, (size_t)n);
    record((op){.kind = OP_WRITE,
                .node = node_id,
                .offset = (uint64_t)end - (uint64_t)n,
                .len = (uint64_t)n,
                .data = copy});
    return n;
}

int __wrap_ftruncate(int fd, off_t len)
{
    int rc = __real_ftruncate(fd, len);
    int node_id = tracked(fd);
    if (rc == 0 && node_id >= 0)
        record((op){.kind = OP_TRUNCATE, .node = node_id, .offset = (uint64_t)len});
    return rc;
}

/* Never the real sync: no power is lost for real, and thousands of syncs on a shared
 * disk would only make the run slow. */
static int note_sync(int fd)
{
    int node_id = tracked(fd);
    if (node_id >= 0) {
        if (rec.live.nodes[node_id].is_dir)
            rec.folder_syncs++;
        else
            rec.file_syncs++;
        record((op){.kind = OP_SYNC, .node = node_id});
    }
    if (fcntl(fd, F_GETFD) < 0) return -1; /* EBADF, as the real call would say */
    return 0;
}

int __wrap_fsync(int fd)
{
    return note_sync(fd);
}

int __wrap_fdatasync(int fd)
{
    return note_sync(fd);
}

int __wrap_close(int fd)
{
    if (fd >= 0 && fd < MAX_FDS) fd_node[fd] = 0;
    return __real_close(fd);
}

int __wrap_renameat(int from_dirfd, const char *from, int to_dirfd, const char *to)
{
    target a, b;
    bool under_root =
        recording && resolve(from_dirfd, from, &a) && resolve(to_dirfd, to, &b) && a.node >= 0;
    int rc = __real_renameat(from_dirfd, from, to_dirfd, to);
    if (rc == 0 && under_root && a.dir >= 0 && b.dir >= 0)
        record((op){.kind = OP_RENAME,
                    .node = a.node,
                    .dir = a.dir,
                    .name = copy_name(a.name),
                    .to_dir = b.dir,
                    .to_name = copy_name(b.name)});
    return rc;
}

int __wrap_rename(const char *from, const char *to)
{
    return __wrap_renameat(AT_FDCWD, from, AT_FDCWD, to);
}

int __wrap_unlinkat(int dirfd, const char *path, int flags)
{
    target t;
    bool under_root = recording && resolve(dirfd, path, &t);
    int rc = __real_unlinkat(dirfd, path, flags);
    if (rc == 0 && under_root && t.dir >= 0) {
        rec.unlinks++;
        record((op){.kind = OP_UNLINK, .dir = t.dir, .name = copy_name(t.name)});
    }
    return rc;
}

int __wrap_unlink(const char *path)
{
    return __wrap_unlinkat(AT_FDCWD, path, 0);
}

int __wrap_mkdirat(int dirfd, const char *path, mode_t mode)
{
    target t;
    bool under_root = recording && resolve(dirfd, path, &t);
    int rc = __real_mkdirat(dirfd, path, mode);
    if (rc == 0 && under_root && t.dir >= 0)
        record((op){.kind = OP_MKDIR,
                    .node = (int)rec.live.count,
                    .dir = t.dir,
                    .name = copy_name(t.name)});
    return rc;
}

int __wrap_mkdir(const char *path, mode_t mode)
{
    return __wrap_mkdirat(AT_FDCWD, path, mode);
}

/* Building a crash state. */

typedef struct choices {
    int state;
    uint64_t seed;
} choices;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Whether the crash kept part `part` of operation op_index. Decided from the numbers
 * alone, so that every look at the same change agrees. */
static bool kept(const choices *c, size_t op_index, uint64_t part)
{
    if (c->state == CRASH_LOSE_ALL) return false;
    if (c->state == CRASH_KEEP_ALL) return true;
    return mix(c->seed ^ mix((uint64_t)c->state << 48 ^ (uint64_t)op_index << 20 ^ part)) & 1;
}

/* The bytes a file holds after the crash, into *out (malloc'd) and *len. */
static void crash_file(const node *n, int node_id, const choices *c, uint8_t **out, size_t *len)
{
    size_t cap = n->synced_len, size = n->synced_len;
    for (size_t i = 0; i < n->unsynced_count; i++) {
        const op *o = &rec.ops[n->unsynced[i]];
        size_t end = o->kind == OP_WRITE ? (size_t)(o->offset + o->len) : (size_t)o->offset;
        if (end > cap) cap = end;
    }
    uint8_t *bytes = must_alloc(calloc(cap ? cap : 1, 1));
    if (n->synced_len) memcpy(bytes, n->synced, n->synced_len);
    /* The sizes the file had since its last sync: any of them may be on disk. */
    size_t *sizes = must_alloc(malloc((n->unsynced_count + 1) * sizeof *sizes));
    size_t size_count = 0;
    sizes[size_count++] = size;
    for (size_t i = 0; i < n->unsynced_count; i++) {
        size_t op_index = n->unsynced[i];
        const op *o = &rec.ops[op_index];
        if (o->kind == OP_TRUNCATE) {
            size = (size_t)o->offset;
            if (kept(c, op_index, 0)) memset(bytes + size, 0, cap - size);
        } else {
            for (uint64_t at = o->offset; at < o->offset + o->len;) {
                uint64_t sector = at / SECTOR, until = (sector + 1) * SECTOR;
                if (until > o->offset + o->len) until = o->offset + o->len;
                if (kept(c, op_index, sector))
                    memcpy(bytes + at, o->data + (at - o->offset), (size_t)(until - at));
                at = until;
            }
            if (o->offset + o->len > size) size = (size_t)(o->offset + o->len);
        }
        sizes[size_count++] = size;
    }
    if (c->state == CRASH_LOSE_ALL)
        *len = sizes[0];
    else if (c->state == CRASH_KEEP_ALL)
        *len = sizes[size_count - 1];
    else
        *len = sizes[mix(c->seed ^ mix((uint64_t)c->state << 40 ^ (uint64_t)node_id)) % size_count];
    free(sizes);
    *out = bytes;
}

/* The entries a folder holds after the crash: those of its last sync, then each change
 * since that the crash kept, where it still applies. */
static void crash_entries(const node *n, int dir, const choices *c, entries *out)
{
    entries_copy(out, &n->synced_entries);
    for (size_t i = 0; i < n->unsynced_count; i++) {
        size_t op_index = n->unsynced[i];
        const op *o = &rec.ops[op_index];
        if (!kept(c, op_index, 0)) continue;
        switch (o->kind) {
        case OP_CREATE:
        case OP_MKDIR:
            entries_set(out, o->name, o->node);
            break;
        case OP_UNLINK:
            entries_remove(out, o->name);
            break;
        case OP_RENAME:
            if (o->dir == dir) {
                if (entries_node(out, o->name) != o->node && o->to_dir == dir) break;
                entries_remove(out, o->name);
            }
            if (o->to_dir == dir) entries_set(out, o->to_name, o->node);
            break;
        default:
            break;
        }
    }
}

static bool write_file(const char *path, const uint8_t *bytes, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    bool ok = len == 0 || write(fd, bytes, len) == (ssize_t)len;
    return close(fd) == 0 && ok;
}

static bool lay_down(const model *m, int dir, const choices *c, const char *path)
{
    entries e = {0};
    crash_entries(&m->nodes[dir], dir, c, &e);
    bool ok = true;
    for (size_t i = 0; ok && i < e.count; i++) {
        char child[4096];
        int n = snprintf(child, sizeof child, "%s/%s", path, e.items[i].name);
        if (n < 0 || (size_t)n >= sizeof child) {
            ok = false;
            break;
        }
        int id = e.items[i].node;
        if (m->nodes[id].is_dir) {
            ok = mkdir(child, 0700) == 0 && lay_down(m, id, c, child);
        } else {
            uint8_t *bytes;
            size_t len;
            crash_file(&m->nodes[id], id, c, &bytes, &len);
            ok = write_file(child, bytes, len);
            free(bytes);
        }
    }
    free(e.items);
    return ok;
}

bool crash_disk_build(size_t point, int state, uint64_t seed, const char *out_root)
{
    bool was_recording = recording;
    recording = false;
    model m;
    model_init(&m);
    for (size_t i = 0; i < point && i < rec.op_count; i++) model_apply(&m, i);
    choices c = {state, seed};
    bool ok = lay_down(&m, 0, &c, out_root);
    model_free(&m);
    recording = was_recording;
    return ok;
}

void crash_disk_print_ops(size_t from, size_t to)
{
    static const char *const kinds[] = {"create", "mkdir",  "write", "truncate",
                                        "sync",   "rename", "unlink"};
    for (size_t i = from; i < to && i < rec.op_count; i++) {
        const op *o = &rec.ops[i];
        fprintf(stderr, "    op %zu: %s", i, kinds[o->kind]);
        if (o->name) fprintf(stderr, " %s", o->name);
        if (o->to_name) fprintf(stderr, " -> %s", o->to_name);
        if (o->kind == OP_WRITE)
            fprintf(stderr, " node %d, %llu bytes at %llu", o->node, (unsigned long long)o->len,
                    (unsigned long long)o->offset);
        else if (o->kind != OP_UNLINK)
            fprintf(stderr, " node %d", o->node);
        fputc('\n', stderr);
    }
}
