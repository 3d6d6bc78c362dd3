/* The Lua binding: turns Lua values into calls of the C core and back. Nothing about
 * the wire, the ids or the schedule lives here; see client.c, session.c, transport.c. */
#include "binding.h"
#include "body.h"
#include "client.h"
#include "compat.h"
#include "file_store.h"
#include "ids.h"
#include "os.h"
#include "session.h"
#include "suggest.h"
#include "url.h"
#include "version.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Two registry entries: the hub box, and the metatable luaL_newmetatable keeps under
 * its own name. One name for both would let one overwrite the other. */
#define HUB_KEY   "dukanext.hub"
#define HUB_MT    "dukanext.hub.metatable"
#define CLIENT_MT "dukanext.client"

void lock_metatable(lua_State *L, const char *name)
{
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
}

#define CUSTOMERS_ID_MAX 1024
typedef struct client_box {
    lclient *lc; /* NULL until fully built and after collection */
} client_box;

int refuse(lua_State *L, const char *code, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", code, reason);
    return 2;
}

static void warn(const char *what, const char *detail)
{
    /* OpenResty sends stderr to nginx's error log; a game sees it on its console. */
    fprintf(stderr, "dukanext: %s: %s\n", what, detail ? detail : "(no message)");
}

const char *error_text(lua_State *L, int idx)
{
    const char *msg = lua_tostring(L, idx);
    return msg ? msg : "(error object is not a string)";
}

/* Turning TLS verification off must not go unnoticed; once per process is enough
 * to be seen in a log without flooding it. */
static void warn_insecure_once(const char *endpoint)
{
    static dn_mutex lock = DN_MUTEX_INIT;
    static bool warned;
    dn_mutex_lock(&lock);
    bool first = !warned;
    warned = true;
    dn_mutex_unlock(&lock);
    if (!first) return;
    char shown[512] = "(no endpoint yet)";
    if (endpoint) dn_url_redact(endpoint, strlen(endpoint), shown, sizeof shown);
    warn("TLS verification is off (insecure = true)", shown);
}

/* The module's state is closing (lua_close finalizes the hub before objects made
 * earlier, whose finalizers may still call us): nothing can be sent any more. */
#define CLOSING_REASON "dukanext is shut down: its Lua state is closing"

static bool state_closing(lua_State *L)
{
    return upvalue_hub(L)->hub == NULL;
}

static int refuse_closing(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "CLOSED: " CLOSING_REASON);
    return 2;
}

/* ---- clients: lookup, anchors, reports ---- */

static lclient *check_client(lua_State *L, int idx)
{
    client_box *box = luaL_checkudata(L, idx, CLIENT_MT);
    if (!box->lc) luaL_argerror(L, idx, "client is being collected");
    return box->lc;
}

/* Every method that runs Lua or allocates Lua values after finding its client runs
 * between these two (see lclient.calls_running). */
static lclient *enter_client(lua_State *L, int idx)
{
    lclient *lc = check_client(L, idx);
    lc->calls_running++;
    return lc;
}

static int leave_client(lclient *lc, int results)
{
    lc->calls_running--;
    return results;
}

/* A client with work left holds a registry reference to itself, so dropping the
 * last Lua reference does not drop its events. */
