/* The reference of row 2: a plain C loop over one libcurl multi handle with 16 reused
 * easy handles, sending the same PUT as dukanext (body from the template, same
 * headers), the way a C programmer would write it: curl_multi_perform, then
 * curl_multi_poll, re-adding each finished handle with the next body.
 *
 *   gcc -O2 -o multi_loop bench/multi_loop.c -lcurl
 *   ./multi_loop URL TEMPLATE_FILE N SEQ [IN_FLIGHT]
 *
 * Prints one JSON line: events_per_s, cpu_us_per_event, wall_s, cpu_s, sent, failed. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_HANDLES 1024

typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    char body[4096];
    char key_header[80];
} slot;

static char prefix[4096], suffix[4096], user_agent[256];
static long long next_seq, started, sent, failed, total;

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static size_t discard(char *data, size_t size, size_t n, void *ud)
{
    (void)data;
    (void)ud;
    return size * n;
}

static void read_line(FILE *f, char *out, size_t cap)
{
    if (!fgets(out, (int)cap, f)) {
        fprintf(stderr, "multi_loop: short template\n");
        exit(2);
    }
    out[strcspn(out, "\n")] = 0;
}

/* Gives the slot the next event and hands it to the multi handle. */
static void start(CURLM *multi, slot *s)
{
    long long seq = next_seq++;
    int len = snprintf(s->body, sizeof s->body, "%s%lld%s", prefix, seq, suffix);
    snprintf(s->key_header, sizeof s->key_header, "Idempotency-Key: 00000000-0000-4000-8000-%012lld",
             seq % 1000000000000LL);
    /* The key header is the list's first node; the rest never changes. */
    s->headers->data = s->key_header;
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
    curl_multi_add_handle(multi, s->easy);
    started++;
}

/* Sends count events with at most in_flight at a time. */
static void run(CURLM *multi, slot *slots, int in_flight, long long count)
{
    for (int i = 0; i < in_flight && started < count; i++) start(multi, &slots[i]);
    while (sent + failed < count) {
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *easy = msg->easy_handle;
            CURLcode rc = msg->data.result;
            long status = 0;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
            slot *s;
            curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
            curl_multi_remove_handle(multi, easy);
            if (rc == CURLE_OK && status >= 200 && status < 300)
                sent++;
            else
                failed++;
            if (started < count) start(multi, s);
        }
        if (sent + failed < count) curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: multi_loop URL TEMPLATE N SEQ [IN_FLIGHT]\n");
        return 2;
    }
    const char *url = argv[1];
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    read_line(f, prefix, sizeof prefix);
    read_line(f, suffix, sizeof suffix);
    read_line(f, user_agent, sizeof user_agent);
    fclose(f);
    total = atoll(argv[3]);
    next_seq = atoll(argv[4]);
    int in_flight = argc > 5 ? atoi(argv[5]) : 16;
    if (in_flight < 1 || in_flight > MAX_HANDLES) return 2;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    slot *slots = calloc((size_t)in_flight, sizeof *slots);
    for (int i = 0; i < in_flight; i++) {
        slot *s = &slots[i];
        s->easy = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "Idempotency-Key: x");
        h = curl_slist_append(h, "Content-Type: application/json");
        h = curl_slist_append(h, "X-Dukanext-Attempt: 1");
        h = curl_slist_append(h, "Expect:");
        free(h->data); /* the first node will point at the slot's key_header */
        h->data = s->key_header;
        s->headers = h;
        curl_easy_setopt(s->easy, CURLOPT_URL, url);
        curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(s->easy, CURLOPT_USERAGENT, user_agent);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    }

    /* Connections up before the clock starts, as wrk connects before it counts. */
    run(multi, slots, in_flight, in_flight);
    long long warm_failed = failed;
    sent = failed = started = 0;

    double w0 = wall_now(), c0 = cpu_now();
    run(multi, slots, in_flight, total);
    double w1 = wall_now(), c1 = cpu_now();

    printf("{\"events_per_s\":%.1f,\"cpu_us_per_event\":%.3f,\"wall_s\":%.4f,\"cpu_s\":%.4f,"
           "\"sent\":%lld,\"failed\":%lld,\"n\":%lld,\"max_in_flight\":%d}\n",
           total / (w1 - w0), (c1 - c0) / total * 1e6, w1 - w0, c1 - c0, sent, failed, total,
           in_flight);
    for (int i = 0; i < in_flight; i++) {
        curl_easy_cleanup(slots[i].easy);
        slots[i].headers->data = NULL; /* the slot's key_header, not malloc'd */
        curl_slist_free_all(slots[i].headers);
    }
    free(slots);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    return failed || warm_failed ? 1 : 0;
}
