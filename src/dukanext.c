/* The Lua binding: turns Lua values into calls of the C core and back. Nothing about
 * the wire, the ids or the schedule lives here; see client.c, session.c, transport.c. */
#include "body.h"
#include "client.h"
#include "compat.h"
#include "file_store.h"
#include "ids.h"
#include "os.h"
#include "session.h"
#include "version.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HUB_KEY       "dukanext.hub"
#define HUB_MT        "dukanext.hub"
#define CLIENT_MT     "dukanext.client"
#define FILE_STORE_MT "dukanext.file_storage"

/* Every module function and client method shares these upvalues. */
#define UV_HUB    1 /* the hub box of this Lua state */
#define UV_ENCODE 2 /* encode of our private lua-cjson instance */
#define UV_DECODE 3
#define UV_COUNT  3

/* Deep enough for any sensible metadata, shallow enough to stop cycles quickly. */
#define METADATA_MAX_DEPTH 32
#define USER_AGENT_MAX     2048
#define CLIENT_IP_MAX      255
#define CUSTOMERS_ID_MAX   1024
/* The body buffer is kept between emits up to this size, and let go beyond. */
#define BODY_BUFFER_KEEP (256 * 1024)

typedef struct hub_box {
    dn_hub *hub;
    int default_ref; /* the module-level client */
    /* Where emit writes each body before the queue copies it. */
    dn_buf body;
} hub_box;

/* What the binding keeps per client, beside the core client. */
typedef struct lclient {
    dn_client *core;
    int anchor_ref; /* the client's own userdata while it has work left */
    char *customers_id;
    /* The last ids this client read or made, and the session record it last wrote
     * with what that record says: when the storage gives the same bytes back, emit
     * neither validates nor parses them again (see resolve_user_id, resolve_session). */
    char user_id_known[DN_ID_MAX + 1];
    size_t user_id_known_len;
    char *session_text;
    size_t session_text_len;
    dn_session session_known;
} lclient;

typedef struct client_box {
    lclient *lc; /* NULL until fully built and after collection */
} client_box;

/* The client's Lua values live in its userdata's user value, not in the registry:
 * a callback that refers to its own client is then an ordinary cycle the collector
 * can break. */
enum {
    CALLBACK_STORAGE = 1,
    CALLBACK_ON_ERROR,
    CALLBACK_FALLBACK, /* weak-keyed: storage -> {key = value} it could not keep */
};

static void push_client_value(lua_State *L, int self, int which)
{
    dn_lua_getuservalue(L, self);
    lua_rawgeti(L, -1, which);
    lua_remove(L, -2);
}

/* Pops the value on top into the client's slot `which`. */
static void set_client_value(lua_State *L, int self, int which)
{
    dn_lua_getuservalue(L, self);
    lua_insert(L, -2);
    lua_rawseti(L, -2, which);
    lua_pop(L, 1);
}

typedef struct file_store_box {
    dn_file_store *store;
} file_store_box;

static hub_box *upvalue_hub(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(UV_HUB));
}

static int refuse(lua_State *L, const char *code, const char *fmt, ...)
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

static const char *error_text(lua_State *L, int idx)
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
    warn("TLS verification is off (insecure = true)", endpoint ? endpoint : "(no endpoint yet)");
}

/* ---- clients: lookup, anchors, reports ---- */

static lclient *check_client(lua_State *L, int idx)
{
    client_box *box = luaL_checkudata(L, idx, CLIENT_MT);
    if (!box->lc) luaL_argerror(L, idx, "client is being collected");
    return box->lc;
}

/* A client with work left holds a registry reference to itself, so dropping the
 * last Lua reference does not drop its events. */
static void anchor_if_busy(lua_State *L, lclient *lc, int self)
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
    if (!hub->idle_clients) return;
    hub->idle_clients = false;
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
            push_client_value(L, top + 1, CALLBACK_ON_ERROR);
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

/* ---- storage: the host's get/set callbacks and the memory behind them ---- */

typedef enum store_read { STORE_FOUND, STORE_MISSING, STORE_FAILED } store_read;

/* Inside lua_pcall: storage[method](key [, value]), with whatever metatables the
 * storage has, so errors from __index are caught too. */
static int storage_call_protected(lua_State *L)
{
    int nargs = lua_gettop(L) - 2;
    const char *method = lua_tostring(L, 2);
    lua_getfield(L, 1, method);
    if (!lua_isfunction(L, -1)) return luaL_error(L, "storage has no %s function", method);
    lua_insert(L, 3);
    lua_call(L, nargs, 1);
    return 1;
}

static void report_storage_error(lua_State *L, lclient *lc, const char *method, const char *key,
                                 const char *problem)
{
    char message[512];
    snprintf(message, sizeof message, "storage.%s(\"%s\") %s", method, key, problem);
    dn_client_report(lc->core, "STORAGE_ERROR", message);
    (void)L;
}

static int memory_get(lua_State *L);
static int memory_set(lua_State *L);

/* When storage is the built-in memory storage (its get and set are ours, over one
 * table), pushes that table and returns true; else pushes nothing. Its get and set
 * cannot fail, so emit reads and writes the table directly instead of making three
 * protected Lua calls per event. */
static bool push_memory_table(lua_State *L, int storage)
{
    if (lua_type(L, storage) != LUA_TTABLE) return false;
    lua_pushliteral(L, "get");
    lua_rawget(L, storage);
    lua_pushliteral(L, "set");
    lua_rawget(L, storage);
    bool ours = lua_tocfunction(L, -2) == memory_get && lua_tocfunction(L, -1) == memory_set &&
                lua_getupvalue(L, -2, 1) && lua_getupvalue(L, -2, 1);
    if (ours && lua_rawequal(L, -1, -2)) {
        lua_replace(L, -4);
        lua_pop(L, 2);
        return true;
    }
    lua_settop(L, lua_gettop(L) - (ours ? 4 : 2));
    return false;
}

/* A storage as one call uses it: its stack index and, when it is the built-in memory
 * storage, the stack index of the table behind it (else 0), found once per call
 * rather than once per read and write. */
typedef struct storage_ref {
    int index;
    int memory;
} storage_ref;