void anchor_if_busy(lua_State *L, lclient *lc, int self)
{
    if (lc->anchor_ref == LUA_NOREF && dn_client_busy(lc->core)) {
        lua_pushvalue(L, self);
        lc->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

static void release_anchor(lua_State *L, lclient *lc)
{
    if (lc->anchor_ref == LUA_NOREF) return;
    luaL_unref(L, LUA_REGISTRYINDEX, lc->anchor_ref);
    lc->anchor_ref = LUA_NOREF;
}

static void release_idle_anchors(lua_State *L, dn_hub *hub)
{
    if (!dn_hub_take_idle_change(hub)) return;
    /* luaL_unref never allocates, so no finalizer can unlink a client mid-walk. */
    for (dn_client *c = hub->clients; c; c = c->next)
        if (!dn_client_busy(c)) release_anchor(L, c->host);
}

static void set_field_string(lua_State *L, const char *name, const char *value)
{
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
}

static void push_error_table(lua_State *L, const dn_report *r)
{
    lua_createtable(L, 0, 6);
    set_field_string(L, "code", r->code);
    if (r->status > 0) {
        lua_pushinteger(L, (lua_Integer)r->status);
        lua_setfield(L, -2, "status");
    }
    if (r->message) set_field_string(L, "message", r->message);
    if (!r->event) return;
    lua_pushinteger(L, (lua_Integer)r->attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushlstring(L, dn_event_body(r->event), r->event->body_len);
    lua_setfield(L, -2, "body");
    /* The name is read back from the body: keeping it apart would cost every event. */
    lua_pushvalue(L, lua_upvalueindex(UV_DECODE));
    lua_pushlstring(L, dn_event_body(r->event), r->event->body_len);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "event");
        lua_setfield(L, -3, "event");
    }
    lua_pop(L, 1);
}

/* Runs on_error for each failure waiting. Callbacks run under pcall: what they raise
 * is reported on stderr and never unwinds into the core. */
static void deliver_reports(lua_State *L, hub_box *hb)
{
    dn_report *r;
    while ((r = dn_hub_take_report(hb->hub))) {
        lclient *lc = r->client->host;
        int top = lua_gettop(L);
        /* A client with reports waiting is anchored; holding it on the stack keeps it
         * alive whatever the callback does. */
        lua_rawgeti(L, LUA_REGISTRYINDEX, lc->anchor_ref);
        if (lua_isuserdata(L, -1)) {
            push_client_value(L, top + 1, CLIENT_VALUE_ON_ERROR);
            if (lua_isfunction(L, -1)) {
                push_error_table(L, r);
                if (lua_pcall(L, 1, 0, 0) != LUA_OK) warn("on_error raised", error_text(L, -1));
            }
        }
        lua_settop(L, top);
        dn_report_free(r);
    }
}

static void after_work(lua_State *L, hub_box *hb)
{
    if (hb->hub->reports_head) deliver_reports(L, hb);
    release_idle_anchors(L, hb->hub);
}

/* Pushes a new client built from the options at index opts (may be absent). */
static void push_new_client(lua_State *L, hub_box *hb, int opts)
{
    if (opts) opts = dn_lua_absindex(L, opts);
    int options = read_options(L, opts);
    check_options(L, options);

    /* Marked unbuilt before the metatable is set, so a failure below leaves an object
     * that collects safely. */
    client_box *box = lua_newuserdata(L, sizeof *box);
    box->lc = NULL;
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);
    int self = lua_gettop(L);
    lua_createtable(L, 3, 0);
    dn_lua_setuservalue(L, self);

    dn_config config;
    dn_config_defaults(&config);
    lclient *lc = calloc(1, sizeof *lc);
    if (!apply_options(L, options, &config) || !lc) {
        dn_config_free(&config);
        free(lc);
        luaL_error(L, "dukanext: out of memory");
        return;
    }
    lc->core = dn_client_new(hb->hub, &config);
    if (!lc->core) {
        free(lc);
        luaL_error(L, "dukanext: out of memory");
        return;
    }
    dn_client_set_host(lc->core, lc);
    lc->anchor_ref = LUA_NOREF;
    box->lc = lc;
    lc->box = box;
    if (lc->core->config.insecure) warn_insecure_once(lc->core->config.endpoint);

    lua_pushvalue(L, option_slot(options, "storage"));
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        push_memory_storage(L);
    }
    set_client_value(L, self, CLIENT_VALUE_STORAGE);
    lua_pushvalue(L, option_slot(options, "on_error"));
    dn_client_want_reports(lc->core, !lua_isnil(L, -1));
    set_client_value(L, self, CLIENT_VALUE_ON_ERROR);
    /* Events replayed from a spool are work: the client must outlive its last reference. */
    anchor_if_busy(L, lc, self);
    /* The client takes the place of the options read. */
    lua_replace(L, options);
    lua_settop(L, options);
}

static void release_callbacks(lua_State *L, lclient *lc, int self)
{
    lua_pushnil(L);
    set_client_value(L, self, CLIENT_VALUE_ON_ERROR);
    dn_client_want_reports(lc->core, false);
}

/* ---- client methods ---- */

