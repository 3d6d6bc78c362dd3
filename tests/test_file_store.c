/* The key/value file: what it reads and writes, how it is replaced, and what a failed
 * write leaves behind. */
#include "check.h"
#include "folders.h"
#include "file_store.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh folder for each case, removed at its end. */
typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

static bool fixture_open(fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/dn-test-file-store-XXXXXX");
    if (!mkdtemp(f->dir)) return false;
    snprintf(f->path, sizeof f->path, "%s/ids.json", f->dir);
    return true;
}

/* The folder holds plain files and at most one level of folders. */
static void fixture_close(fixture *f)
{
    remove_tree(f->dir);
}

/* The whole file, NUL-terminated; NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    char *text = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (cap - *len < 4096) {
            cap = cap ? cap * 2 : 8192;
            text = realloc(text, cap);
        }
        size_t n = fread(text + *len, 1, cap - *len - 1, file);
        *len += n;
        if (n == 0) break;
    }
    fclose(file);
    text[*len] = '\0';
    return text;
}

static bool write_file(const char *path, const char *text, size_t len)
{
    FILE *file = fopen(path, "wb");
    if (!file) return false;
    bool ok = fwrite(text, 1, len, file) == len;
    return fclose(file) == 0 && ok;
}

static bool set(dn_file_store *store, const char *key, const char *value)
{
    return dn_file_store_set(store, key, value, strlen(value));
}

/* Checks that key holds exactly the expected bytes (NULL: that it is absent). */
static void check_value(const char *file, int line, dn_file_store *store, const char *key,
                        const char *expected, size_t expected_len)
{
    const char *value = "not called";
    size_t len = 99;
    if (!dn_file_store_get(store, key, &value, &len)) {
        check_fail_with(file, line, "get(%s) failed: %s", key, store->error);
        return;
    }
    if (!expected && value == NULL) {
        check_uint_eq(file, line, "length of an absent value", len, 0);
        return;
    }
    check_mem_eq(file, line, key, value, value ? len : 0, expected, expected_len);
}

#define CHECK_VALUE(store, key, expected)                                                          \
    check_value(__FILE__, __LINE__, store, key, expected, strlen(expected))
#define CHECK_ABSENT(store, key) check_value(__FILE__, __LINE__, store, key, NULL, 0)
#define CHECK_VALUE_BYTES(store, key, expected, expected_len)                                      \
    check_value(__FILE__, __LINE__, store, key, expected, expected_len)

typedef struct file_members {
    char keys[8][64];
    dn_buf values[8];
    size_t count;
    bool all_strings;
} file_members;

static void collect_file_member(void *ud, const char *key, size_t key_len,
                                const dn_json_value *value)
{
    file_members *m = ud;
    if (value->type != DN_JSON_STRING) m->all_strings = false;
    if (m->count == 8 || key_len >= sizeof m->keys[0]) return;
    memcpy(m->keys[m->count], key, key_len);
    m->keys[m->count][key_len] = '\0';
    dn_buf_init(&m->values[m->count]);
    dn_json_string_decode(value, &m->values[m->count]);
    dn_buf_terminate(&m->values[m->count]);
    m->count++;
}

/* Reads the file as JSON, independently of the store. False when it is not an object. */
static bool read_file_members(const char *path, file_members *m)
{
    memset(m, 0, sizeof *m);
    m->all_strings = true;
    size_t len;
    char *text = read_file(path, &len);
    bool ok = text && dn_json_object_scan(text, len, collect_file_member, m);
    free(text);
    return ok;
}

static void free_file_members(file_members *m)
{
    for (size_t i = 0; i < m->count; i++) dn_buf_free(&m->values[i]);
}