/* May push the memory table: the caller's stack keeps it until it returns. */
static storage_ref open_storage(lua_State *L, int index)
{
    storage_ref storage = {index, 0};
    if (push_memory_table(L, index)) storage.memory = lua_gettop(L);
    return storage;
}

/* Pushes one value: the stored string, or nil when missing or failed. */
static store_read storage_read(lua_State *L, lclient *lc, const storage_ref *storage,
                               const char *key)
{
    if (storage->memory) {
        lua_pushstring(L, key);
        lua_rawget(L, storage->memory);
        if (lua_type(L, -1) == LUA_TSTRING) return STORE_FOUND;
        if (lua_isnil(L, -1)) return STORE_MISSING;
        lua_pop(L, 1); /* set("k", 1) kept a number: the call below reports it */
    }
    lua_pushcfunction(L, storage_call_protected);
    lua_pushvalue(L, storage->index);
    lua_pushliteral(L, "get");
    lua_pushstring(L, key);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        char problem[400];
        snprintf(problem, sizeof problem, "raised: %s", error_text(L, -1));
        report_storage_error(L, lc, "get", key, problem);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        return STORE_FOUND;
    } else if (lua_isnil(L, -1)) {
        return STORE_MISSING;
    } else {
        char problem[64];
        snprintf(problem, sizeof problem, "returned a %s", luaL_typename(L, -1));
        report_storage_error(L, lc, "get", key, problem);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    return STORE_FAILED;
}

static bool storage_write(lua_State *L, lclient *lc, const storage_ref *storage, const char *key,
                          const char *value, size_t len)
{
    if (storage->memory) {
        lua_pushstring(L, key);
        lua_pushlstring(L, value, len);
        lua_rawset(L, storage->memory);
        return true;
    }
    lua_pushcfunction(L, storage_call_protected);
    lua_pushvalue(L, storage->index);
    lua_pushliteral(L, "set");
    lua_pushstring(L, key);
    lua_pushlstring(L, value, len);
    bool ok = lua_pcall(L, 4, 1, 0) == LUA_OK;
    if (!ok) {
        char problem[400];
        snprintf(problem, sizeof problem, "raised: %s", error_text(L, -1));
        report_storage_error(L, lc, "set", key, problem);
    }
    lua_pop(L, 1);
    return ok;
}

/* When a storage fails, the id is kept here instead, per storage object, so the
 * visitor keeps one id for the life of the process. Each entry says why it is there:
 * a get that failed, or a set that failed. Only the second explains a later get that
 * finds nothing; trusting the first then would hand one visitor's id to the next
 * visitor of a storage shared between visitors. */
typedef enum fallback_reason { FALLBACK_GET_FAILED = 1, FALLBACK_SET_FAILED = 2 } fallback_reason;