/* Answers how many events were undelivered. */
static size_t close_client(lua_State *L, lclient *lc, int self)
{
    if (lc->core->closed) return 0;
    size_t undelivered = dn_client_close(lc->core);
    release_callbacks(L, lc, self);
    release_anchor(L, lc);
    return undelivered;
}

static void free_client(lua_State *L, lclient *lc)
{
    /* Cancels any transfer still in flight: only reached at lua_close, since a busy
     * client is anchored. */
    dn_client_free(lc->core);
    luaL_unref(L, LUA_REGISTRYINDEX, lc->anchor_ref);
    free(lc->customers_id);
    dn_session_memo_free(&lc->session_memo);
    free(lc);
}

static int client_gc(lua_State *L)
{
    client_box *box = lua_touserdata(L, 1);
    lclient *lc = box->lc;
    if (!lc) return 0;
    if (lc->calls_running > 0) {
        close_client(L, lc, 1);
        lc->box = NULL;
        return 0;
    }
    box->lc = NULL;
    free_client(L, lc);
    return 0;
}

static int client_close(lua_State *L)
{
    client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
    size_t undelivered = box->lc ? close_client(L, box->lc, 1) : 0;
    lua_pushinteger(L, (lua_Integer)undelivered);
    return 1;
}

static int client_tostring(lua_State *L)
{
    client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
    const char *state = !box->lc ? "collected" : box->lc->core->closed ? "closed" : "open";
    lua_pushfstring(L, "dukanext.client (%s): %p", state, (void *)box);
    return 1;
}

/* Stack slots emit keeps the checked `fields` in, filled from arg 4. */
static int client_emit(lua_State *L)
{
    check_client(L, 1);
    if (state_closing(L)) return refuse_closing(L);
    lclient *lc = enter_client(L, 1);
    return leave_client(lc, emit_running(L, lc));
}

static int client_get_user_id(lua_State *L)
{
    check_client(L, 1);
    check_storage_arg(L, 2);
    if (state_closing(L)) return refuse_closing(L);
    lclient *lc = enter_client(L, 1);
    char id[DN_ID_MAX + 1];
    size_t len;
    bool ok = storage_user_id(L, lc, 2, id, &len);
    anchor_if_busy(L, lc, 1);
    leave_client(lc, 0);
    if (!ok) return luaL_error(L, "dukanext: the system gave no randomness for an id");
    lua_pushlstring(L, id, len);
    return 1;
}

static int client_get_session_id(lua_State *L)
{
    check_client(L, 1);
    check_storage_arg(L, 2);
    if (state_closing(L)) return refuse_closing(L);
    lclient *lc = enter_client(L, 1);
    dn_session session = {0};
    bool ok = storage_session(L, lc, 2, &session);
    anchor_if_busy(L, lc, 1);
    leave_client(lc, 0);
    if (!ok) return luaL_error(L, "dukanext: the system gave no randomness for an id");
    lua_pushlstring(L, session.id, session.id_len);
    dn_session_clear(&session);
    return 1;
}

static const char *check_customers_id_arg(lua_State *L, int arg)
{
    size_t len;
    const char *id = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, len > 0 && len <= CUSTOMERS_ID_MAX && strlen(id) == len, arg,
                  "customers id must be a non-empty string without NUL");
    return id;
}

static int client_identify(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    const char *id = check_customers_id_arg(L, 2);
    char *copy = strdup(id);
    if (!copy) return luaL_error(L, "dukanext: out of memory");
    free(lc->customers_id);
    lc->customers_id = copy;
    return 0;
}

static int client_reset(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    free(lc->customers_id);
    lc->customers_id = NULL;
    return 0;
}

static void set_count(lua_State *L, const char *name, uint64_t value)
{
    lua_pushinteger(L, (lua_Integer)value);
    lua_setfield(L, -2, name);
}

