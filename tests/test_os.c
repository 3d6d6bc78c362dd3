/* The OS seam (src/os.h) as the core relies on it: files and folders with UTF-8
 * names, appends after positioned reads, replacement, locks, removal of open files,
 * listings, randomness and clocks. It uses os.h and the C library alone, so the same
 * cases run against every implementation (ctest: c-test_os for the Linux one,
 * c-test_os-portable for the one of macOS and the BSDs). */
#include "check.h"
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fresh folder under the system's temporary folder, its name not ASCII. */
static char folder[512];

static bool make_test_folder(void)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp) tmp = getenv("TEMP");
    if (!tmp) tmp = "/tmp";
    uint8_t random[6];
    if (!dn_os_random(random, sizeof random)) return false;
    int n = snprintf(folder, sizeof folder, "%s/dn-test-os-Jos\xc3\xa9-", tmp);
    for (size_t i = 0; i < sizeof random; i++)
        n += snprintf(folder + n, sizeof folder - (size_t)n, "%02x", random[i]);
    return dn_os_make_folders(folder);
}

static void path_of(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", folder, name);
}

static bool write_file(const char *name, const char *text)
{
    char path[600];
    path_of(path, sizeof path, name);
    int fd = dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE);
    if (fd < 0) return false;
    bool ok = dn_os_truncate(fd, 0) && dn_os_write_all(fd, text, strlen(text));
    return dn_os_close(fd) && ok;
}

/* The whole file as a string, in a static buffer; "(unreadable)" when it cannot be. */
static const char *read_file(const char *name)
{
    static char text[256];
    char path[600];
    path_of(path, sizeof path, name);
    int fd = dn_os_open(path, 0);
    if (fd < 0) return "(unreadable)";
    int64_t n = dn_os_read_at(fd, text, sizeof text - 1, 0);
    dn_os_close(fd);
    if (n < 0) return "(unreadable)";
    text[n] = '\0';
    return text;
}

static void test_random_differs(void)
{
    uint8_t a[32], b[32], zero[32] = {0};
    CHECK(dn_os_random(a, sizeof a));
    CHECK(dn_os_random(b, sizeof b));
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK(memcmp(a, zero, sizeof a) != 0);
    /* More than getentropy gives in one call. */
    uint8_t big[1000];
    memset(big, 0, sizeof big);
    CHECK(dn_os_random(big, sizeof big));
    CHECK(memcmp(big + sizeof big - sizeof zero, zero, sizeof zero) != 0);
}

static void test_clocks(void)
{
    CHECK(dn_wall_ms() > INT64_C(1577836800000)); /* after 2020-01-01 */
    int64_t before = dn_mono_ms();
    CHECK(dn_mono_ms() >= before);
    CHECK(dn_process_id() > 0);
}

static void test_make_folders_nested_and_again(void)
{
    char path[600];
    path_of(path, sizeof path, "a/b/c");
    CHECK(dn_os_make_folders(path));
    CHECK(dn_os_make_folders(path));
    int fd = dn_os_open_folder(path);
    CHECK(fd >= 0);
    if (fd >= 0) dn_os_close(fd);
    /* Only folders in it: a file where a folder should be fails when opened. */
    CHECK(write_file("a/file", "x"));
    path_of(path, sizeof path, "a/file");
    CHECK_INT_EQ(dn_os_open_folder(path), -1);
}

static void test_create_new_refuses_existing(void)
{
    char path[600];
    path_of(path, sizeof path, "new");
    int fd = dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE_NEW);
    CHECK(fd >= 0);
    if (fd >= 0) dn_os_close(fd);
    errno = 0;
    CHECK_INT_EQ(dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE_NEW), -1);
    CHECK_INT_EQ(errno, EEXIST);
    path_of(path, sizeof path, "missing");
    errno = 0;
    CHECK_INT_EQ(dn_os_open(path, 0), -1);
    CHECK_INT_EQ(errno, ENOENT);
}

/* The spool reads records back from the segment it appends to: a read must not move
 * where the next append goes. */