/* Pushes the fallback entry table of storage, or nil. */
static void push_fallback_entry(lua_State *L, int self, int storage, const char *key)
{
    push_client_value(L, self, CALLBACK_FALLBACK);
    if (lua_isnil(L, -1)) return;
    lua_pushvalue(L, storage);
    lua_rawget(L, -2);
    if (lua_istable(L, -1)) {
        lua_pushstring(L, key);
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
}

/* Pushes the value kept for key when it was kept for one of the reasons, or nil. */
static void fallback_read(lua_State *L, int self, int storage, const char *key, int reasons)
{
    push_fallback_entry(L, self, storage, key);
    if (!lua_istable(L, -1)) return;
    lua_rawgeti(L, -1, 2);
    lua_Integer why = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (why & reasons) {
        lua_rawgeti(L, -1, 1);
    } else {
        lua_pushnil(L);
    }
    lua_replace(L, -2);
}

/* A set that worked again: what the storage holds is the truth from now on. */
static void fallback_forget(lua_State *L, int self, int storage, const char *key)
{
    push_client_value(L, self, CALLBACK_FALLBACK);
    if (!lua_isnil(L, -1)) {
        lua_pushvalue(L, storage);
        lua_rawget(L, -2);
        if (lua_istable(L, -1)) {
            lua_pushstring(L, key);
            lua_pushnil(L);
            lua_rawset(L, -3);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void fallback_write(lua_State *L, int self, int storage, const char *key, const char *value,
                           size_t len, fallback_reason why)
{
    push_client_value(L, self, CALLBACK_FALLBACK);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        set_client_value(L, self, CALLBACK_FALLBACK);
    }
    lua_pushvalue(L, storage);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushvalue(L, storage);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushstring(L, key);
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, value, len);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, why);
    lua_rawseti(L, -2, 2);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

/* Reads key into a value on the stack (string or nil): from the storage, else from
 * what the storage failed to give or keep earlier. */
static store_read read_record(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                              const char *key, bool *from_fallback)
{
    store_read r = storage_read(L, lc, storage, key);
    *from_fallback = false;
    if (r != STORE_FOUND) {
        lua_pop(L, 1);
        fallback_read(L, self, storage->index, key,
                      r == STORE_FAILED ? FALLBACK_GET_FAILED | FALLBACK_SET_FAILED
                                        : FALLBACK_SET_FAILED);
        *from_fallback = !lua_isnil(L, -1);
    }
    return r;
}

static void write_record(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                         store_read how_read, const char *key, const char *value, size_t len)
{
    /* A storage whose get failed is not trusted with the set either. */
    if (how_read == STORE_FAILED)
        fallback_write(L, self, storage->index, key, value, len, FALLBACK_GET_FAILED);
    else if (!storage_write(L, lc, storage, key, value, len))
        fallback_write(L, self, storage->index, key, value, len, FALLBACK_SET_FAILED);
    else if (how_read == STORE_MISSING)
        fallback_forget(L, self, storage->index, key);
}

static bool resolve_user_id(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                            char out[DN_ID_MAX + 1], size_t *out_len)
{
    bool from_fallback;
    store_read r = read_record(L, lc, self, storage, DN_USER_ID_KEY, &from_fallback);
    size_t len = 0;
    const char *stored = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    dn_id_outcome outcome;
    if (stored && len && len == lc->user_id_known_len &&
        memcmp(stored, lc->user_id_known, len) == 0) {
        memcpy(out, stored, len + 1);
        *out_len = len;
        outcome = DN_ID_KEPT;
    } else {
        outcome = dn_user_id_resolve(stored, len, dn_wall_ms(), out, out_len);
    }
    lua_pop(L, 1);
    if (outcome == DN_ID_FAILED) return false;
    memcpy(lc->user_id_known, out, *out_len + 1);
    lc->user_id_known_len = *out_len;
    if (outcome == DN_ID_CREATED || from_fallback)
        write_record(L, lc, self, storage, r, DN_USER_ID_KEY, out, *out_len);
    return true;
}

/* Keeps record (just written) and the session it says, for resolve_session to
 * recognise. Only when parsing the record would give back exactly this session: a
 * start page of printable ASCII (other bytes may not survive the JSON round trip),
 * expires within a double's integers. */
static void remember_session(lclient *lc, const dn_session *session, const char *record,
                             size_t record_len)
{
    lc->session_text_len = 0;
    bool exact = session->expires_ms < 9007199254740992LL;
    for (size_t i = 0; exact && session->start_page && i < session->start_page_len; i++)
        exact = session->start_page[i] >= 0x20 && session->start_page[i] < 0x7f;
    if (!exact) return;
    char *text = realloc(lc->session_text, record_len ? record_len : 1);
    if (!text) return;
    lc->session_text = text;
    dn_session *known = &lc->session_known;
    bool same_page = known->start_page && session->start_page &&
                     known->start_page_len == session->start_page_len &&
                     memcmp(known->start_page, session->start_page, session->start_page_len) == 0;
    if (!same_page) {
        dn_session_clear(known);
        if (session->start_page &&
            !dn_session_set_start_page(known, session->start_page, session->start_page_len))
            return;
    }
    memcpy(known->id, session->id, session->id_len + 1);
    known->id_len = session->id_len;
    known->expires_ms = session->expires_ms;
    memcpy(text, record, record_len);
    lc->session_text_len = record_len;
}

/* page: the first page to remember when the session has none yet (may be NULL). */
static bool resolve_session(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                            const char *page, size_t page_len, dn_session *session)
{
    bool from_fallback;
    store_read r = read_record(L, lc, self, storage, DN_SESSION_ID_KEY, &from_fallback);
    size_t len = 0;
    const char *stored = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    int64_t now_ms = dn_wall_ms(), ttl_ms = lc->core->config.session_timeout_ms;
    const dn_session *known = &lc->session_known;
    dn_id_outcome outcome;
    bool as_written = stored && lc->session_text_len && len == lc->session_text_len &&
                      memcmp(stored, lc->session_text, len) == 0 && now_ms < known->expires_ms;
    if (as_written) {
        /* What dn_session_resolve would make of these bytes, without parsing them. */
        memset(session, 0, sizeof *session);
        memcpy(session->id, known->id, known->id_len + 1);
        session->id_len = known->id_len;
        if (known->start_page)
            dn_session_set_start_page(session, known->start_page, known->start_page_len);
        session->expires_ms = now_ms + ttl_ms;
        outcome = DN_ID_KEPT;
    } else {
        outcome = dn_session_resolve(stored, len, now_ms, ttl_ms, session);
    }
    lua_pop(L, 1);
    if (outcome == DN_ID_FAILED) return false;
    bool page_added = false;
    if (!session->start_page && page && page_len <= DN_START_PAGE_MAX)
        page_added = dn_session_set_start_page(session, page, page_len);

    /* The usual emit: the record came back as written and only its expiry moves. */
    char spliced[512];
    size_t spliced_len =
        as_written && !page_added
            ? dn_session_record_with_expiry(lc->session_text, lc->session_text_len, known->id_len,
                                            session->expires_ms, spliced, sizeof spliced)
            : 0;
    if (spliced_len) {
        write_record(L, lc, self, storage, r, DN_SESSION_ID_KEY, spliced, spliced_len);
        remember_session(lc, session, spliced, spliced_len);
        return true;
    }
    dn_buf record;
    dn_buf_init(&record);
    /* Room for the whole record at once, rather than growing it twice per emit. */
    dn_buf_reserve(&record, 128 + session->start_page_len);
    dn_session_record_format(session, &record);
    if (!record.failed) {
        write_record(L, lc, self, storage, r, DN_SESSION_ID_KEY, record.data, record.len);
        remember_session(lc, session, record.data, record.len);
    }
    dn_buf_free(&record);
    return true;
}

static bool is_storage(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TTABLE || t == LUA_TUSERDATA;
}

/* Pushes the storage to use: the argument when given (arg 0: none), else the
 * client's own. */
/* An optional storage argument. */
static void check_storage_arg(lua_State *L, int arg)
{
    if (!lua_isnoneornil(L, arg))
        luaL_argcheck(L, is_storage(L, arg), arg, "storage must be a table with get and set");
}

static int push_storage(lua_State *L, int self, int arg)
{
    if (arg != 0 && !lua_isnoneornil(L, arg)) {
        check_storage_arg(L, arg);
        lua_pushvalue(L, arg);
    } else {
        push_client_value(L, self, CALLBACK_STORAGE);
    }
    return lua_gettop(L);
}

static int memory_get(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int memory_set(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (!lua_isnil(L, 2)) luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_rawset(L, lua_upvalueindex(1));
    return 0;
}

static void push_memory_storage(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, memory_get, 1);
    lua_setfield(L, -3, "get");
    lua_pushcclosure(L, memory_set, 1);
    lua_setfield(L, -2, "set");
}

static int module_memory_storage(lua_State *L)
{
    push_memory_storage(L);
    return 1;
}

static dn_file_store *check_file_store(lua_State *L)
{
    file_store_box *box = lua_touserdata(L, lua_upvalueindex(1));
    return box->store;
}

static int file_get(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    dn_file_store *store = check_file_store(L);
    const char *value;
    size_t len;
    if (!dn_file_store_get(store, key, &value, &len)) return luaL_error(L, "%s", store->error);
    if (value)
        lua_pushlstring(L, value, len);
    else
        lua_pushnil(L);
    return 1;
}

static int file_set(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    size_t len;
    const char *value = luaL_checklstring(L, 2, &len);
    dn_file_store *store = check_file_store(L);
    if (!dn_file_store_set(store, key, value, len)) return luaL_error(L, "%s", store->error);
    return 0;
}

static int file_store_gc(lua_State *L)
{
    file_store_box *box = lua_touserdata(L, 1);
    dn_file_store_free(box->store);
    box->store = NULL;
    return 0;
}

static int module_file_storage(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "path must be a non-empty string");
    lua_createtable(L, 0, 2);
    file_store_box *box = lua_newuserdata(L, sizeof *box);
    box->store = NULL;
    luaL_getmetatable(L, FILE_STORE_MT);
    lua_setmetatable(L, -2);
    box->store = dn_file_store_new(path);
    if (!box->store) return luaL_error(L, "dukanext: out of memory");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, file_get, 1);
    lua_setfield(L, -3, "get");
    lua_pushcclosure(L, file_set, 1);
    lua_setfield(L, -2, "set");
    return 1;
}