static void test_get_missing_file(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK_ABSENT(store, "dn_user_id");
    CHECK_ABSENT(store, "dn_user_id");
    CHECK(access(f.path, F_OK) != 0);
    CHECK_UINT_EQ(count_entries(f.dir), 0);
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_set_then_get(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "dn_user_id", "0f8fad5b-d9cb-469f-a165-70867728950e-1770179530638"));
    CHECK_VALUE(store, "dn_user_id", "0f8fad5b-d9cb-469f-a165-70867728950e-1770179530638");
    CHECK_ABSENT(store, "dn_session_id");
    CHECK(set(store, "dn_session_id", "{\"id\":\"x\",\"expires\":1}"));
    CHECK(set(store, "dn_user_id", "replaced"));
    CHECK(set(store, "empty", ""));
    CHECK_VALUE(store, "dn_user_id", "replaced");
    CHECK_VALUE(store, "dn_session_id", "{\"id\":\"x\",\"expires\":1}");
    CHECK_VALUE(store, "empty", "");
    CHECK_ABSENT(store, "dn_user");
    dn_file_store_free(store);

    /* What was written is what a new store reads from disk. */
    store = dn_file_store_new(f.path);
    CHECK_VALUE(store, "dn_user_id", "replaced");
    CHECK_VALUE(store, "dn_session_id", "{\"id\":\"x\",\"expires\":1}");
    CHECK_VALUE(store, "empty", "");
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_file_is_a_json_object_of_strings(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "dn_user_id", "u-1"));
    CHECK(set(store, "dn_session_id", "{\"id\":\"SESSION-x\",\"expires\":2}"));
    CHECK(set(store, "dn_user_id", "u-2"));
    dn_file_store_free(store);

    file_members m;
    if (CHECK(read_file_members(f.path, &m))) {
        CHECK(m.all_strings);
        CHECK_UINT_EQ(m.count, 2);
        for (size_t i = 0; i < m.count; i++) {
            if (strcmp(m.keys[i], "dn_user_id") == 0)
                CHECK_STR_EQ(m.values[i].data, "u-2");
            else if (strcmp(m.keys[i], "dn_session_id") == 0)
                CHECK_STR_EQ(m.values[i].data, "{\"id\":\"SESSION-x\",\"expires\":2}");
            else
                FAIL("unexpected key %s in the file", m.keys[i]);
        }
    }
    free_file_members(&m);
    fixture_close(&f);
}

/* The file holds a visitor's ids: other users of the machine must not read them, even
 * under a permissive umask. */
static void test_file_mode_0600(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    mode_t previous_umask = umask(0);
    dn_file_store *store = dn_file_store_new(f.path);
    struct stat st;
    CHECK(set(store, "k", "v1"));
    if (CHECK(stat(f.path, &st) == 0)) CHECK_INT_EQ(st.st_mode & 07777, 0600);
    CHECK(set(store, "k", "v2"));
    if (CHECK(stat(f.path, &st) == 0)) CHECK_INT_EQ(st.st_mode & 07777, 0600);
    umask(previous_umask);
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_no_temporary_files_left(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    for (int i = 0; i < 20; i++) {
        char value[32];
        snprintf(value, sizeof value, "value %d", i);
        CHECK(set(store, i % 2 ? "a" : "b", value));
    }
    CHECK_UINT_EQ(count_entries(f.dir), 1);
    CHECK(access(f.path, F_OK) == 0);
    dn_file_store_free(store);
    fixture_close(&f);
}

/* Two stores on one path stand for two processes sharing the file. */
static void test_second_store_sees_writes(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *first = dn_file_store_new(f.path);
    dn_file_store *second = dn_file_store_new(f.path);
    CHECK_ABSENT(second, "k");
    CHECK(set(first, "k", "one"));
    CHECK_VALUE(second, "k", "one");
    CHECK(set(first, "k", "two"));
    CHECK_VALUE(second, "k", "two");
    /* Same length as before: the change is seen by more than the size. */
    CHECK(set(first, "k", "six"));
    CHECK_VALUE(second, "k", "six");

    /* A set starts from the file as it is now, so the other store's keys survive. */
    CHECK(set(second, "other", "from second"));
    CHECK_VALUE(first, "k", "six");
    CHECK_VALUE(first, "other", "from second");
    CHECK(set(first, "k", "seven"));
    CHECK_VALUE(second, "other", "from second");
    CHECK_VALUE(second, "k", "seven");
    dn_file_store_free(first);
    dn_file_store_free(second);
    fixture_close(&f);
}

static void test_file_replaced_or_removed_outside(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "k", "mine"));
    const char theirs[] = "{\"k\":\"theirs\",\"x\":\"\\u00e9\"}";
    char temp_path[160];
    snprintf(temp_path, sizeof temp_path, "%s/other.tmp", f.dir);
    CHECK(write_file(temp_path, theirs, sizeof theirs - 1));
    CHECK(rename(temp_path, f.path) == 0);
    CHECK_VALUE(store, "k", "theirs");
    CHECK_VALUE(store, "x", "\xc3\xa9");

    CHECK(unlink(f.path) == 0);
    CHECK_ABSENT(store, "k");
    CHECK_ABSENT(store, "x");
    dn_file_store_free(store);
    fixture_close(&f);
}