static int client_stats(lua_State *L)
{
    lclient *lc = enter_client(L, 1);
    dn_hub_check_fork(lc->core->hub); /* a child counts from zero */
    const dn_client *c = lc->core;
    lua_createtable(L, 0, 21);
    set_count(L, "queued", c->queue.count);
    set_count(L, "in_flight", c->in_flight);
    set_count(L, "sent", c->stats.sent);
    set_count(L, "failed", c->stats.failed);
    set_count(L, "dropped", c->stats.dropped);
    set_count(L, "dropped_max_queue", c->stats.dropped_max_queue);
    set_count(L, "dropped_max_queue_bytes", c->stats.dropped_max_queue_bytes);
    set_count(L, "queued_bytes", dn_client_pending_bytes(c));
    set_count(L, "dropped_spool_max_bytes", c->stats.dropped_spool_max_bytes);
    set_count(L, "replayed", c->stats.replayed);
    set_count(L, "unspooled", c->stats.unspooled);
    set_count(L, "spool_pending", c->spool ? dn_spool_pending(c->spool) : 0);
    set_count(L, "spool_bytes", c->spool ? dn_spool_bytes(c->spool) : 0);
    set_count(L, "retries", c->stats.retries);
    set_count(L, "cancelled", c->stats.cancelled);
    set_count(L, "in_flight_limit", dn_concurrency_limit(&c->concurrency));
    lua_pushnumber(L, dn_concurrency_latency_ms(&c->concurrency));
    lua_setfield(L, -2, "latency_ms");
    set_count(L, "connections", dn_transport_connections(&c->hub->transport));
    set_count(L, "connects", c->stats.connects);
    set_count(L, "tls_resumed", c->stats.tls_resumed);
    return leave_client(lc, 1);
}

/* Pumps and sleeps in curl_multi_poll until target (or, when NULL, every client) has
 * nothing left, or the deadline passes. */
static int flush_until(lua_State *L, hub_box *hb, dn_client *target, double timeout)
{
    int64_t deadline =
        timeout < 0 || timeout > 1e9 ? INT64_MAX : dn_mono_ms() + (int64_t)(timeout * 1000.0);
    for (;;) {
        dn_hub_pump(hb->hub);
        after_work(L, hb);
        size_t pending = target ? dn_client_pending(target) : hb->hub->pending;
        if (pending == 0) {
            lua_pushboolean(L, 1);
            return 1;
        }
        int64_t now = dn_mono_ms();
        if (now >= deadline) {
            lua_pushnil(L);
            lua_pushliteral(L, "TIMEOUT");
            lua_pushinteger(L, (lua_Integer)pending);
            return 3;
        }
        int64_t left = deadline - now;
        dn_hub_wait(hb->hub, dn_hub_idle_ms(hb->hub, now, left < 1000 ? (int)left : 1000));
    }
}

/* Seconds, or -1 for no deadline. */
static double check_timeout_arg(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg)) return -1;
    double timeout = luaL_checknumber(L, arg);
    luaL_argcheck(L, timeout >= 0 && timeout == timeout, arg,
                  "timeout must be a number of seconds >= 0");
    return timeout;
}

static int client_flush(lua_State *L)
{
    check_client(L, 1);
    double timeout = check_timeout_arg(L, 2);
    if (state_closing(L)) return refuse_closing(L);
    lclient *lc = enter_client(L, 1);
    return leave_client(lc, flush_until(L, upvalue_hub(L), lc->core, timeout));
}

/* ---- module functions ---- */

static void check_not_closing(lua_State *L)
{
    if (state_closing(L)) luaL_error(L, "dukanext: no new client: " CLOSING_REASON);
}

static int module_new(lua_State *L)
{
    check_not_closing(L);
    push_new_client(L, upvalue_hub(L), 1);
    return 1;
}

