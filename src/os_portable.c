/* The part of the OS seam the POSIX systems other than Linux use (see os.h): macOS,
 * the BSDs, and Linux itself when built with DUKANEXT_PORTABLE, which is how this file
 * is tested. */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __APPLE__
#include <sys/random.h> /* getentropy; elsewhere in unistd.h */
#endif

bool dn_os_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        size_t chunk = len < 256 ? len : 256; /* getentropy's most per call */
        if (getentropy(p, chunk) != 0) return false;
        p += chunk;
        len -= chunk;
    }
    return true;
}

/* On macOS fsync only hands the data to the drive, whose cache may lose it on power
 * loss; F_FULLFSYNC asks the drive to write it through. */
static bool sync_through(int fd)
{
    int rc;
#ifdef F_FULLFSYNC
    if (fcntl(fd, F_FULLFSYNC) == 0) return true;
        /* Some file systems (network, FAT) do not support it: fsync is what remains. */
#endif
    do rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

bool dn_os_sync_data(int fd)
{
    return sync_through(fd);
}

bool dn_os_sync_file(int fd)
{
    return sync_through(fd);
}

/* SOCK_CLOEXEC is missing on macOS: the flag is set right after. A host thread that
 * forks and execs in between could leak the socket to that program, which is why Linux
 * builds use SOCK_CLOEXEC. */
curl_socket_t dn_os_socket_open(int family, int type, int protocol)
{
    int fd = socket(family, type, protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

bool dn_os_socket_silence(curl_socket_t fd)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) return false;
    bool ok = dup2(null_fd, fd) >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
    close(null_fd);
    return ok;
}

/* The set is an array for poll(2): no descriptor stands for it, so a host's loop
 * cannot watch it and wakes on dn.next_timeout() instead. */
struct dn_poller {
    struct pollfd *fds;
    size_t count, cap;
};

dn_poller *dn_poller_new(void)
{
    return calloc(1, sizeof(dn_poller));
}

void dn_poller_free(dn_poller *p)
{
    if (!p) return;
    free(p->fds);
    free(p);
}

static struct pollfd *poller_find(dn_poller *p, curl_socket_t fd)
{
    for (size_t i = 0; i < p->count; i++)
        if (p->fds[i].fd == fd) return &p->fds[i];
    return NULL;
}

bool dn_poller_watch(dn_poller *p, curl_socket_t fd, unsigned was, unsigned events)
{
    (void)was; /* the array is the truth: nothing can disagree with it */
    if (!p) return false;
    struct pollfd *entry = poller_find(p, fd);
    if (events == 0) {
        if (entry) *entry = p->fds[--p->count];
        return true;
    }
    if (!entry) {
        if (p->count == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 16;
            struct pollfd *grown = realloc(p->fds, cap * sizeof *grown);
            if (!grown) return false;
            p->fds = grown;
            p->cap = cap;
        }
        entry = &p->fds[p->count++];
        entry->fd = fd;
    }
    entry->events =
        (short)(((events & DN_POLL_IN) ? POLLIN : 0) | ((events & DN_POLL_OUT) ? POLLOUT : 0));
    entry->revents = 0;
    return true;
}

int dn_poller_ready(dn_poller *p, dn_poll_event *ready, int max, int timeout_ms)
{
    if (!p) return -1;
    int n;
    do n = poll(p->fds, (nfds_t)p->count, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return n;
    int found = 0;
    for (size_t i = 0; i < p->count && found < max; i++) {
        short revents = p->fds[i].revents;
        if (!revents) continue;
        unsigned what = 0;
        if (revents & POLLIN) what |= DN_POLL_IN;
        if (revents & POLLOUT) what |= DN_POLL_OUT;
        if (revents & (POLLERR | POLLHUP | POLLNVAL)) what |= DN_POLL_ERR;
        ready[found++] = (dn_poll_event){.fd = p->fds[i].fd, .events = what};
    }
    return found;
}

int dn_poller_fd(const dn_poller *p)
{
    (void)p;
    return -1;
}