static bool copy_mtime(const char *from, const char *to)
{
    struct stat st;
    if (stat(from, &st) != 0) return false;
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    return utimensat(AT_FDCWD, to, times, 0) == 0;
}

/* Tools that copy files keep their mtime; any one of the other things the store
 * remembers about the file must still give the change away. */
static void test_change_seen_with_mtime_kept(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    char stamp_path[160], other_path[160];
    snprintf(stamp_path, sizeof stamp_path, "%s/stamp", f.dir);
    snprintf(other_path, sizeof other_path, "%s/other", f.dir);
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "k", "aaaa"));
    CHECK(write_file(stamp_path, "", 0));
    CHECK(copy_mtime(f.path, stamp_path));
    CHECK_VALUE(store, "k", "aaaa");

    /* Rewritten in place: same file, other size. */
    const char longer[] = "{\"k\":\"bbbbbb\"}";
    CHECK(write_file(f.path, longer, sizeof longer - 1));
    CHECK(copy_mtime(stamp_path, f.path));
    CHECK_VALUE(store, "k", "bbbbbb");

    /* Replaced by another file of the same size. */
    const char same_size[] = "{\"k\":\"cccccc\"}";
    CHECK(write_file(other_path, same_size, sizeof same_size - 1));
    CHECK(copy_mtime(stamp_path, other_path));
    CHECK(rename(other_path, f.path) == 0);
    CHECK_VALUE(store, "k", "cccccc");
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_corrupt_file_reads_empty_and_is_replaced(void)
{
    const char *corrupt[] = {
        "",
        "not json",
        "[]",
        "\"k\"",
        "{\"k\":\"v\"",
        "{\"k\":\"v\"} trailing",
        "{\"k\":\"v\",}",
        "{\"k\":\"v\\x\"}",
        "\xff\xfe{\x00\"",
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        fixture f;
        if (!CHECK(fixture_open(&f))) return;
        CHECK(write_file(f.path, corrupt[i], strlen(corrupt[i])));
        dn_file_store *store = dn_file_store_new(f.path);
        CHECK_ABSENT(store, "k");
        CHECK(set(store, "new", "value"));
        CHECK_VALUE(store, "new", "value");
        CHECK_ABSENT(store, "k");
        dn_file_store_free(store);

        file_members m;
        if (CHECK(read_file_members(f.path, &m))) {
            CHECK_UINT_EQ(m.count, 1);
            CHECK_STR_EQ(m.keys[0], "new");
            CHECK_STR_EQ(m.values[0].data, "value");
        }
        free_file_members(&m);
        fixture_close(&f);
    }
}