/* ---- options ---- */

typedef enum option_kind {
    OPT_URL,
    OPT_TEXT,
    OPT_SECONDS,
    OPT_COUNT,
    OPT_FLAG,
    OPT_HEADERS,
    OPT_STORAGE,
    OPT_CALLBACK,
    OPT_CHOICE, /* one of a list of strings, stored as its index (an enum) */
} option_kind;

typedef struct option_spec {
    const char *name;
    option_kind kind;
    size_t offset; /* of the dn_config field it sets */
    double min, max;
    const char *const *choices; /* OPT_CHOICE: NULL-terminated, in the enum's order */
} option_spec;

#define CONFIG_FIELD(f) offsetof(dn_config, f)
_Static_assert(sizeof(dn_http_version) == sizeof(int), "OPT_CHOICE stores an int");
_Static_assert(sizeof(dn_spool_sync) == sizeof(int), "OPT_CHOICE stores an int");

/* In the order of dn_http_version and dn_spool_sync. */
static const char *const http_versions[] = {"default", "1.1", "2", "2-prior-knowledge", NULL};
static const char *const spool_syncs[] = {"always", "interval", "never", NULL};

static const option_spec option_specs[] = {
    {"endpoint", OPT_URL, CONFIG_FIELD(endpoint), 0, 0},
    {"storage", OPT_STORAGE, 0, 0, 0},
    {"session_timeout", OPT_SECONDS, CONFIG_FIELD(session_timeout_ms), 0.001, 1e9},
    {"timeout", OPT_SECONDS, CONFIG_FIELD(timeout_ms), 0.001, 1e6},
    {"connect_timeout", OPT_SECONDS, CONFIG_FIELD(connect_timeout_ms), 0.001, 1e6},
    {"max_queue", OPT_COUNT, CONFIG_FIELD(max_queue), 1, 1e9},
    {"max_queue_bytes", OPT_COUNT, CONFIG_FIELD(max_queue_bytes), 4096, 1099511627776.0},
    {"max_in_flight", OPT_COUNT, CONFIG_FIELD(max_in_flight), 1, 1024},
    {"max_retries", OPT_COUNT, CONFIG_FIELD(max_retries), 0, 100},
    {"retry_base", OPT_SECONDS, CONFIG_FIELD(retry_base_ms), 0, 1e6},
    {"retry_max", OPT_SECONDS, CONFIG_FIELD(retry_max_ms), 0, 1e6},
    {"max_body", OPT_COUNT, CONFIG_FIELD(max_body), 256, 1073741824},
    {"headers", OPT_HEADERS, 0, 0, 0},
    {"user_agent", OPT_TEXT, CONFIG_FIELD(user_agent), 0, 0},
    {"ca_file", OPT_TEXT, CONFIG_FIELD(ca_file), 0, 0},
    {"ca_path", OPT_TEXT, CONFIG_FIELD(ca_path), 0, 0},
    {"proxy", OPT_TEXT, CONFIG_FIELD(proxy), 0, 0},
    {"insecure", OPT_FLAG, CONFIG_FIELD(insecure), 0, 0},
    {"http_version", OPT_CHOICE, CONFIG_FIELD(http_version), 0, 0, http_versions},
    {"spool", OPT_TEXT, CONFIG_FIELD(spool_dir), 0, 0},
    {"spool_sync", OPT_CHOICE, CONFIG_FIELD(spool_sync), 0, 0, spool_syncs},
    {"spool_interval", OPT_SECONDS, CONFIG_FIELD(spool_interval_ms), 0, 1e6},
    {"spool_max_bytes", OPT_COUNT, CONFIG_FIELD(spool_max_bytes), 4096, 1099511627776.0},
    {"on_error", OPT_CALLBACK, 0, 0, 0},
};

#define OPTION_COUNT (sizeof option_specs / sizeof option_specs[0])

static const option_spec *find_option(const char *name)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (strcmp(option_specs[i].name, name) == 0) return &option_specs[i];
    return NULL;
}

/* A value that goes into a header line or a curl option: no NUL, CR or LF. */
static bool is_single_line(const char *s, size_t len)
{
    return strlen(s) == len && !strpbrk(s, "\r\n");
}

static bool is_header_name(const char *s, size_t len)
{
    if (len == 0 || strlen(s) != len) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !strchr("!#$%&'*+-.^_`|~", c)) return false;
    }
    return true;
}

/* Headers dukanext sets itself; letting a user set them would break the protocol. */
static bool is_reserved_header(const char *name)
{
    static const char *const reserved[] = {
        "content-type", "content-length",  "transfer-encoding",  "host", "expect",
        "connection",   "idempotency-key", "x-dukanext-attempt", NULL,
    };
    for (size_t i = 0; reserved[i]; i++)
        if (curl_strequal(name, reserved[i])) return true;
    return false;
}

#define ENDPOINT_MAX    8192
#define SHOWN_VALUE_MAX 200

/* Pushes a value for an error message: control and non-ASCII bytes as \xHH, cut
 * after SHOWN_VALUE_MAX bytes, so a message never carries a line break or a megabyte. */
