/* client:emit: the event's fields and metadata checked, the visitor resolved through
 * the storage, the body encoded and handed to the core client. */
#include "binding.h"
#include "body.h"
#include "config.h"
#include "os.h"
#include "suggest.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The body buffer is kept between emits up to this size, and let go beyond. */
#define BODY_BUFFER_KEEP (256 * 1024)

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

static bool is_boolean(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TBOOLEAN;
}

static bool is_user_agent(lua_State *L, int idx)
{
    size_t len = 0;
    const char *ua = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    return ua && dn_config_is_user_agent(ua, len);
}

static bool is_client_ip(lua_State *L, int idx)
{
    size_t len = 0;
    const char *ip = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    return ip && dn_config_is_client_ip(ip, len);
}

/* The fields emit knows, in slot order: field i goes to slot SLOT_REFERRER + i once
 * field_checks[i] accepts its value. */
static const char *const field_names[] = {
    "referrerUrl", "sessionStartPage", "hasCustomerAccount", "customersId",
    "storage",     "userAgent",        "clientIp",           NULL,
};
static bool (*const field_checks[])(lua_State *L, int idx) = {
    is_string_or_null, is_string_or_null, is_boolean,   is_string_or_null,
    is_storage,        is_user_agent,     is_client_ip,
};

/* Names users write for fields, and what they meant. */
static const dn_alias field_aliases[] = {
    {"referer", "referrerUrl"},
    {"referrer", "referrerUrl"},
    {"ref", "referrerUrl"},
    {"start_page", "sessionStartPage"},
    {"ip", "clientIp"},
    {"remote_addr", "clientIp"},
    {"ua", "userAgent"},
    {"customer_id", "customersId"},
    {NULL, NULL},
};

static int field_index(const char *name)
{
    for (int i = 0; field_names[i]; i++)
        if (strcmp(field_names[i], name) == 0) return i;
    return -1;
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
        int field = field_index(name);
        if (field < 0) {
            const char *meant = dn_suggest(name, field_names, field_aliases);
            if (meant)
                snprintf(why, why_size, "unknown field '%.64s' (did you mean '%s'?)", name, meant);
            else
                snprintf(why, why_size, "unknown field '%.64s'", name);
            lua_pop(L, 2);
            return why;
        }
        if (!field_checks[field](L, -1)) {
            snprintf(why, why_size, "field '%s' has a wrong type or value (%s)", name,
                     luaL_typename(L, -1));
            lua_pop(L, 2);
            return why;
        }
        lua_pushvalue(L, -1);
        lua_replace(L, SLOT_REFERRER + field);
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

/* Appends key (a stack index) to path as Lua would write it: ".name", "[3]" or
 * "[\"odd key\"]". Answers the new length; the path is cut when it does not fit. */
static size_t path_append_key(lua_State *L, int key, char *path, size_t len, size_t size)
{
    char part[80];
    if (lua_type(L, key) == LUA_TNUMBER) {
        double n = lua_tonumber(L, key);
        snprintf(part, sizeof part, n == floor(n) && fabs(n) < 1e15 ? "[%.0f]" : "[%g]", n);
    } else if (lua_type(L, key) == LUA_TSTRING) {
        size_t key_len;
        const char *k = lua_tolstring(L, key, &key_len);
        bool plain = key_len > 0 && key_len <= 48 && !(k[0] >= '0' && k[0] <= '9');
        for (size_t i = 0; plain && i < key_len; i++)
            plain = k[i] == '_' || (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
                    (k[i] >= '0' && k[i] <= '9');
        if (plain) {
            snprintf(part, sizeof part, ".%s", k);
        } else {
            char shown[41];
            size_t n = key_len < 40 ? key_len : 40;
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)k[i];
                shown[i] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
            }
            shown[n] = '\0';
            snprintf(part, sizeof part, "[\"%s%s\"]", shown, key_len > n ? "..." : "");
        }
    } else {
        snprintf(part, sizeof part, "[%s key]", luaL_typename(L, key));
    }
    if (len < size) snprintf(path + len, size - len, "%s", part);
    size_t grown = len + strlen(part);
    return grown < size ? grown : size - 1;
}

/* After lua-cjson refused the table at `table`: finds the first value it cannot encode,
 * reading raw as lua-cjson does, and writes its path into path (from len on) and what
 * is wrong with it into *problem. Only runs for a refused event, so emit pays nothing
 * for it otherwise. */
