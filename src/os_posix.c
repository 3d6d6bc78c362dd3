/* The part of the OS seam every POSIX system shares (see os.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* glibc declares dladdr and RTLD_NODELETE only with it */
#endif

#include "os.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void dn_once_run(dn_once *once, void (*fn)(void))
{
    pthread_once(once, fn);
}

void dn_mutex_lock(dn_mutex *m)
{
    pthread_mutex_lock(m);
}

void dn_mutex_unlock(dn_mutex *m)
{
    pthread_mutex_unlock(m);
}

static atomic_uint fork_generation;
static pthread_once_t fork_watch_once = PTHREAD_ONCE_INIT;

static void count_fork_in_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

/* dn_pin_module keeps this handler mapped even after the Lua state that loaded us
 * closes and asks for dlclose. */
static void watch_forks(void)
{
    pthread_atfork(NULL, NULL, count_fork_in_child);
}

unsigned dn_fork_generation(void)
{
    pthread_once(&fork_watch_once, watch_forks);
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

static int64_t clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dn_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t dn_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

unsigned long dn_process_id(void)
{
    return (unsigned long)getpid();
}

void dn_pin_module(const void *address)
{
    Dl_info info;
    /* RTLD_NOLOAD only takes another reference to what is loaded; RTLD_NODELETE makes
     * that reference permanent. The handle is deliberately never closed. */
    if (dladdr(address, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static int open_flags(int flags)
{
    int o = O_CLOEXEC | ((flags & DN_OS_WRITE) ? O_RDWR : O_RDONLY);
    if (flags & DN_OS_CREATE) o |= O_CREAT;
    if (flags & DN_OS_CREATE_NEW) o |= O_CREAT | O_EXCL;
    if (flags & DN_OS_APPEND) o |= O_APPEND;
    return o;
}

int dn_os_open(const char *path, int flags)
{
    int fd;
    do fd = open(path, open_flags(flags), 0600);
    while (fd < 0 && errno == EINTR);
    return fd;
}

int dn_os_open_at(int dir_fd, const char *name, int flags)
{
    int fd;
    do fd = openat(dir_fd, name, open_flags(flags), 0600);
    while (fd < 0 && errno == EINTR);
    return fd;
}

bool dn_os_close(int fd)
{
    /* Never retried on EINTR: the descriptor is gone either way. */
    return close(fd) == 0;
}

int64_t dn_os_read_at(int fd, void *buf, size_t len, uint64_t offset)
{
    ssize_t n;
    do n = pread(fd, buf, len, (off_t)offset);
    while (n < 0 && errno == EINTR);
    return n;
}

bool dn_os_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) {
            errno = ENOSPC;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool dn_os_truncate(int fd, uint64_t size)
{
    int rc;
    do rc = ftruncate(fd, (off_t)size);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

bool dn_os_file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return false;
    *size = (uint64_t)st.st_size;
    return true;
}

bool dn_os_file_linked(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_nlink > 0;
}

uint64_t dn_os_file_size_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return (uint64_t)rl.rlim_cur;
}

bool dn_os_sync_folder(int dir_fd)
{
    int rc;
    do rc = fsync(dir_fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

bool dn_os_sync_parent_folder(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return false;
    int fd = dn_os_open_folder(dirname(copy));
    free(copy);
    if (fd < 0) return false;
    bool ok = dn_os_sync_folder(fd);
    close(fd);
    return ok;
}

bool dn_os_replace(const char *from, const char *to)
{
    return rename(from, to) == 0;
}

bool dn_os_remove(const char *path)
{
    return unlink(path) == 0;
}

bool dn_os_remove_at(int dir_fd, const char *name)
{
    return unlinkat(dir_fd, name, 0) == 0;
}

bool dn_os_lock_now(int fd)
{
    int rc;
    do rc = flock(fd, LOCK_EX | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

bool dn_os_make_folders(const char *dir)
{
    char *path = strdup(dir);
    if (!path) return false;
    bool ok = true;
    for (char *p = path + 1; ok; p++) {
        bool end = *p == '\0';
        if (!end && *p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) ok = false;
        if (end) break;
        *p = '/';
    }
    free(path);
    return ok;
}

int dn_os_open_folder(const char *path)
{
    int fd;
    do fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd;
}

bool dn_os_list_folder(int dir_fd, bool (*on_name)(void *ud, const char *name), void *ud)
{
    /* closedir closes the descriptor it reads: it gets a copy of ours. */
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0) close(fd);
        return false;
    }
    rewinddir(dir);
    bool ok = true;
    struct dirent *entry;
    while (ok && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        ok = on_name(ud, entry->d_name);
    }
    closedir(dir);
    return ok;
}

bool dn_os_file_stamp_of(const char *path, dn_os_file_stamp *stamp)
{
    struct stat st;
    if (stat(path, &st) != 0) return false;
    stamp->device = (uint64_t)st.st_dev;
    stamp->file = (uint64_t)st.st_ino;
    stamp->size = (uint64_t)st.st_size;
#ifdef __APPLE__
    stamp->mtime_ns =
        (uint64_t)st.st_mtimespec.tv_sec * 1000000000u + (uint64_t)st.st_mtimespec.tv_nsec;
#else
    stamp->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
#endif
    return true;
}

int dn_os_socket_close(curl_socket_t fd)
{
    return close(fd);
}
