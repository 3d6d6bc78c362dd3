/* Everything the operating system does differently, behind one small interface. The
 * core calls only these; each OS family has its own implementation, chosen at build
 * time (CMakeLists.txt):
 *   os_posix.c     every POSIX system: files, folders, locks, clocks, fork, sockets
 *   os_linux.c     Linux beside it: getrandom, epoll, fdatasync, SOCK_CLOEXEC
 *   os_portable.c  the other POSIX systems (macOS, the BSDs; Linux with
 *                  DUKANEXT_PORTABLE): getentropy, poll, fsync (F_FULLFSYNC on Apple)
 *   os_windows.c   Windows: BCryptGenRandom, select, the wide-character file API
 *
 * Paths and names are UTF-8 on every system. Failures return false (or -1) and leave
 * the reason in errno, so callers report them with strerror alike everywhere. Files
 * and folders are C runtime descriptors (ints) on every system; on Windows they wrap
 * handles opened with every sharing mode, so that files can be replaced and removed
 * while others read them, as on POSIX. */
#ifndef DN_OS_H
#define DN_OS_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
/* Layout-compatible with INIT_ONCE and SRWLOCK, whose static initialisers are zero:
 * the core need not include windows.h. */
typedef struct dn_once {
    void *opaque;
} dn_once;
typedef struct dn_mutex {
    void *opaque;
} dn_mutex;
#define DN_ONCE_INIT                                                                               \
    {                                                                                              \
        0                                                                                          \
    }
#define DN_MUTEX_INIT                                                                              \
    {                                                                                              \
        0                                                                                          \
    }
#else
#include <pthread.h>
typedef pthread_once_t dn_once;
typedef pthread_mutex_t dn_mutex;
#define DN_ONCE_INIT  PTHREAD_ONCE_INIT
#define DN_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define DN_THREAD_LOCAL __declspec(thread)
#else
#define DN_THREAD_LOCAL _Thread_local
#endif

/* What the loaded module shows its host: luaopen_dukanext alone. */
#ifdef _WIN32
#define DN_EXPORT __declspec(dllexport)
#else
#define DN_EXPORT __attribute__((visibility("default")))
#endif

/* Lets GCC and clang check a printf-like function's arguments; MSVC has no such check. */
#if defined(__GNUC__) || defined(__clang__)
#define DN_PRINTF_LIKE(format_index, first_arg)                                                    \
    __attribute__((format(printf, format_index, first_arg)))
#else
#define DN_PRINTF_LIKE(format_index, first_arg)
#endif

/* Threads: run once per process, and a lock for the few process-wide tables. */
void dn_once_run(dn_once *once, void (*fn)(void));
void dn_mutex_lock(dn_mutex *m);
void dn_mutex_unlock(dn_mutex *m);

/* Fills buf from the OS CSPRNG; false only when the OS gives no randomness at all. */
bool dn_os_random(void *buf, size_t len);

/* Clocks and the process. */

/* Wall-clock milliseconds since the epoch: the `<ms>` of ids and session expiry. */
int64_t dn_wall_ms(void);
/* Monotonic milliseconds: retry schedules and deadlines, immune to clock steps. */
int64_t dn_mono_ms(void);
unsigned long dn_process_id(void);

/* Counts the forks this process descends from (0 in the original process, and always
 * 0 where there is no fork). Anything that must not be shared with a parent (random
 * pools, curl connections) remembers the generation it was made in and starts afresh
 * when it differs. */
unsigned dn_fork_generation(void);

/* Keeps the shared object holding `address` (and so libcurl) mapped for the life of the
 * process, even when the Lua state that loaded it closes and asks to unload it: a
 * detached resolver thread or the fork handler may still run our code. */
void dn_pin_module(const void *address);

/* Files. Created files are readable and writable by their owner only (0600). */

enum {
    DN_OS_WRITE = 1,      /* read and write; without it, read only */
    DN_OS_CREATE = 2,     /* create when missing */
    DN_OS_CREATE_NEW = 4, /* create, failing with EEXIST when it exists */
    DN_OS_APPEND = 8,     /* every write goes to the end */
};