static bool find_unencodable(lua_State *L, int table, int depth, char *path, size_t len,
                             size_t size, const char **problem)
{
    if (depth > METADATA_MAX_DEPTH - 1) {
        *problem = "nested deeper than 31 levels (or a table that contains itself)";
        return true;
    }
    if (!lua_checkstack(L, 4)) return false;
    lua_pushnil(L);
    while (lua_next(L, table)) {
        size_t grown = path_append_key(L, lua_gettop(L) - 1, path, len, size);
        int key_type = lua_type(L, -2);
        const char *bad = NULL;
        if (key_type != LUA_TSTRING && key_type != LUA_TNUMBER) {
            bad = "a key must be a string or a number";
        } else {
            switch (lua_type(L, -1)) {
            case LUA_TNUMBER: {
                double x = lua_tonumber(L, -1);
                if (x != x || isinf(x)) bad = "cannot encode NaN or infinity";
                break;
            }
            case LUA_TLIGHTUSERDATA:
                if (lua_touserdata(L, -1) != NULL) bad = "cannot encode a light userdata";
                break;
            case LUA_TTABLE:
                if (!find_unencodable(L, lua_gettop(L), depth + 1, path, grown, size, &bad))
                    bad = NULL;
                break;
            case LUA_TFUNCTION:
                bad = "cannot encode a function";
                break;
            case LUA_TUSERDATA:
                bad = "cannot encode a userdata";
                break;
            case LUA_TTHREAD:
                bad = "cannot encode a coroutine";
                break;
            default:
                break;
            }
        }
        if (bad) {
            /* For a nested table, path already runs down to the value at fault. */
            *problem = bad;
            lua_pop(L, 2);
            return true;
        }
        lua_pop(L, 1);
        path[len] = '\0';
    }
    return false;
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
    case DN_REFUSED_BEFORE_FORK:
        return refuse(L, "WRONG_PHASE",
                      "nginx's master (init_by_lua) never sends events; emit from a worker: "
                      "init_worker_by_lua, a request or a timer");
    case DN_ACCEPTED_IN_MEMORY:
        /* Queued all the same: it is delivered unless the process dies first. */
        return refuse(L, "SPOOL_ERROR", "%s (the event is queued in memory only)",
                      lc->core->spool_error);
    case DN_ACCEPTED:
        break;
    }
    return 0;
}

/* One emit as it goes through its steps. A step answers 0 to go on, or the number of
 * Lua results it pushed when it ends the emit (a refusal). */
typedef struct emit_call {
    lclient *lc;
    hub_box *hb;
    size_t event_len;
    int metadata_type;
    const char *page; /* the metadata's url: the first page of a new session */
    size_t page_len;
    bool visitor_resolved; /* the storage ran: the client may have work to anchor */
    char user_id[DN_ID_MAX + 1];
    size_t user_id_len;
    dn_session session;
    const char *metadata_json;
    size_t metadata_json_len;
} emit_call;

static int check_arguments(lua_State *L, emit_call *call)
{
    if (lua_gettop(L) > 4) lua_settop(L, 4);
    lua_settop(L, SLOT_LAST); /* the field slots start as nil */
    luaL_checkstack(L, 16, "dukanext: emit");
    if (lua_type(L, 2) != LUA_TSTRING ||
        (lua_tolstring(L, 2, &call->event_len), call->event_len == 0))
        return refuse(L, "INVALID_EVENT", "event must be a non-empty string");
    call->metadata_type = lua_type(L, 3);
    if (call->metadata_type != LUA_TNIL && call->metadata_type != LUA_TTABLE)
        return refuse(L, "INVALID_METADATA", "metadata must be a table, not a %s",
                      luaL_typename(L, 3));
    if (call->metadata_type == LUA_TTABLE && !is_object_like(L, 3))
        return refuse(L, "INVALID_METADATA",
                      "metadata must be a table with string keys, not a list");
    char why[160];
    const char *bad_field = read_fields(L, 4, why, sizeof why);
    if (bad_field) return refuse(L, "INVALID_FIELD", "%s", bad_field);

    dn_accept verdict = dn_client_can_accept(call->lc->core);
    if (verdict == DN_ACCEPTED && call->event_len > call->lc->core->config.max_body)
        verdict = DN_REFUSED_TOO_LARGE;
    return verdict == DN_ACCEPTED ? 0 : refuse_accept(L, call->lc, verdict);
}

/* The visitor's user id and session, read and written through the storage. */
static int resolve_visitor(lua_State *L, emit_call *call)
{
    /* The first page of a session is the url of its first event. */
    if (call->metadata_type == LUA_TTABLE) {
        lua_pushliteral(L, "url");
        lua_rawget(L, 3); /* raw, like lua-cjson: metatables of metadata never run */
        if (lua_type(L, -1) == LUA_TSTRING) call->page = lua_tolstring(L, -1, &call->page_len);
    } else {
        lua_pushnil(L);
    }
    lclient *lc = call->lc;
    call->visitor_resolved = true;
    if (!resolve_visitor_ids(L, lc, lua_isnil(L, SLOT_STORAGE) ? 0 : SLOT_STORAGE, call->page,
                             call->page_len, call->user_id, &call->user_id_len, &call->session))
        return refuse(L, "RANDOM_ERROR", "the system gave no randomness for an id");
    /* Storage callbacks may have closed the client or filled its queue. */
    dn_accept verdict = dn_client_can_accept(lc->core);
    return verdict == DN_ACCEPTED ? 0 : refuse_accept(L, lc, verdict);
}

