#include "process.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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

int64_t dn_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void dn_pin_module(void *symbol)
{
    Dl_info info;
    /* RTLD_NOLOAD only takes another reference to what is loaded; RTLD_NODELETE makes
     * that reference permanent. The handle is deliberately never closed. */
    if (dladdr(symbol, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}
