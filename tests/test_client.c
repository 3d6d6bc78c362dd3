/* What a client accepts in a process that forks before it pumps (nginx's master):
 * nothing, while the processes it forks accept as usual. */
#include "check.h"
#include "client.h"
#include "os.h"

#include <sys/wait.h>
#include <unistd.h>

static dn_client *client_with_endpoint(dn_hub *hub)
{
    dn_config config;
    dn_config_defaults(&config);
    if (!dn_config_set_string(&config.endpoint, "http://127.0.0.1:9/access/api/v1/analytics")) {
        dn_config_free(&config);
        return NULL;
    }
    return dn_client_new(hub, &config);
}

static bool child_accepts(dn_client *c)
{
    return dn_client_can_accept(c) == DN_ACCEPTED &&
           dn_client_accept(c, "{}", 2, NULL, 0, NULL, 0) == DN_ACCEPTED &&
           dn_client_pending(c) == 1;
}

static void test_marked_process_refuses_and_its_children_accept(void)
{
    dn_hub *hub = dn_hub_new();
    if (!CHECK(hub != NULL)) return;
    dn_client *c = client_with_endpoint(hub);
    if (!CHECK(c != NULL)) {
        dn_hub_release(hub);
        return;
    }
    CHECK_INT_EQ(dn_client_can_accept(c), DN_ACCEPTED);

    dn_hub_mark_forks_before_pumping(hub);
    CHECK_INT_EQ(dn_client_can_accept(c), DN_REFUSED_BEFORE_FORK);
    CHECK_INT_EQ(dn_client_accept(c, "{}", 2, NULL, 0, NULL, 0), DN_REFUSED_BEFORE_FORK);
    CHECK_UINT_EQ(dn_client_pending(c), 0);

    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        /* The child, and a child of its own: neither is marked. */
        fflush(NULL);
        pid_t grandchild = fork();
        if (grandchild == 0) _exit(child_accepts(c) ? 0 : 1);
        int status = -1;
        bool grandchild_ok = grandchild > 0 && waitpid(grandchild, &status, 0) == grandchild &&
                             WIFEXITED(status) && WEXITSTATUS(status) == 0;
        _exit(grandchild_ok && child_accepts(c) ? 0 : 1);
    }
    int status = -1;
    CHECK(child > 0 && waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The marked process still refuses. */
    CHECK_INT_EQ(dn_client_can_accept(c), DN_REFUSED_BEFORE_FORK);
    dn_client_free(c);
    dn_hub_release(hub);
}

/* What dukanext.next_timeout() answers: nothing to do, an event due now, and a
 * report waiting for on_error. */
static void test_next_pump(void)
{
    dn_hub *hub = dn_hub_new();
    if (!CHECK(hub != NULL)) return;
    dn_client *c = client_with_endpoint(hub);
    if (!CHECK(c != NULL)) {
        dn_hub_release(hub);
        return;
    }
    int64_t now_ms = dn_mono_ms();
    CHECK_INT_EQ(dn_hub_next_pump_ms(hub, now_ms, 60000), -1);
    CHECK_INT_EQ(dn_client_accept(c, "{}", 2, NULL, 0, NULL, 0), DN_ACCEPTED);
    CHECK_INT_EQ(dn_hub_next_pump_ms(hub, now_ms, 60000), 0);
    dn_client_free(c);
    CHECK_INT_EQ(dn_hub_next_pump_ms(hub, now_ms, 60000), -1);

    c = client_with_endpoint(hub);
    if (!CHECK(c != NULL)) {
        dn_hub_release(hub);
        return;
    }
    c->wants_reports = true;
    dn_client_report(c, "STORAGE_ERROR", "get failed");
    CHECK_INT_EQ(dn_hub_next_pump_ms(hub, now_ms, 60000), 0);
    dn_report_free(dn_hub_take_report(hub));
    CHECK_INT_EQ(dn_hub_next_pump_ms(hub, now_ms, 60000), -1);
    dn_client_free(c);
    dn_hub_release(hub);
}

int main(void)
{
    RUN_CASE(test_marked_process_refuses_and_its_children_accept);
    RUN_CASE(test_next_pump);
    return check_report("test_client");
}