static void test_append_after_read_at(void)
{
    char path[600];
    path_of(path, sizeof path, "segment");
    int fd = dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE_NEW | DN_OS_APPEND);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(dn_os_write_all(fd, "abcdef", 6));
    char got[8] = {0};
    CHECK_INT_EQ(dn_os_read_at(fd, got, 2, 1), 2);
    CHECK_STR_EQ(got, "bc");
    CHECK(dn_os_write_all(fd, "gh", 2));
    CHECK_INT_EQ(dn_os_read_at(fd, got, sizeof got, 8), 0); /* the end */
    uint64_t size = 0;
    CHECK(dn_os_file_size(fd, &size));
    CHECK_UINT_EQ(size, 8);
    CHECK(dn_os_truncate(fd, 6));
    CHECK(dn_os_write_all(fd, "ij", 2));
    CHECK(dn_os_sync_data(fd));
    CHECK(dn_os_sync_file(fd));
    CHECK(dn_os_close(fd));
    CHECK_STR_EQ(read_file("segment"), "abcdefij");
}

static void test_replace_and_stamps(void)
{
    char from[600], to[600];
    path_of(from, sizeof from, "ids.json.tmp");
    path_of(to, sizeof to, "ids.json");
    CHECK(write_file("ids.json", "old"));
    dn_os_file_stamp before, after;
    CHECK(dn_os_file_stamp_of(to, &before));
    CHECK_UINT_EQ(before.size, 3);
    CHECK(write_file("ids.json.tmp", "newer"));
    CHECK(dn_os_replace(from, to));
    CHECK(dn_os_sync_parent_folder(to));
    CHECK_STR_EQ(read_file("ids.json"), "newer");
    CHECK(dn_os_file_stamp_of(to, &after));
    CHECK(after.size != before.size || after.file != before.file ||
          after.mtime_ns != before.mtime_ns);
    errno = 0;
    CHECK(!dn_os_file_stamp_of(from, &after));
    CHECK_INT_EQ(errno, ENOENT);
}

/* POSIX replaces a file open for reading elsewhere; Windows refuses until it closes. */
static void test_replace_while_open(void)
{
    char from[600], to[600];
    path_of(from, sizeof from, "open.tmp");
    path_of(to, sizeof to, "open");
    CHECK(write_file("open", "first"));
    int reader = dn_os_open(to, 0);
    CHECK(reader >= 0);
    CHECK(write_file("open.tmp", "second"));
#ifdef _WIN32
    errno = 0;
    CHECK(!dn_os_replace(from, to));
    CHECK_INT_EQ(errno, EACCES);
    CHECK_STR_EQ(read_file("open"), "first");
    if (reader >= 0) dn_os_close(reader);
    reader = -1;
#endif
    CHECK(dn_os_replace(from, to));
    CHECK_STR_EQ(read_file("open"), "second");
    if (reader >= 0) dn_os_close(reader);
}

static void test_lock_excludes_another_open(void)
{
    char path[600];
    path_of(path, sizeof path, "writer.lock");
    int first = dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE);
    int second = dn_os_open(path, DN_OS_WRITE | DN_OS_CREATE);
    CHECK(first >= 0 && second >= 0);
    if (first < 0 || second < 0) return;
    CHECK(dn_os_lock_now(first));
    CHECK(!dn_os_lock_now(second));
    /* Closing releases the lock. */
    CHECK(dn_os_close(first));
    CHECK(dn_os_lock_now(second));
    CHECK(dn_os_close(second));
}

static void test_removed_while_open_is_unlinked(void)
{
    int dir = dn_os_open_folder(folder);
    CHECK(dir >= 0);
    if (dir < 0) return;
    int fd = dn_os_open_at(dir, "gone.lock", DN_OS_WRITE | DN_OS_CREATE_NEW);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(dn_os_file_linked(fd));
        CHECK(dn_os_remove_at(dir, "gone.lock"));
#ifndef _WIN32
        /* Windows keeps the name, "delete pending", until the last handle closes, which
         * dn_os_file_linked sees; Wine keeps it too and does not tell. */
        CHECK(!dn_os_file_linked(fd));
#endif
        dn_os_close(fd);
    }
    errno = 0;
    CHECK(!dn_os_remove_at(dir, "gone.lock"));
    CHECK_INT_EQ(errno, ENOENT);
    dn_os_close(dir);
}