/* The metadata first: encoding it may run Lua (a finalizer, a debug hook) that emits
 * too, so the shared body buffer is filled only after, with no Lua between filling
 * it and handing it to the queue. */
static int encode_metadata(lua_State *L, emit_call *call)
{
    call->metadata_json = "{}";
    call->metadata_json_len = 2;
    if (call->metadata_type != LUA_TTABLE) return 0;
    lua_pushvalue(L, lua_upvalueindex(UV_ENCODE));
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        char path[160] = "metadata";
        const char *problem = NULL;
        if (find_unencodable(L, 3, 1, path, strlen(path), sizeof path, &problem))
            return refuse(L, "INVALID_METADATA", "%s: %s", path, problem);
        return refuse(L, "INVALID_METADATA", "%s", error_text(L, -1));
    }
    call->metadata_json = lua_tolstring(L, -1, &call->metadata_json_len);
    return 0;
}

/* The body's optional fields: each the caller gave, or else what the client and the
 * session know. */
static void fill_fields(lua_State *L, const emit_call *call, dn_body_fields *fields)
{
    /* A first page too long to remember is still this event's start page. */
    if (!slot_text(L, SLOT_START_PAGE, &fields->session_start_page)) {
        bool remembered = call->session.start_page != NULL;
        fields->session_start_page.data = remembered ? call->session.start_page : call->page;
        fields->session_start_page.len = remembered ? call->session.start_page_len : call->page_len;
    }
    slot_text(L, SLOT_REFERRER, &fields->referrer_url);
    const char *customers_id = call->lc->customers_id;
    if (!slot_text(L, SLOT_CUSTOMERS_ID, &fields->customers_id)) {
        fields->customers_id.data = customers_id;
        fields->customers_id.len = customers_id ? strlen(customers_id) : 0;
    }
    if (!lua_isnil(L, SLOT_HAS_ACCOUNT))
        fields->has_customer_account = lua_toboolean(L, SLOT_HAS_ACCOUNT);
    else if (!lua_isnil(L, SLOT_CUSTOMERS_ID))
        fields->has_customer_account = lua_type(L, SLOT_CUSTOMERS_ID) == LUA_TSTRING;
    else
        fields->has_customer_account = customers_id != NULL;
}

static int encode_body(lua_State *L, emit_call *call)
{
    dn_body_fields fields = {
        .user_id = {call->user_id, call->user_id_len},
        .session_id = {call->session.id, call->session.id_len},
        .event = {lua_tostring(L, 2), call->event_len},
        .metadata_json = call->metadata_json,
        .metadata_json_len = call->metadata_json_len,
    };
    fill_fields(L, call, &fields);
    hub_box *hb = call->hb;
    dn_body_write(&hb->body, &fields);
    if (hb->body.failed) return refuse(L, "OUT_OF_MEMORY", "no memory to build the event");
    return 0;
}

/* Hands the body in the hub's buffer to the core client, with the visitor's headers. */
static int accept_event(lua_State *L, emit_call *call)
{
    size_t ua_len = 0, ip_len = 0;
    const char *ua =
        lua_isnil(L, SLOT_USER_AGENT) ? NULL : lua_tolstring(L, SLOT_USER_AGENT, &ua_len);
    const char *ip =
        lua_isnil(L, SLOT_CLIENT_IP) ? NULL : lua_tolstring(L, SLOT_CLIENT_IP, &ip_len);
    hub_box *hb = call->hb;
    dn_accept verdict =
        dn_client_accept(call->lc->core, hb->body.data, hb->body.len, ua, ua_len, ip, ip_len);
    /* One huge event must not keep its buffer for the life of the state. */
    if (hb->body.cap > BODY_BUFFER_KEEP) {
        dn_buf_free(&hb->body);
        dn_buf_init(&hb->body);
    }
    if (verdict != DN_ACCEPTED) return refuse_accept(L, call->lc, verdict);
    lua_pushboolean(L, 1);
    return 1;
}

int emit_running(lua_State *L, lclient *lc)
{
    emit_call call = {.lc = lc, .hb = upvalue_hub(L)};
    int results = check_arguments(L, &call);
    if (!results) results = resolve_visitor(L, &call);
    if (!results) results = encode_metadata(L, &call);
    if (!results) results = encode_body(L, &call);
    if (!results) results = accept_event(L, &call);
    dn_session_clear(&call.session);
    /* Once the storage ran, whatever the outcome: its callbacks may have given the
     * client work, and an accepted event is work. */
    if (call.visitor_resolved) anchor_if_busy(L, lc, 1);
    return results;
}