static void push_shown_value(lua_State *L, const char *s, size_t len)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t shown = len < SHOWN_VALUE_MAX ? len : SHOWN_VALUE_MAX;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            luaL_addchar(&b, (char)c);
        } else {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", c);
            luaL_addstring(&b, hex);
        }
    }
    if (shown < len) luaL_addstring(&b, "...");
    luaL_pushresult(&b);
}

static const char *endpoint_problem(const char *url, size_t len)
{
    if (len > ENDPOINT_MAX) return "must be at most 8192 bytes long";
    if (!is_single_line(url, len)) return "must not contain NUL, CR or LF";
    CURLU *u = curl_url();
    if (!u) return "could not be checked (out of memory)";
    const char *problem = NULL;
    char *scheme = NULL, *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        problem = "is not a valid URL";
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (!curl_strequal(scheme, "http") && !curl_strequal(scheme, "https"))) {
        problem = "must be an http:// or https:// URL";
    } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        problem = "has no host";
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return problem;
}

static void check_headers_option(lua_State *L, int idx)
{
    if (!lua_istable(L, idx)) luaL_error(L, "dukanext: option 'headers' must be a table");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t name_len, value_len;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "dukanext: option 'headers' maps header names to string values");
        const char *name = lua_tolstring(L, -2, &name_len);
        const char *value = lua_tolstring(L, -1, &value_len);
        if (!is_header_name(name, name_len))
            luaL_error(L, "dukanext: option 'headers': '%s' is not a valid header name", name);
        if (is_reserved_header(name))
            luaL_error(L, "dukanext: option 'headers': '%s' is set by dukanext itself", name);
        if (!is_single_line(value, value_len))
            luaL_error(L, "dukanext: option 'headers': the value of '%s' contains NUL, CR or LF",
                       name);
        lua_pop(L, 1);
    }
}

static int storage_has_functions_protected(lua_State *L)
{
    lua_getfield(L, 1, "get");
    lua_getfield(L, 1, "set");
    lua_pushboolean(L, lua_isfunction(L, -2) && lua_isfunction(L, -1));
    return 1;
}

static void check_option(lua_State *L, const option_spec *spec, int value)
{
    int t = lua_type(L, value);
    size_t len;
    switch (spec->kind) {
    case OPT_URL: {
        if (t != LUA_TSTRING)
            luaL_error(L, "dukanext: option '%s' must be a URL string", spec->name);
        const char *url = lua_tolstring(L, value, &len);
        const char *problem = endpoint_problem(url, len);
        if (problem) {
            push_shown_value(L, url, len);
            luaL_error(L, "dukanext: option '%s' %s: %s", spec->name, problem, lua_tostring(L, -1));
        }
        break;
    }
    case OPT_TEXT: {
        if (t != LUA_TSTRING) luaL_error(L, "dukanext: option '%s' must be a string", spec->name);
        const char *text = lua_tolstring(L, value, &len);
        if (!is_single_line(text, len))
            luaL_error(L, "dukanext: option '%s' must not contain NUL, CR or LF", spec->name);
        break;
    }
    case OPT_SECONDS:
    case OPT_COUNT: {
        double n = lua_tonumber(L, value);
        const char *unit = spec->kind == OPT_SECONDS ? "a number of seconds" : "an integer";
        if (t != LUA_TNUMBER || n != n || n < spec->min || n > spec->max ||
            (spec->kind == OPT_COUNT && floor(n) != n)) {
            /* lua_pushfstring knows no %g */
            char range[64];
            snprintf(range, sizeof range, "from %g to %g", spec->min, spec->max);
            luaL_error(L, "dukanext: option '%s' must be %s %s", spec->name, unit, range);
        }
        break;
    }
    case OPT_FLAG:
        if (t != LUA_TBOOLEAN) luaL_error(L, "dukanext: option '%s' must be a boolean", spec->name);
        break;
    case OPT_HEADERS:
        check_headers_option(L, value);
        break;
    case OPT_STORAGE:
        lua_pushcfunction(L, storage_has_functions_protected);
        lua_pushvalue(L, value);
        if (!is_storage(L, value) || lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_toboolean(L, -1))
            luaL_error(L, "dukanext: option 'storage' must be a table with get and set functions");
        lua_pop(L, 1);
        break;
    case OPT_CALLBACK:
        if (t != LUA_TFUNCTION)
            luaL_error(L, "dukanext: option '%s' must be a function", spec->name);
        break;
    case OPT_CHOICE: {
        const char *v = t == LUA_TSTRING ? lua_tostring(L, value) : "";
        size_t i = 0;
        while (spec->choices[i] && strcmp(spec->choices[i], v) != 0) i++;
        if (!spec->choices[i]) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (size_t k = 0; spec->choices[k]; k++) {
                if (k) luaL_addstring(&b, spec->choices[k + 1] ? ", " : " or ");
                lua_pushfstring(L, "\"%s\"", spec->choices[k]);
                luaL_addvalue(&b);
            }
            luaL_pushresult(&b);
            luaL_error(L, "dukanext: option '%s' must be %s", spec->name, lua_tostring(L, -1));
        }
        break;
    }
    }
}

/* opts is a stack index, or 0 for none. */
static bool has_options(lua_State *L, int opts)
{
    return opts != 0 && !lua_isnoneornil(L, opts);
}

/* Raises for anything wrong, before anything is allocated. */
static void check_options(lua_State *L, int opts)
{
    if (!has_options(L, opts)) return;
    if (!lua_istable(L, opts)) luaL_error(L, "dukanext: options must be a table");
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "dukanext: option names must be strings");
        const option_spec *spec = find_option(lua_tostring(L, -2));
        if (!spec) luaL_error(L, "dukanext: unknown option '%s'", lua_tostring(L, -2));
        check_option(L, spec, lua_gettop(L));
        lua_pop(L, 1);
    }
}