typedef struct listing {
    int seen_utf8, seen_plain, seen_dots;
} listing;

static bool note_name(void *ud, const char *name)
{
    listing *l = ud;
    if (strcmp(name, "caf\xc3\xa9.log") == 0) l->seen_utf8++;
    if (strcmp(name, "plain.log") == 0) l->seen_plain++;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) l->seen_dots++;
    return true;
}

static bool stop_at_once(void *ud, const char *name)
{
    (void)name;
    (*(int *)ud)++;
    return false;
}

static void test_folder_names_in_utf8(void)
{
    int dir = dn_os_open_folder(folder);
    CHECK(dir >= 0);
    if (dir < 0) return;
    int fd = dn_os_open_at(dir, "caf\xc3\xa9.log", DN_OS_WRITE | DN_OS_CREATE_NEW);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(dn_os_write_all(fd, "1", 1));
        dn_os_close(fd);
    }
    fd = dn_os_open_at(dir, "plain.log", DN_OS_WRITE | DN_OS_CREATE_NEW);
    if (fd >= 0) dn_os_close(fd);
    CHECK(dn_os_sync_folder(dir));
    listing l = {0, 0, 0};
    CHECK(dn_os_list_folder(dir, note_name, &l));
    CHECK_INT_EQ(l.seen_utf8, 1);
    CHECK_INT_EQ(l.seen_plain, 1);
    CHECK_INT_EQ(l.seen_dots, 0);
    int calls = 0;
    CHECK(!dn_os_list_folder(dir, stop_at_once, &calls));
    CHECK_INT_EQ(calls, 1);
    CHECK_STR_EQ(read_file("caf\xc3\xa9.log"), "1");
    dn_os_close(dir);
}

static void test_poller_empty_set(void)
{
    dn_poller *p = dn_poller_new();
    CHECK(p != NULL);
    dn_poll_event ready[4];
    CHECK_INT_EQ(dn_poller_ready(p, ready, 4, 0), 0);
    int64_t before = dn_mono_ms();
    CHECK_INT_EQ(dn_poller_ready(p, ready, 4, 20), 0);
    CHECK(dn_mono_ms() - before >= 15); /* it waited, loosely */
    dn_poller_free(p);
    dn_poller_free(NULL);
}

static const char *const test_files[] = {
    "a/file", "new", "segment", "ids.json", "open", "writer.lock", "caf\xc3\xa9.log", "plain.log",
};

static void remove_test_folder(void)
{
    char path[600];
    for (size_t i = 0; i < sizeof test_files / sizeof test_files[0]; i++) {
        path_of(path, sizeof path, test_files[i]);
        dn_os_remove(path);
    }
    /* remove() takes empty folders on POSIX; elsewhere the folder stays behind. */
    const char *folders[] = {"a/b/c", "a/b", "a"};
    for (size_t i = 0; i < 3; i++) {
        path_of(path, sizeof path, folders[i]);
        remove(path);
    }
    remove(folder);
}

int main(void)
{
    if (!make_test_folder()) {
        fprintf(stderr, "test_os: cannot make a folder under the temporary folder\n");
        return 1;
    }
    RUN_CASE(test_random_differs);
    RUN_CASE(test_clocks);
    RUN_CASE(test_make_folders_nested_and_again);
    RUN_CASE(test_create_new_refuses_existing);
    RUN_CASE(test_append_after_read_at);
    RUN_CASE(test_replace_and_stamps);
    RUN_CASE(test_replace_while_open);
    RUN_CASE(test_lock_excludes_another_open);
    RUN_CASE(test_removed_while_open_is_unlinked);
    RUN_CASE(test_folder_names_in_utf8);
    RUN_CASE(test_poller_empty_set);
    remove_test_folder();
    return check_report("test_os");
}