static void test_file_corrupted_after_load(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "k", "v"));
    CHECK_VALUE(store, "k", "v");
    CHECK(write_file(f.path, "garbage!", 8));
    CHECK_ABSENT(store, "k");
    CHECK(set(store, "k", "again"));
    CHECK_VALUE(store, "k", "again");
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_binary_and_utf8_values_round_trip(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    const char value[] = "a\0b\0\0caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\" \\ \n\r\t\x01\x7f\xff";
    const char key[] = "k\xc3\xa9y \"quoted\" \\";
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(dn_file_store_set(store, key, value, sizeof value - 1));
    CHECK(dn_file_store_set(store, "dn_user_id", "plain", 5));
    CHECK_VALUE_BYTES(store, key, value, sizeof value - 1);
    dn_file_store_free(store);

    store = dn_file_store_new(f.path);
    CHECK_VALUE_BYTES(store, key, value, sizeof value - 1);
    CHECK_VALUE(store, "dn_user_id", "plain");
    const char *read_back;
    size_t len;
    /* The value stays NUL-terminated past its length, for callers that want a string. */
    if (CHECK(dn_file_store_get(store, key, &read_back, &len)) && CHECK(read_back != NULL))
        CHECK(read_back[len] == '\0');
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_set_fails_in_missing_folder(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    char path[192];
    snprintf(path, sizeof path, "%s/missing/ids.json", f.dir);
    dn_file_store *store = dn_file_store_new(path);
    CHECK(!set(store, "k", "v"));
    CHECK(store->error[0] != '\0');
    if (!CHECK(strstr(store->error, path) != NULL))
        fprintf(stderr, "    error: %s\n", store->error);
    CHECK_ABSENT(store, "k");
    CHECK_UINT_EQ(count_entries(f.dir), 0);
    dn_file_store_free(store);
    fixture_close(&f);
}

/* The tests run as root, which writes into read-only folders; a file size limit makes
 * the write itself fail instead, after the temporary file was created. */
static void test_failed_write_keeps_previous_file(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    dn_file_store *store = dn_file_store_new(f.path);
    CHECK(set(store, "k", "previous"));
    size_t before_len;
    char *before = read_file(f.path, &before_len);

    struct rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    struct rlimit small = saved;
    small.rlim_cur = 1024;
    void (*saved_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    bool limited = setrlimit(RLIMIT_FSIZE, &small) == 0;
    char big[8192];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    bool written = set(store, "k", big);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, saved_handler);

    if (CHECK(limited)) {
        CHECK(!written);
        if (!CHECK(strstr(store->error, f.path) != NULL))
            fprintf(stderr, "    error: %s\n", store->error);
        size_t after_len;
        char *after = read_file(f.path, &after_len);
        CHECK_MEM_EQ(after, after_len, before, before_len);
        free(after);
        CHECK_UINT_EQ(count_entries(f.dir), 1);
        /* The store forgets the value it could not write. */
        CHECK_VALUE(store, "k", "previous");
        dn_file_store *fresh = dn_file_store_new(f.path);
        CHECK_VALUE(fresh, "k", "previous");
        dn_file_store_free(fresh);
        /* And writes again once it can. */
        CHECK(set(store, "k", big));
        CHECK_VALUE(store, "k", big);
    }
    free(before);
    dn_file_store_free(store);
    fixture_close(&f);
}

static void test_unreadable_path_is_an_error(void)
{
    fixture f;
    if (!CHECK(fixture_open(&f))) return;
    CHECK(mkdir(f.path, 0700) == 0);
    dn_file_store *store = dn_file_store_new(f.path);
    const char *value = "not called";
    size_t len;
    CHECK(!dn_file_store_get(store, "k", &value, &len));
    CHECK(value == NULL);
    CHECK(store->error[0] != '\0');
    CHECK(!set(store, "k", "v"));
    struct stat st;
    CHECK(stat(f.path, &st) == 0 && S_ISDIR(st.st_mode));
    dn_file_store_free(store);
    fixture_close(&f);
}

int main(void)
{
    RUN_CASE(test_get_missing_file);
    RUN_CASE(test_set_then_get);
    RUN_CASE(test_file_is_a_json_object_of_strings);
    RUN_CASE(test_file_mode_0600);
    RUN_CASE(test_no_temporary_files_left);
    RUN_CASE(test_second_store_sees_writes);
    RUN_CASE(test_file_replaced_or_removed_outside);
    RUN_CASE(test_change_seen_with_mtime_kept);
    RUN_CASE(test_corrupt_file_reads_empty_and_is_replaced);
    RUN_CASE(test_file_corrupted_after_load);
    RUN_CASE(test_binary_and_utf8_values_round_trip);
    RUN_CASE(test_set_fails_in_missing_folder);
    RUN_CASE(test_failed_write_keeps_previous_file);
    RUN_CASE(test_unreadable_path_is_an_error);
    return check_report("test_file_store");
}
