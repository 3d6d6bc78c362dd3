/* The Windows implementation of the OS seam (see os.h). Plain C11 and the Win32 API,
 * so that MinGW-w64 and MSVC both build it. Paths arrive in UTF-8 and go to the
 * wide-character API, so a folder under C:\Users\José works whatever the code page. */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0601 /* Windows 7: GetFinalPathNameByHandleW, FileStandardInfo */
#endif
/* The poller's select() sets; Windows' fd_set is a list, its size only a bound. */
#define FD_SETSIZE 1024

#include "os.h"

#include <winsock2.h>
#include <windows.h>
#include <bcrypt.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

_Static_assert(sizeof(dn_once) == sizeof(INIT_ONCE), "dn_once stands for INIT_ONCE");
_Static_assert(sizeof(dn_mutex) == sizeof(SRWLOCK), "dn_mutex stands for SRWLOCK");

/* Threads. */

typedef struct once_call {
    void (*fn)(void);
} once_call;

static BOOL CALLBACK run_once_call(PINIT_ONCE once, PVOID param, PVOID *context)
{
    (void)once;
    (void)context;
    ((once_call *)param)->fn();
    return TRUE;
}

void dn_once_run(dn_once *once, void (*fn)(void))
{
    once_call call = {fn};
    InitOnceExecuteOnce((PINIT_ONCE)once, run_once_call, &call, NULL);
}

void dn_mutex_lock(dn_mutex *m)
{
    AcquireSRWLockExclusive((PSRWLOCK)m);
}

void dn_mutex_unlock(dn_mutex *m)
{
    ReleaseSRWLockExclusive((PSRWLOCK)m);
}

bool dn_os_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ULONG chunk = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return false;
        p += chunk;
        len -= chunk;
    }
    return true;
}

/* Clocks and the process. */

int64_t dn_wall_ms(void)
{
    FILETIME ft;
    GetSystemTimeAsFileTime(&ft);
    uint64_t ticks = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
    /* 100 ns ticks since 1601-01-01; the Unix epoch is 11644473600 s later. */
    return (int64_t)(ticks / 10000u) - INT64_C(11644473600000);
}

int64_t dn_mono_ms(void)
{
    LARGE_INTEGER count, frequency;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&frequency);
    /* Split so that count * 1000 cannot overflow after months of uptime. */
    int64_t seconds = count.QuadPart / frequency.QuadPart;
    int64_t rest = count.QuadPart % frequency.QuadPart;
    return seconds * 1000 + rest * 1000 / frequency.QuadPart;
}

unsigned long dn_process_id(void)
{
    return (unsigned long)GetCurrentProcessId();
}

/* Windows has no fork: every process is an original. */
unsigned dn_fork_generation(void)
{
    return 0;
}

void dn_pin_module(const void *address)
{
    HMODULE module;
    /* The pinned module stays loaded until the process ends, whatever FreeLibrary says. */
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                       (LPCWSTR)address, &module);
}

/* Errors: Win32's reasons told in errno, as the POSIX side does. */

static void set_errno_from(DWORD error)
{
    switch (error) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
        errno = ENOENT;
        break;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS:
        errno = EEXIST;
        break;
    case ERROR_ACCESS_DENIED:
    case ERROR_SHARING_VIOLATION:
    case ERROR_WRITE_PROTECT:
        errno = EACCES;
        break;
    case ERROR_LOCK_VIOLATION:
        errno = EWOULDBLOCK;
        break;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        errno = ENOSPC;
        break;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        errno = ENOMEM;
        break;
    case ERROR_FILENAME_EXCED_RANGE:
        errno = ENAMETOOLONG;
        break;
    case ERROR_INVALID_HANDLE:
        errno = EBADF;
        break;
    default:
        errno = EIO;
        break;
    }
}

static bool fail_with_last_error(void)
{
    set_errno_from(GetLastError());
    return false;
}

/* Paths. */

/* A malloc'd wide copy of a UTF-8 string; NULL (errno EILSEQ or ENOMEM) on failure. */
static wchar_t *wide_from_utf8(const char *text)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text, -1, NULL, 0);
    if (n <= 0) {
        errno = EILSEQ;
        return NULL;
    }
    wchar_t *wide = malloc((size_t)n * sizeof *wide);
    if (!wide) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text, -1, wide, n);
    return wide;
}