int dn_os_open(const char *path, int flags);
/* A file named `name` in the folder open as dir_fd (dn_os_open_folder). */
int dn_os_open_at(int dir_fd, const char *name, int flags);
bool dn_os_close(int fd);
/* pread: the bytes read, 0 at the end of the file, -1 on failure. */
int64_t dn_os_read_at(int fd, void *buf, size_t len, uint64_t offset);
/* Writes everything (at the end of a DN_OS_APPEND file); ENOSPC when no byte goes. */
bool dn_os_write_all(int fd, const void *data, size_t len);
bool dn_os_truncate(int fd, uint64_t size);
bool dn_os_file_size(int fd, uint64_t *size);
/* False once the file has no name left (another process removed it). */
bool dn_os_file_linked(int fd);
/* The largest file this process may write (RLIMIT_FSIZE), UINT64_MAX without limit. */
uint64_t dn_os_file_size_limit(void);

/* Durability. sync_data puts a file's data on disk (what the spool's sync promises);
 * sync_file its data and metadata; sync_folder the names in a folder, so that a
 * created, replaced or removed name survives a power loss. */
bool dn_os_sync_data(int fd);
bool dn_os_sync_file(int fd);
bool dn_os_sync_folder(int dir_fd);
/* The folder holding path. */
bool dn_os_sync_parent_folder(const char *path);

/* Replaces `to` with `from` in one step: readers see the old file or the new one. On
 * Windows it fails (EACCES) while another process holds `to` open. */
bool dn_os_replace(const char *from, const char *to);
bool dn_os_remove(const char *path);
bool dn_os_remove_at(int dir_fd, const char *name);

/* An exclusive lock on the whole file, without waiting; false when another open file
 * holds it. Released when the descriptor closes, never unlocked by hand. */
bool dn_os_lock_now(int fd);

/* Folders. */

/* mkdir -p, each missing folder with mode 0700. */
bool dn_os_make_folders(const char *path);
int dn_os_open_folder(const char *path);
/* Calls on_name for every name in the folder but "." and ".." until it answers false
 * (then the listing answers false too, with errno untouched). */
bool dn_os_list_folder(int dir_fd, bool (*on_name)(void *ud, const char *name), void *ud);

/* What identifies a file's content without reading it: it changes when the file is
 * replaced or written. */
typedef struct dn_os_file_stamp {
    uint64_t device, file, size, mtime_ns;
} dn_os_file_stamp;
/* False when the file cannot be looked at (errno ENOENT when it does not exist). */
bool dn_os_file_stamp_of(const char *path, dn_os_file_stamp *stamp);

/* Sockets for curl (its CURLOPT_OPENSOCKETFUNCTION), not inherited by programs the host
 * runs. */
curl_socket_t dn_os_socket_open(int family, int type, int protocol);
int dn_os_socket_close(curl_socket_t fd);
/* After a fork, in the child: points a copy of the parent's socket at nothing, so that
 * what the child does with it never reaches the parent's peer. */
bool dn_os_socket_silence(curl_socket_t fd);

/* A set of sockets to wait on: epoll on Linux, poll or select elsewhere. The set is
 * level-triggered everywhere. */
enum { DN_POLL_IN = 1, DN_POLL_OUT = 2, DN_POLL_ERR = 4 };

typedef struct dn_poller dn_poller;
typedef struct dn_poll_event {
    curl_socket_t fd;
    unsigned events;
} dn_poll_event;

dn_poller *dn_poller_new(void);
/* Also what a forked child does with its parent's set: its own reference goes. */
void dn_poller_free(dn_poller *p);
/* Moves fd from watching `was` (0: not in the set) to watching `events` (0: out of
 * the set). Tolerates a set that disagrees (a descriptor closed behind its back, its
 * number reused) and a NULL set (does nothing). */
bool dn_poller_watch(dn_poller *p, curl_socket_t fd, unsigned was, unsigned events);
/* Up to `max` ready sockets, waiting at most timeout_ms (0: not at all); -1 on failure. */
int dn_poller_ready(dn_poller *p, dn_poll_event *ready, int max, int timeout_ms);
/* One descriptor a host's event loop can watch, readable whenever a socket of the set
 * is ready; -1 where no such descriptor exists (everywhere but Linux). */
int dn_poller_fd(const dn_poller *p);

#endif