static int module_configure(lua_State *L)
{
    check_not_closing(L);
    hub_box *hb = upvalue_hub(L);
    push_new_client(L, hb, 1);
    /* The previous default keeps delivering what it accepted, then is collected. */
    luaL_unref(L, LUA_REGISTRYINDEX, hb->default_ref);
    lua_pushvalue(L, -1);
    hb->default_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int module_pump(lua_State *L)
{
    if (state_closing(L)) return refuse_closing(L);
    hub_box *hb = upvalue_hub(L);
    dn_hub_pump(hb->hub);
    after_work(L, hb);
    lua_pushinteger(L, (lua_Integer)hb->hub->pending);
    return 1;
}

/* For hosts with their own event loop: a descriptor that is readable whenever a
 * transfer has something to do (nil where the OS has no single one to give)... */
static int module_poll_fd(lua_State *L)
{
    if (state_closing(L)) return refuse_closing(L);
    hub_box *hb = upvalue_hub(L);
    dn_hub_check_fork(hb->hub);
    int fd = dn_transport_fd(&hb->hub->transport);
    if (fd < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, fd);
    return 1;
}

/* ...and the seconds until the next pump is due whatever the descriptor says (a
 * queued event, a retry, curl's own timeouts, a spool's group commit), or nil when
 * there is nothing to do. */
static int module_next_timeout(lua_State *L)
{
    if (state_closing(L)) return refuse_closing(L);
    int ms = dn_hub_next_pump_ms(upvalue_hub(L)->hub, dn_mono_ms(), 60000);
    if (ms < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, ms / 1000.0);
    return 1;
}

static int module_flush(lua_State *L)
{
    double timeout = check_timeout_arg(L, 1);
    if (state_closing(L)) return refuse_closing(L);
    return flush_until(L, upvalue_hub(L), NULL, timeout);
}

/* dn.emit(...) is the default client's c:emit(...). */
/* The module-level functions are the default client's methods. Their arguments are
 * checked before the client is put in front of them, so that an error names the
 * position the caller wrote. */
static void check_no_args(lua_State *L)
{
    (void)L;
}

static void check_storage_first(lua_State *L)
{
    check_storage_arg(L, 1);
}

static void check_customers_id_first(lua_State *L)
{
    check_customers_id_arg(L, 1);
}

#define DEFAULT_CLIENT_CALL(name, method, check_args)                                              \
    static int name(lua_State *L)                                                                  \
    {                                                                                              \
        check_args(L);                                                                             \
        if (state_closing(L)) return refuse_closing(L);                                            \
        hub_box *hb = upvalue_hub(L);                                                              \
        lua_rawgeti(L, LUA_REGISTRYINDEX, hb->default_ref);                                        \
        lua_insert(L, 1);                                                                          \
        return method(L);                                                                          \
    }

DEFAULT_CLIENT_CALL(module_emit, client_emit, check_no_args)
DEFAULT_CLIENT_CALL(module_get_user_id, client_get_user_id, check_storage_first)
DEFAULT_CLIENT_CALL(module_get_session_id, client_get_session_id, check_storage_first)
DEFAULT_CLIENT_CALL(module_identify, client_identify, check_customers_id_first)
DEFAULT_CLIENT_CALL(module_reset, client_reset, check_no_args)
DEFAULT_CLIENT_CALL(module_stats, client_stats, check_no_args)

/* Only at lua_close: the registry holds the hub. */
static int hub_gc(lua_State *L)
{
    hub_box *hb = lua_touserdata(L, 1);
    /* The clients left are those no finalizer will free: made by a finalizer during
     * lua_close (Lua gives those none), or finalized while a method of theirs ran. */
    for (dn_client *c = hb->hub ? hb->hub->clients : NULL, *next; c; c = next) {
        next = c->next;
        lclient *lc = c->host;
        if (lc->box) lc->box->lc = NULL;
        free_client(L, lc);
    }
    if (hb->hub) dn_hub_release(hb->hub);
    hb->hub = NULL;
    dn_buf_free(&hb->body);
    return 0;
}

static const luaL_Reg client_methods[] = {
    {"emit", client_emit},
    {"get_user_id", client_get_user_id},
    {"get_session_id", client_get_session_id},
    {"identify", client_identify},
    {"reset", client_reset},
    {"flush", client_flush},
    {"stats", client_stats},
    {"close", client_close},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"configure", module_configure},
    {"new", module_new},
    {"emit", module_emit},
    {"get_user_id", module_get_user_id},
    {"get_session_id", module_get_session_id},
    {"identify", module_identify},
    {"reset", module_reset},
    {"pump", module_pump},
    {"flush", module_flush},
    {"poll_fd", module_poll_fd},
    {"next_timeout", module_next_timeout},
    {"stats", module_stats},
    {"memory_storage", module_memory_storage},
    {"file_storage", module_file_storage},
    {NULL, NULL},
};

/* The hub of this Lua state, made on first load; requiring the module again (even
 * after package.loaded is cleared) shares it. */