/* Fills config from options already checked; false only when out of memory. */
static bool apply_options(lua_State *L, int opts, dn_config *config)
{
    bool ok = true;
    if (!has_options(L, opts)) return ok;
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_spec *spec = &option_specs[i];
        lua_getfield(L, opts, spec->name);
        if (!lua_isnil(L, -1)) {
            char *field = (char *)config + spec->offset;
            switch (spec->kind) {
            case OPT_URL:
            case OPT_TEXT:
                ok = dn_config_set_string((char **)(void *)field, lua_tostring(L, -1)) && ok;
                break;
            case OPT_SECONDS:
                *(int64_t *)(void *)field = (int64_t)llround(lua_tonumber(L, -1) * 1000.0);
                break;
            case OPT_COUNT:
                *(size_t *)(void *)field = (size_t)lua_tonumber(L, -1);
                break;
            case OPT_FLAG:
                *(bool *)(void *)field = lua_toboolean(L, -1);
                break;
            case OPT_HEADERS:
                lua_pushnil(L);
                while (lua_next(L, -2)) {
                    ok = dn_config_add_header(config, lua_tostring(L, -2), lua_tostring(L, -1)) &&
                         ok;
                    lua_pop(L, 1);
                }
                break;
            case OPT_CHOICE: {
                /* Every choice enum of dn_config is an int-sized enum counting from 0. */
                const char *v = lua_tostring(L, -1);
                int choice = 0;
                while (strcmp(spec->choices[choice], v) != 0) choice++;
                *(int *)(void *)field = choice;
                break;
            }
            case OPT_STORAGE:
            case OPT_CALLBACK:
                break; /* kept in the client's user value by the caller */
            }
        }
        lua_pop(L, 1);
    }
    /* Timeouts below a millisecond would mean "none" to curl. */
    if (config->timeout_ms < 1) config->timeout_ms = 1;
    if (config->connect_timeout_ms < 1) config->connect_timeout_ms = 1;
    if (config->session_timeout_ms < 1) config->session_timeout_ms = 1;
    return ok;
}

/* Pushes option `name`, or nil. */
static void push_option(lua_State *L, int opts, const char *name)
{
    if (has_options(L, opts))
        lua_getfield(L, opts, name);
    else
        lua_pushnil(L);
}

/* Pushes a new client built from the options at index opts (may be absent). */
static void push_new_client(lua_State *L, hub_box *hb, int opts)
{
    if (opts) opts = dn_lua_absindex(L, opts);
    check_options(L, opts);

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
    if (!apply_options(L, opts, &config) || !lc) {
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
    lc->core->host = lc;
    lc->anchor_ref = LUA_NOREF;
    box->lc = lc;
    if (lc->core->config.insecure) warn_insecure_once(lc->core->config.endpoint);

    push_option(L, opts, "storage");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        push_memory_storage(L);
    }
    set_client_value(L, self, CALLBACK_STORAGE);
    push_option(L, opts, "on_error");
    lc->core->wants_reports = !lua_isnil(L, -1);
    set_client_value(L, self, CALLBACK_ON_ERROR);
    /* Events replayed from a spool are work: the client must outlive its last reference. */
    anchor_if_busy(L, lc, self);
}

static void release_callbacks(lua_State *L, lclient *lc, int self)
{
    lua_pushnil(L);
    set_client_value(L, self, CALLBACK_ON_ERROR);
    lc->core->wants_reports = false;
}

/* ---- client methods ---- */

static int client_gc(lua_State *L)
{
    client_box *box = lua_touserdata(L, 1);
    lclient *lc = box->lc;
    if (!lc) return 0;
    box->lc = NULL;
    /* Cancels any transfer still in flight: only reached at lua_close, since a busy
     * client is anchored. */
    dn_client_free(lc->core);
    luaL_unref(L, LUA_REGISTRYINDEX, lc->anchor_ref);
    free(lc->customers_id);
    free(lc->session_text);
    dn_session_clear(&lc->session_known);
    free(lc);
    return 0;
}

static int client_close(lua_State *L)
{
    client_box *box = luaL_checkudata(L, 1, CLIENT_MT);
    lclient *lc = box->lc;
    size_t undelivered = 0;
    if (lc && !lc->core->closed) {
        undelivered = dn_client_close(lc->core);
        release_callbacks(L, lc, 1);
        release_anchor(L, lc);
    }
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
enum {
    SLOT_REFERRER = 5,
    SLOT_START_PAGE,
    SLOT_HAS_ACCOUNT,
    SLOT_CUSTOMERS_ID,
    SLOT_STORAGE,
    SLOT_USER_AGENT,
    SLOT_CLIENT_IP,
    SLOT_LAST = SLOT_CLIENT_IP,
};

static bool is_string_or_null(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TSTRING || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL);
}

static bool is_client_ip(const char *s, size_t len)
{
    if (len == 0 || len > CLIENT_IP_MAX || strlen(s) != len) return false;
    /* One address or an X-Forwarded-For list of them. */
    return strspn(s, "0123456789abcdefABCDEF.:, []") == len;
}

/* Checks `fields` and copies each known one into its slot; answers why not, or NULL. */
static const char *read_fields(lua_State *L, int fields, char *why, size_t why_size)
{
    int t = lua_type(L, fields);
    if (t == LUA_TNIL || t == LUA_TNONE) return NULL;
    if (t != LUA_TTABLE) return "fields must be a table";
    lua_pushnil(L);
    while (lua_next(L, fields)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return "field names must be strings";
        }
        const char *name = lua_tostring(L, -2);
        size_t len = 0;
        int slot;
        bool ok;
        if (strcmp(name, "referrerUrl") == 0) {
            slot = SLOT_REFERRER;
            ok = is_string_or_null(L, -1);
        } else if (strcmp(name, "sessionStartPage") == 0) {
            slot = SLOT_START_PAGE;
            ok = is_string_or_null(L, -1);
        } else if (strcmp(name, "hasCustomerAccount") == 0) {
            slot = SLOT_HAS_ACCOUNT;
            ok = lua_type(L, -1) == LUA_TBOOLEAN;
        } else if (strcmp(name, "customersId") == 0) {
            slot = SLOT_CUSTOMERS_ID;
            ok = is_string_or_null(L, -1);
        } else if (strcmp(name, "storage") == 0) {
            slot = SLOT_STORAGE;
            ok = is_storage(L, -1);
        } else if (strcmp(name, "userAgent") == 0) {
            slot = SLOT_USER_AGENT;
            const char *ua = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            ok = ua && is_single_line(ua, len) && len <= USER_AGENT_MAX;
        } else if (strcmp(name, "clientIp") == 0) {
            slot = SLOT_CLIENT_IP;
            const char *ip = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            ok = ip && is_client_ip(ip, len);
        } else {
            snprintf(why, why_size, "unknown field '%.64s'", name);
            lua_pop(L, 2);
            return why;
        }
        if (!ok) {
            snprintf(why, why_size, "field '%s' has a wrong type or value (%s)", name,
                     luaL_typename(L, -1));
            lua_pop(L, 2);
            return why;
        }
        lua_pushvalue(L, -1);
        lua_replace(L, slot);
        lua_pop(L, 1);
    }
    return NULL;
}

