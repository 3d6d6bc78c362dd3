/* The Linux part of the OS seam (see os.h): what Linux offers beyond POSIX. */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

bool dn_os_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    if (len == 0) return true;

    /* Kernels before 3.17 have no getrandom. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    return len == 0;
}

bool dn_os_sync_data(int fd)
{
    int rc;
    do rc = fdatasync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

bool dn_os_sync_file(int fd)
{
    int rc;
    do rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0;
}

curl_socket_t dn_os_socket_open(int family, int type, int protocol)
{
    int fd = socket(family, type | SOCK_CLOEXEC, protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

bool dn_os_socket_silence(curl_socket_t fd)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) return false;
    bool ok = dup3(null_fd, fd, O_CLOEXEC) >= 0;
    close(null_fd);
    return ok;
}

/* The set is an epoll descriptor, which is also what a host's loop can watch. */
struct dn_poller {
    int epoll_fd;
};

dn_poller *dn_poller_new(void)
{
    dn_poller *p = malloc(sizeof *p);
    if (!p) return NULL;
    p->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epoll_fd < 0) {
        free(p);
        return NULL;
    }
    return p;
}

void dn_poller_free(dn_poller *p)
{
    if (!p) return;
    close(p->epoll_fd);
    free(p);
}

bool dn_poller_watch(dn_poller *p, curl_socket_t fd, unsigned was, unsigned events)
{
    if (!p) return false;
    if (events == 0) {
        /* EBADF or ENOENT here only mean it had already gone. */
        epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        return true;
    }
    struct epoll_event ev = {.data.fd = fd};
    if (events & DN_POLL_IN) ev.events |= EPOLLIN;
    if (events & DN_POLL_OUT) ev.events |= EPOLLOUT;
    int first = was ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(p->epoll_fd, first, fd, &ev) == 0) return true;
    /* The caller's table and the set disagree: the other operation then fits. */
    int second = was ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    return epoll_ctl(p->epoll_fd, second, fd, &ev) == 0;
}

int dn_poller_ready(dn_poller *p, dn_poll_event *ready, int max, int timeout_ms)
{
    struct epoll_event events[64];
    if (!p) return -1;
    if (max > (int)(sizeof events / sizeof events[0]))
        max = (int)(sizeof events / sizeof events[0]);
    int n = epoll_wait(p->epoll_fd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        unsigned what = 0;
        if (events[i].events & EPOLLIN) what |= DN_POLL_IN;
        if (events[i].events & EPOLLOUT) what |= DN_POLL_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) what |= DN_POLL_ERR;
        ready[i] = (dn_poll_event){.fd = events[i].data.fd, .events = what};
    }
    return n;
}

int dn_poller_fd(const dn_poller *p)
{
    return p ? p->epoll_fd : -1;
}