static char *utf8_from_wide(const wchar_t *wide)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, wide, -1, NULL, 0, NULL, NULL);
    if (n <= 0) return NULL;
    char *text = malloc((size_t)n);
    if (text) WideCharToMultiByte(CP_UTF8, 0, wide, -1, text, n, NULL, NULL);
    return text;
}

static HANDLE handle_of(int fd)
{
    return (HANDLE)_get_osfhandle(fd);
}

/* The path of the folder open as dir_fd, followed by `\` and `name` (or by `\*` for a
 * listing when name is NULL). The path comes back from the handle itself, in its
 * `\\?\` form, which also lifts the 260-character limit. */
static wchar_t *path_in_folder(int dir_fd, const char *name)
{
    HANDLE dir = handle_of(dir_fd);
    if (dir == INVALID_HANDLE_VALUE) {
        errno = EBADF;
        return NULL;
    }
    wchar_t *wide_name = wide_from_utf8(name ? name : "*");
    if (!wide_name) return NULL;
    DWORD dir_len = GetFinalPathNameByHandleW(dir, NULL, 0, FILE_NAME_NORMALIZED);
    size_t name_len = wcslen(wide_name);
    wchar_t *path = dir_len ? malloc(((size_t)dir_len + 1 + name_len + 1) * sizeof *path) : NULL;
    DWORD got = path ? GetFinalPathNameByHandleW(dir, path, dir_len, FILE_NAME_NORMALIZED) : 0;
    if (!path || got == 0 || got >= dir_len) {
        if (!path && dir_len) errno = ENOMEM;
        if (dir_len == 0 || got == 0) set_errno_from(GetLastError());
        free(path);
        free(wide_name);
        return NULL;
    }
    path[got] = L'\\';
    memcpy(path + got + 1, wide_name, (name_len + 1) * sizeof *path);
    free(wide_name);
    return path;
}

/* Files. */

/* Every sharing mode: another process may read, write, replace or remove the file
 * while we hold it, as on POSIX. The handle is not inherited by child processes. */
static int open_wide(const wchar_t *path, int flags)
{
    DWORD access = GENERIC_READ | ((flags & DN_OS_WRITE) ? GENERIC_WRITE : 0);
    DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    DWORD disposition = OPEN_EXISTING;
    if (flags & DN_OS_CREATE) disposition = OPEN_ALWAYS;
    if (flags & DN_OS_CREATE_NEW) disposition = CREATE_NEW;
    HANDLE h = CreateFileW(path, access, share, NULL, disposition, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        fail_with_last_error();
        return -1;
    }
    /* The C runtime's append flag makes each _write go to the end of the file. */
    int crt_flags =
        ((flags & DN_OS_APPEND) ? _O_APPEND : 0) | ((flags & DN_OS_WRITE) ? 0 : _O_RDONLY);
    int fd = _open_osfhandle((intptr_t)h, crt_flags);
    if (fd < 0) {
        CloseHandle(h);
        errno = EMFILE;
    }
    return fd;
}

int dn_os_open(const char *path, int flags)
{
    wchar_t *wide = wide_from_utf8(path);
    if (!wide) return -1;
    int fd = open_wide(wide, flags);
    free(wide);
    return fd;
}

int dn_os_open_at(int dir_fd, const char *name, int flags)
{
    wchar_t *path = path_in_folder(dir_fd, name);
    if (!path) return -1;
    int fd = open_wide(path, flags);
    free(path);
    return fd;
}

bool dn_os_close(int fd)
{
    return _close(fd) == 0;
}