/* lua-cjson writes a table whose keys are all positive integers as a JSON array;
 * metadata must be an object. */
static bool is_object_like(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool number_key = lua_type(L, -2) == LUA_TNUMBER;
        lua_pop(L, 1);
        if (!number_key) {
            lua_pop(L, 1);
            return true;
        }
    }
    /* An empty table encodes as {}; a list does not. */
    lua_pushnil(L);
    bool empty = lua_next(L, idx) == 0;
    if (!empty) lua_pop(L, 2);
    return empty;
}

/* A string-or-null field the caller gave: true when the slot holds one. */
static bool slot_text(lua_State *L, int slot, dn_body_text *text)
{
    if (lua_isnil(L, slot)) return false;
    text->data = lua_type(L, slot) == LUA_TSTRING ? lua_tolstring(L, slot, &text->len) : NULL;
    if (!text->data) text->len = 0;
    return true;
}

static int refuse_accept(lua_State *L, lclient *lc, dn_accept verdict)
{
    switch (verdict) {
    case DN_REFUSED_NO_ENDPOINT:
        return refuse(L, "NO_ENDPOINT", "no endpoint is configured (dn.configure{endpoint=...})");
    case DN_REFUSED_CLOSED:
        return refuse(L, "CLOSED", "the client is closed");
    case DN_REFUSED_QUEUE_FULL:
        return refuse(L, "QUEUE_FULL", "%zu events are already waiting (max_queue)",
                      dn_client_pending(lc->core));
    case DN_REFUSED_QUEUE_BYTES:
        return refuse(L, "QUEUE_FULL", "the waiting events hold %zu bytes (max_queue_bytes)",
                      dn_client_pending_bytes(lc->core));
    case DN_REFUSED_TOO_LARGE:
        return refuse(L, "EVENT_TOO_LARGE", "the encoded event exceeds max_body (%zu bytes)",
                      lc->core->config.max_body);
    case DN_REFUSED_SPOOL_FULL:
        return refuse(L, "QUEUE_FULL", "the spool holds %zu bytes (spool_max_bytes)",
                      (size_t)dn_spool_bytes(lc->core->spool));
    case DN_REFUSED_NO_MEMORY:
        return refuse(L, "OUT_OF_MEMORY", "no memory to queue the event");
    case DN_ACCEPTED_IN_MEMORY:
        /* Queued all the same: it is delivered unless the process dies first. */
        return refuse(L, "SPOOL_ERROR", "%s (the event is queued in memory only)",
                      lc->core->spool_error);
    case DN_ACCEPTED:
        break;
    }
    return 0;
}