static hub_box *push_hub(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HUB_KEY);
    if (lua_isuserdata(L, -1)) return lua_touserdata(L, -1);
    lua_pop(L, 1);
    hub_box *hb = lua_newuserdata(L, sizeof *hb);
    hb->hub = NULL;
    hb->default_ref = LUA_NOREF;
    dn_buf_init(&hb->body);
    luaL_newmetatable(L, HUB_MT);
    lua_pushcfunction(L, hub_gc);
    lua_setfield(L, -2, "__gc");
    lock_metatable(L, HUB_KEY); /* getmetatable answers the object's name */
    lua_setmetatable(L, -2);
    hb->hub = dn_hub_new();
    if (!hb->hub) luaL_error(L, "dukanext: cannot start libcurl");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, HUB_KEY);
    return hb;
}

/* A lua-cjson instance of our own, so the host's cjson settings never change what we
 * send. Leaves encode and decode on the stack. */
static void push_cjson(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    lua_call(L, 0, 1);
    int cjson = lua_gettop(L);
    /* The metadata is encoded alone, one level below the event object. */
    lua_getfield(L, cjson, "encode_max_depth");
    lua_pushinteger(L, METADATA_MAX_DEPTH - 1);
    lua_call(L, 1, 0);
    lua_getfield(L, cjson, "encode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    /* A list with any hole is sent as an object with string keys, rather than padded
     * with nulls or refused. */
    lua_getfield(L, cjson, "encode_sparse_array");
    lua_pushboolean(L, 1);
    lua_pushinteger(L, 1);
    lua_pushinteger(L, 0);
    lua_call(L, 3, 0);
    lua_getfield(L, cjson, "encode");
    lua_getfield(L, cjson, "decode");
    lua_remove(L, cjson);
    lua_remove(L, cjson - 1);
}

/* nginx runs init_by_lua in its master, which then forks the workers and never runs
 * Lua again to pump: an event accepted there would be neither delivered nor reported.
 * A fresh Lua state is made for each (re)load of the configuration, so the phase seen
 * when the module loads is the phase of the whole state. */
static bool loaded_in_nginx_init_phase(lua_State *L)
{
    int top = lua_gettop(L);
    bool init_phase = false;
    lua_getglobal(L, "ngx");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "get_phase");
        if (lua_isfunction(L, -1) && lua_pcall(L, 0, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING)
            init_phase = strcmp(lua_tostring(L, -1), "init") == 0;
    }
    lua_settop(L, top);
    return init_phase;
}

/* The only symbol the module exports; everything else is hidden. */
DN_EXPORT int luaopen_dukanext(lua_State *L);

/* An address inside the module, to pin it by (a function's would not convert to a data
 * pointer in ISO C). */
static const char module_anchor;

int luaopen_dukanext(lua_State *L)
{
    if (!dn_transport_global_init()) return luaL_error(L, "dukanext: cannot initialise libcurl");
    dn_pin_module(&module_anchor);
    int base = lua_gettop(L);
    hub_box *hb = push_hub(L);
    if (loaded_in_nginx_init_phase(L)) dn_hub_mark_forks_before_pumping(hb->hub);
    push_cjson(L);
    int upvalues = base + 1;

    luaL_newmetatable(L, CLIENT_MT);
    lua_createtable(L, 0, 8);
    for (int i = 0; i < UV_COUNT; i++) lua_pushvalue(L, upvalues + i);
    dn_lua_setfuncs(L, client_methods, UV_COUNT);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    lock_metatable(L, CLIENT_MT);
    lua_pop(L, 1);

    luaL_newmetatable(L, FILE_STORE_MT);
    lua_pushcfunction(L, file_store_gc);
    lua_setfield(L, -2, "__gc");
    lock_metatable(L, FILE_STORE_MT);
    lua_pop(L, 1);

    lua_createtable(L, 0, 16);
    for (int i = 0; i < UV_COUNT; i++) lua_pushvalue(L, upvalues + i);
    dn_lua_setfuncs(L, module_functions, UV_COUNT);
    lua_pushliteral(L, DN_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushinteger(L, DN_USER_AGENT_MAX);
    lua_setfield(L, -2, "USER_AGENT_MAX");

    push_new_client(L, hb, 0);
    luaL_unref(L, LUA_REGISTRYINDEX, hb->default_ref);
    hb->default_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}