int64_t dn_os_read_at(int fd, void *buf, size_t len, uint64_t offset)
{
    HANDLE h = handle_of(fd);
    OVERLAPPED at;
    memset(&at, 0, sizeof at);
    at.Offset = (DWORD)offset;
    at.OffsetHigh = (DWORD)(offset >> 32);
    DWORD want = len > 0x40000000u ? 0x40000000u : (DWORD)len;
    DWORD got = 0;
    /* This moves the file pointer too: harmless, since writes to a file that is also
     * read are appends, which go to the end whatever the pointer says. */
    if (!ReadFile(h, buf, want, &got, &at)) {
        if (GetLastError() == ERROR_HANDLE_EOF) return 0;
        fail_with_last_error();
        return -1;
    }
    return (int64_t)got;
}

bool dn_os_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        unsigned chunk = len > 0x40000000u ? 0x40000000u : (unsigned)len;
        int n = _write(fd, p, chunk);
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
    FILE_END_OF_FILE_INFO end;
    end.EndOfFile.QuadPart = (LONGLONG)size;
    if (!SetFileInformationByHandle(handle_of(fd), FileEndOfFileInfo, &end, sizeof end))
        return fail_with_last_error();
    return true;
}

bool dn_os_file_size(int fd, uint64_t *size)
{
    LARGE_INTEGER got;
    if (!GetFileSizeEx(handle_of(fd), &got)) return fail_with_last_error();
    *size = (uint64_t)got.QuadPart;
    return true;
}

static bool same_file(HANDLE a, HANDLE b)
{
    BY_HANDLE_FILE_INFORMATION x, y;
    return GetFileInformationByHandle(a, &x) && GetFileInformationByHandle(b, &y) &&
           x.dwVolumeSerialNumber == y.dwVolumeSerialNumber &&
           x.nFileIndexHigh == y.nFileIndexHigh && x.nFileIndexLow == y.nFileIndexLow;
}

/* A removed file whose handles are still open stays "delete pending" until the last
 * closes, or (Wine) loses its name at once: either way, its path no longer opens the
 * same file. */
bool dn_os_file_linked(int fd)
{
    HANDLE h = handle_of(fd);
    FILE_STANDARD_INFO info;
    if (!GetFileInformationByHandleEx(h, FileStandardInfo, &info, sizeof info))
        return fail_with_last_error();
    if (info.DeletePending || info.NumberOfLinks == 0) return false;
    DWORD len = GetFinalPathNameByHandleW(h, NULL, 0, FILE_NAME_NORMALIZED);
    wchar_t *path = len ? malloc((size_t)len * sizeof *path) : NULL;
    DWORD got = path ? GetFinalPathNameByHandleW(h, path, len, FILE_NAME_NORMALIZED) : 0;
    HANDLE by_name = INVALID_HANDLE_VALUE;
    if (got > 0 && got < len)
        by_name = CreateFileW(path, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                              OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    free(path);
    if (by_name == INVALID_HANDLE_VALUE) return false;
    bool linked = same_file(h, by_name);
    CloseHandle(by_name);
    return linked;
}

uint64_t dn_os_file_size_limit(void)
{
    return UINT64_MAX;
}

/* FlushFileBuffers asks the drive to write its cache through as well. */
bool dn_os_sync_data(int fd)
{
    if (!FlushFileBuffers(handle_of(fd))) return fail_with_last_error();
    return true;
}

bool dn_os_sync_file(int fd)
{
    return dn_os_sync_data(fd);
}

/* NTFS logs every change of a folder's names in its journal before it makes it, and
 * Win32 has no way for an unprivileged process to flush a folder: replacements use
 * MOVEFILE_WRITE_THROUGH instead. */
bool dn_os_sync_folder(int dir_fd)
{
    (void)dir_fd;
    return true;
}

bool dn_os_sync_parent_folder(const char *path)
{
    (void)path;
    return true;
}

/* Unlike rename(2), MoveFileExW fails (EACCES) while another process holds `to` open,
 * whatever sharing mode it chose. */
bool dn_os_replace(const char *from, const char *to)
{
    wchar_t *wide_from = wide_from_utf8(from);
    wchar_t *wide_to = wide_from ? wide_from_utf8(to) : NULL;
    bool ok = wide_to &&
              MoveFileExW(wide_from, wide_to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH);
    if (wide_to && !ok) fail_with_last_error();
    free(wide_from);
    free(wide_to);
    return ok;
}

static bool remove_wide(const wchar_t *path)
{
    if (!DeleteFileW(path)) return fail_with_last_error();
    return true;
}

bool dn_os_remove(const char *path)
{
    wchar_t *wide = wide_from_utf8(path);
    bool ok = wide && remove_wide(wide);
    free(wide);
    return ok;
}

bool dn_os_remove_at(int dir_fd, const char *name)
{
    wchar_t *path = path_in_folder(dir_fd, name);
    bool ok = path && remove_wide(path);
    free(path);
    return ok;
}

bool dn_os_lock_now(int fd)
{
    OVERLAPPED whole_file;
    memset(&whole_file, 0, sizeof whole_file);
    if (!LockFileEx(handle_of(fd), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, MAXDWORD,
                    MAXDWORD, &whole_file))
        return fail_with_last_error();
    return true;
}

/* Folders. */

static bool is_folder(const wchar_t *path)
{
    DWORD attributes = GetFileAttributesW(path);
    return attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY);
}