static int client_emit(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    lua_settop(L, 4);
    lua_settop(L, SLOT_LAST); /* the field slots start as nil */
    luaL_checkstack(L, 16, "dukanext: emit");

    size_t event_len = 0;
    if (lua_type(L, 2) != LUA_TSTRING || (lua_tolstring(L, 2, &event_len), event_len == 0))
        return refuse(L, "INVALID_EVENT", "event must be a non-empty string");
    int metadata_type = lua_type(L, 3);
    if (metadata_type != LUA_TNIL && metadata_type != LUA_TTABLE)
        return refuse(L, "INVALID_METADATA", "metadata must be a table, not a %s",
                      luaL_typename(L, 3));
    if (metadata_type == LUA_TTABLE && !is_object_like(L, 3))
        return refuse(L, "INVALID_METADATA",
                      "metadata must be a table with string keys, not a list");
    char why[160];
    const char *bad_field = read_fields(L, 4, why, sizeof why);
    if (bad_field) return refuse(L, "INVALID_FIELD", "%s", bad_field);

    dn_accept verdict = dn_client_can_accept(lc->core);
    if (verdict == DN_ACCEPTED && event_len > lc->core->config.max_body)
        verdict = DN_REFUSED_TOO_LARGE;
    if (verdict != DN_ACCEPTED) return refuse_accept(L, lc, verdict);

    /* The first page of a session is the url of its first event. */
    const char *page = NULL;
    size_t page_len = 0;
    if (metadata_type == LUA_TTABLE) {
        lua_pushliteral(L, "url");
        lua_rawget(L, 3); /* raw, like lua-cjson: metatables of metadata never run */
        if (lua_type(L, -1) == LUA_TSTRING) page = lua_tolstring(L, -1, &page_len);
    } else {
        lua_pushnil(L);
    }

    storage_ref storage =
        open_storage(L, lua_isnil(L, SLOT_STORAGE) ? push_storage(L, 1, 0) : SLOT_STORAGE);
    char user_id[DN_ID_MAX + 1];
    size_t user_id_len;
    dn_session session = {0};
    bool ids_ok = resolve_user_id(L, lc, 1, &storage, user_id, &user_id_len) &&
                  resolve_session(L, lc, 1, &storage, page, page_len, &session);
    if (!ids_ok) {
        dn_session_clear(&session);
        anchor_if_busy(L, lc, 1);
        return refuse(L, "RANDOM_ERROR", "the system gave no randomness for an id");
    }

    /* Storage callbacks may have closed the client or filled its queue. */
    verdict = dn_client_can_accept(lc->core);
    if (verdict != DN_ACCEPTED) {
        dn_session_clear(&session);
        anchor_if_busy(L, lc, 1);
        return refuse_accept(L, lc, verdict);
    }

    /* The metadata first: encoding it may run Lua (a finalizer, a debug hook) that
     * emits too, so the shared body buffer is filled only after, with no Lua between
     * filling it and handing it to the queue. */
    const char *metadata_json = "{}";
    size_t metadata_json_len = 2;
    if (metadata_type == LUA_TTABLE) {
        lua_pushvalue(L, lua_upvalueindex(UV_ENCODE));
        lua_pushvalue(L, 3);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            dn_session_clear(&session);
            anchor_if_busy(L, lc, 1);
            return refuse(L, "INVALID_METADATA", "%s", error_text(L, -1));
        }
        metadata_json = lua_tolstring(L, -1, &metadata_json_len);
    }

    dn_body_fields fields = {
        .user_id = {user_id, user_id_len},
        .session_id = {session.id, session.id_len},
        .event = {lua_tostring(L, 2), event_len},
        .metadata_json = metadata_json,
        .metadata_json_len = metadata_json_len,
    };
    /* A first page too long to remember is still this event's start page. */
    if (!slot_text(L, SLOT_START_PAGE, &fields.session_start_page)) {
        bool remembered = session.start_page != NULL;
        fields.session_start_page.data = remembered ? session.start_page : page;
        fields.session_start_page.len = remembered ? session.start_page_len : page_len;
    }
    slot_text(L, SLOT_REFERRER, &fields.referrer_url);
    const char *customers_id = lc->customers_id;
    if (!slot_text(L, SLOT_CUSTOMERS_ID, &fields.customers_id)) {
        fields.customers_id.data = customers_id;
        fields.customers_id.len = customers_id ? strlen(customers_id) : 0;
    }
    if (!lua_isnil(L, SLOT_HAS_ACCOUNT))
        fields.has_customer_account = lua_toboolean(L, SLOT_HAS_ACCOUNT);
    else if (!lua_isnil(L, SLOT_CUSTOMERS_ID))
        fields.has_customer_account = lua_type(L, SLOT_CUSTOMERS_ID) == LUA_TSTRING;
    else
        fields.has_customer_account = customers_id != NULL;

    hub_box *hb = upvalue_hub(L);
    dn_body_write(&hb->body, &fields);
    dn_session_clear(&session);
    if (hb->body.failed) {
        anchor_if_busy(L, lc, 1);
        return refuse(L, "OUT_OF_MEMORY", "no memory to build the event");
    }

    size_t ua_len = 0, ip_len = 0;
    const char *ua =
        lua_isnil(L, SLOT_USER_AGENT) ? NULL : lua_tolstring(L, SLOT_USER_AGENT, &ua_len);
    const char *ip =
        lua_isnil(L, SLOT_CLIENT_IP) ? NULL : lua_tolstring(L, SLOT_CLIENT_IP, &ip_len);
    verdict = dn_client_accept(lc->core, hb->body.data, hb->body.len, ua, ua_len, ip, ip_len);
    /* One huge event must not keep its buffer for the life of the state. */
    if (hb->body.cap > BODY_BUFFER_KEEP) {
        dn_buf_free(&hb->body);
        dn_buf_init(&hb->body);
    }
    anchor_if_busy(L, lc, 1);
    if (verdict != DN_ACCEPTED) return refuse_accept(L, lc, verdict);
    lua_pushboolean(L, 1);
    return 1;
}

static int client_get_user_id(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    storage_ref storage = open_storage(L, push_storage(L, 1, 2));
    char id[DN_ID_MAX + 1];
    size_t len;
    bool ok = resolve_user_id(L, lc, 1, &storage, id, &len);
    anchor_if_busy(L, lc, 1);
    if (!ok) return luaL_error(L, "dukanext: the system gave no randomness for an id");
    lua_pushlstring(L, id, len);
    return 1;
}

static int client_get_session_id(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    storage_ref storage = open_storage(L, push_storage(L, 1, 2));
    dn_session session = {0};
    bool ok = resolve_session(L, lc, 1, &storage, NULL, 0, &session);
    anchor_if_busy(L, lc, 1);
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
    lclient *lc = check_client(L, 1);
    dn_hub_check_fork(lc->core->hub); /* a child counts from zero */
    const dn_client *c = lc->core;
    lua_createtable(L, 0, 16);
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
    return 1;
}

/* Pumps and sleeps in curl_multi_poll until target (or, when NULL, every client) has
 * nothing left, or the deadline passes. */
static int flush_until(lua_State *L, hub_box *hb, dn_client *target, int timeout_arg)
{
    double timeout = -1;
    if (!lua_isnoneornil(L, timeout_arg)) {
        timeout = luaL_checknumber(L, timeout_arg);
        luaL_argcheck(L, timeout >= 0 && timeout == timeout, timeout_arg,
                      "timeout must be a number of seconds >= 0");
    }
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

static int client_flush(lua_State *L)
{
    lclient *lc = check_client(L, 1);
    return flush_until(L, upvalue_hub(L), lc->core, 2);
}

/* ---- module functions ---- */

static int module_new(lua_State *L)
{
    push_new_client(L, upvalue_hub(L), 1);
    return 1;
}

static int module_configure(lua_State *L)
{
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
    hub_box *hb = upvalue_hub(L);
    dn_hub *hub = hb->hub;
    if (hub->pending == 0 && !hub->reports_head && hub->spool_due_ms == INT64_MAX) {
        lua_pushnil(L);
        return 1;
    }
    int ms = hub->reports_head ? 0 : dn_hub_idle_ms(hub, dn_mono_ms(), 60000);
    lua_pushnumber(L, ms / 1000.0);
    return 1;
}

static int module_flush(lua_State *L)
{
    return flush_until(L, upvalue_hub(L), NULL, 1);
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

static int hub_gc(lua_State *L)
{
    hub_box *hb = lua_touserdata(L, 1);
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
    lua_pop(L, 1);

    luaL_newmetatable(L, FILE_STORE_MT);
    lua_pushcfunction(L, file_store_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_createtable(L, 0, 16);
    for (int i = 0; i < UV_COUNT; i++) lua_pushvalue(L, upvalues + i);
    dn_lua_setfuncs(L, module_functions, UV_COUNT);
    lua_pushliteral(L, DN_VERSION);
    lua_setfield(L, -2, "_VERSION");

    push_new_client(L, hb, 0);
    luaL_unref(L, LUA_REGISTRYINDEX, hb->default_ref);
    hb->default_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}