/* Each prefix ending before a separator is created in turn. A prefix that cannot be
 * (a drive `C:`, a share `\\server`) is passed over: only the whole path must end up
 * a folder. New folders inherit the permissions of their parent, which under a user's
 * profile admit that user alone. */
bool dn_os_make_folders(const char *dir)
{
    wchar_t *path = wide_from_utf8(dir);
    if (!path) return false;
    bool ok = true;
    for (wchar_t *p = path + 1; ok; p++) {
        bool end = *p == L'\0';
        if (!end && *p != L'/' && *p != L'\\') continue;
        wchar_t separator = *p;
        *p = L'\0';
        if (!CreateDirectoryW(path, NULL)) {
            DWORD error = GetLastError();
            if (end && !is_folder(path)) {
                set_errno_from(error);
                ok = false;
            }
        }
        if (end) break;
        *p = separator;
    }
    free(path);
    return ok;
}

int dn_os_open_folder(const char *path)
{
    wchar_t *wide = wide_from_utf8(path);
    if (!wide) return -1;
    /* FILE_FLAG_BACKUP_SEMANTICS is what opens a folder rather than a file. */
    HANDLE h =
        CreateFileW(wide, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                    NULL, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    free(wide);
    if (h == INVALID_HANDLE_VALUE) {
        fail_with_last_error();
        return -1;
    }
    /* The flag opens a file as well. */
    BY_HANDLE_FILE_INFORMATION info;
    if (!GetFileInformationByHandle(h, &info) ||
        !(info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        CloseHandle(h);
        errno = ENOTDIR;
        return -1;
    }
    int fd = _open_osfhandle((intptr_t)h, _O_RDONLY);
    if (fd < 0) {
        CloseHandle(h);
        errno = EMFILE;
    }
    return fd;
}

bool dn_os_list_folder(int dir_fd, bool (*on_name)(void *ud, const char *name), void *ud)
{
    wchar_t *pattern = path_in_folder(dir_fd, NULL);
    if (!pattern) return false;
    WIN32_FIND_DATAW found;
    HANDLE find = FindFirstFileW(pattern, &found);
    free(pattern);
    if (find == INVALID_HANDLE_VALUE) return fail_with_last_error();
    bool ok = true;
    do {
        if (wcscmp(found.cFileName, L".") == 0 || wcscmp(found.cFileName, L"..") == 0) continue;
        char *name = utf8_from_wide(found.cFileName);
        if (!name) {
            errno = ENOMEM;
            ok = false;
            break;
        }
        ok = on_name(ud, name);
        free(name);
    } while (ok && FindNextFileW(find, &found));
    if (ok && GetLastError() != ERROR_NO_MORE_FILES) ok = fail_with_last_error();
    FindClose(find);
    return ok;
}

bool dn_os_file_stamp_of(const char *path, dn_os_file_stamp *stamp)
{
    wchar_t *wide = wide_from_utf8(path);
    if (!wide) return false;
    /* No access asked: only the attributes are read, whoever holds the file. */
    HANDLE h = CreateFileW(wide, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    free(wide);
    if (h == INVALID_HANDLE_VALUE) return fail_with_last_error();
    BY_HANDLE_FILE_INFORMATION info;
    bool ok = GetFileInformationByHandle(h, &info) != 0;
    if (!ok) fail_with_last_error();
    CloseHandle(h);
    if (!ok) return false;
    stamp->device = info.dwVolumeSerialNumber;
    stamp->file = ((uint64_t)info.nFileIndexHigh << 32) | info.nFileIndexLow;
    stamp->size = ((uint64_t)info.nFileSizeHigh << 32) | info.nFileSizeLow;
    uint64_t ticks =
        ((uint64_t)info.ftLastWriteTime.dwHighDateTime << 32) | info.ftLastWriteTime.dwLowDateTime;
    stamp->mtime_ns = ticks * 100u;
    return true;
}

/* Sockets. curl_global_init has called WSAStartup. */

curl_socket_t dn_os_socket_open(int family, int type, int protocol)
{
    SOCKET s = socket(family, type, protocol);
    if (s == INVALID_SOCKET) return CURL_SOCKET_BAD;
    SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
    return s;
}

int dn_os_socket_close(curl_socket_t fd)
{
    return closesocket(fd);
}

bool dn_os_socket_silence(curl_socket_t fd)
{
    (void)fd; /* never called: there is no fork */
    return false;
}

/* The poller: select() over a list of sockets. select, not WSAPoll, because WSAPoll
 * did not report a refused connection before Windows 10 2004: curl would wait for its
 * connect timeout. No descriptor stands for the set: dn.poll_fd() answers nil. */

typedef struct watched_socket {
    SOCKET fd;
    unsigned events;
} watched_socket;

struct dn_poller {
    watched_socket sockets[FD_SETSIZE];
    size_t count;
    fd_set readable, writable, failed; /* select's arguments, kept to spare the stack */
};

dn_poller *dn_poller_new(void)
{
    return calloc(1, sizeof(dn_poller));
}

void dn_poller_free(dn_poller *p)
{
    free(p);
}

bool dn_poller_watch(dn_poller *p, curl_socket_t fd, unsigned was, unsigned events)
{
    (void)was; /* the list is the truth: nothing can disagree with it */
    if (!p) return false;
    size_t i = 0;
    while (i < p->count && p->sockets[i].fd != fd) i++;
    if (events == 0) {
        if (i < p->count) p->sockets[i] = p->sockets[--p->count];
        return true;
    }
    if (i == p->count) {
        if (p->count == FD_SETSIZE) return false;
        p->sockets[p->count++].fd = fd;
    }
    p->sockets[i].events = events;
    return true;
}

int dn_poller_ready(dn_poller *p, dn_poll_event *ready, int max, int timeout_ms)
{
    if (!p) return -1;
    if (p->count == 0) {
        /* select refuses empty sets. */
        if (timeout_ms > 0) Sleep((DWORD)timeout_ms);
        return 0;
    }
    fd_set *readable = &p->readable, *writable = &p->writable, *failed = &p->failed;
    FD_ZERO(readable);
    FD_ZERO(writable);
    FD_ZERO(failed);
    for (size_t i = 0; i < p->count; i++) {
        if (p->sockets[i].events & DN_POLL_IN) FD_SET(p->sockets[i].fd, readable);
        if (p->sockets[i].events & DN_POLL_OUT) FD_SET(p->sockets[i].fd, writable);
        FD_SET(p->sockets[i].fd, failed);
    }
    struct timeval wait = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int n = select(0, readable, writable, failed, &wait);
    int found = 0;
    for (size_t i = 0; n > 0 && i < p->count && found < max; i++) {
        SOCKET fd = p->sockets[i].fd;
        unsigned what = 0;
        if (FD_ISSET(fd, readable)) what |= DN_POLL_IN;
        if (FD_ISSET(fd, writable)) what |= DN_POLL_OUT;
        if (FD_ISSET(fd, failed)) what |= DN_POLL_ERR;
        if (what) ready[found++] = (dn_poll_event){.fd = fd, .events = what};
    }
    return n < 0 ? -1 : found;
}

int dn_poller_fd(const dn_poller *p)
{
    (void)p;
    return -1;
}
