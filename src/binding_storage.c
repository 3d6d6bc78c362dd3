/* The storage bridge: the host's get/set callbacks called under protection, the
 * fallback table that keeps what a failing storage could not, the built-in memory and
 * file storages, and the visitor's ids read and written through them. */
#include "binding.h"
#include "file_store.h"
#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one read of a storage gave. */
typedef enum read_outcome { READ_FOUND, READ_MISSING, READ_FAILED } read_outcome;

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
static read_outcome storage_read(lua_State *L, lclient *lc, const storage_ref *storage,
                                 const char *key)
{
    if (storage->memory) {
        lua_pushstring(L, key);
        lua_rawget(L, storage->memory);
        if (lua_type(L, -1) == LUA_TSTRING) return READ_FOUND;
        if (lua_isnil(L, -1)) return READ_MISSING;
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
        return READ_FOUND;
    } else if (lua_isnil(L, -1)) {
        return READ_MISSING;
    } else {
        char problem[64];
        snprintf(problem, sizeof problem, "returned a %s", luaL_typename(L, -1));
        report_storage_error(L, lc, "get", key, problem);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    return READ_FAILED;
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
    push_client_value(L, self, CLIENT_VALUE_FALLBACK);
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
    push_client_value(L, self, CLIENT_VALUE_FALLBACK);
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
    push_client_value(L, self, CLIENT_VALUE_FALLBACK);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lock_metatable(L, "dukanext.fallback");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        set_client_value(L, self, CLIENT_VALUE_FALLBACK);
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
static read_outcome read_record(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                                const char *key, bool *from_fallback)
{
    read_outcome r = storage_read(L, lc, storage, key);
    *from_fallback = false;
    if (r != READ_FOUND) {
        lua_pop(L, 1);
        fallback_read(L, self, storage->index, key,
                      r == READ_FAILED ? FALLBACK_GET_FAILED | FALLBACK_SET_FAILED
                                       : FALLBACK_SET_FAILED);
        *from_fallback = !lua_isnil(L, -1);
    }
    return r;
}

static void write_record(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                         read_outcome how_read, const char *key, const char *value, size_t len)
{
    /* A storage whose get failed is not trusted with the set either. */
    if (how_read == READ_FAILED)
        fallback_write(L, self, storage->index, key, value, len, FALLBACK_GET_FAILED);
    else if (!storage_write(L, lc, storage, key, value, len))
        fallback_write(L, self, storage->index, key, value, len, FALLBACK_SET_FAILED);
    else if (how_read == READ_MISSING)
        fallback_forget(L, self, storage->index, key);
}

static bool resolve_user_id(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                            char out[DN_ID_MAX + 1], size_t *out_len)
{
    bool from_fallback;
    read_outcome r = read_record(L, lc, self, storage, DN_USER_ID_KEY, &from_fallback);
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

/* page: the first page to remember when the session has none yet (may be NULL). */
static bool resolve_session(lua_State *L, lclient *lc, int self, const storage_ref *storage,
                            const char *page, size_t page_len, dn_session *session)
{
    bool from_fallback;
    read_outcome r = read_record(L, lc, self, storage, DN_SESSION_ID_KEY, &from_fallback);
    size_t len = 0;
    const char *stored = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    bool as_written;
    dn_id_outcome outcome =
        dn_session_memo_resolve(&lc->session_memo, stored, len, dn_wall_ms(),
                                lc->core->config.session_timeout_ms, session, &as_written);
    lua_pop(L, 1);
    if (outcome == DN_ID_FAILED) return false;
    bool page_added = false;
    if (!session->start_page && page && page_len <= DN_START_PAGE_MAX)
        page_added = dn_session_set_start_page(session, page, page_len);

    /* The usual emit: the record came back as written and only its expiry moves. */
    char spliced[512];
    size_t spliced_len = as_written && !page_added
                             ? dn_session_memo_record_with_expiry(
                                   &lc->session_memo, session->expires_ms, spliced, sizeof spliced)
                             : 0;
    if (spliced_len) {
        write_record(L, lc, self, storage, r, DN_SESSION_ID_KEY, spliced, spliced_len);
        dn_session_memo_remember(&lc->session_memo, session, spliced, spliced_len);
        return true;
    }
    dn_buf record;
    dn_buf_init(&record);
    /* Room for the whole record at once, rather than growing it twice per emit. */
    dn_buf_reserve(&record, 128 + session->start_page_len);
    dn_session_record_format(session, &record);
    if (!record.failed) {
        write_record(L, lc, self, storage, r, DN_SESSION_ID_KEY, record.data, record.len);
        dn_session_memo_remember(&lc->session_memo, session, record.data, record.len);
    }
    dn_buf_free(&record);
    return true;
}

bool is_storage(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TTABLE || t == LUA_TUSERDATA;
}

/* Pushes the storage to use: the argument when given (arg 0: none), else the
 * client's own. */
/* An optional storage argument. */
void check_storage_arg(lua_State *L, int arg)
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
        push_client_value(L, self, CLIENT_VALUE_STORAGE);
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

void push_memory_storage(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, memory_get, 1);
    lua_setfield(L, -3, "get");
    lua_pushcclosure(L, memory_set, 1);
    lua_setfield(L, -2, "set");
}

int module_memory_storage(lua_State *L)
{
    push_memory_storage(L);
    return 1;
}

typedef struct file_store_box {
    dn_file_store *store;
} file_store_box;

static dn_file_store *upvalue_file_store(lua_State *L)
{
    file_store_box *box = lua_touserdata(L, lua_upvalueindex(1));
    /* Its table can outlive it: a finalizer may hold the table when both are collected. */
    if (!box->store)
        luaL_error(L, "dukanext: this file storage was collected; make another with "
                      "dn.file_storage(path)");
    return box->store;
}

static int file_get(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    dn_file_store *store = upvalue_file_store(L);
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
    dn_file_store *store = upvalue_file_store(L);
    if (!dn_file_store_set(store, key, value, len)) return luaL_error(L, "%s", store->error);
    return 0;
}

int file_store_gc(lua_State *L)
{
    file_store_box *box = lua_touserdata(L, 1);
    dn_file_store_free(box->store);
    box->store = NULL;
    return 0;
}

int module_file_storage(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "path must be a non-empty string");
    char why[512];
    if (!dn_file_store_check_folder(path, why, sizeof why))
        return luaL_error(L, "dukanext: file_storage: %s", why);
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

bool resolve_visitor_ids(lua_State *L, lclient *lc, int storage_index, const char *page,
                         size_t page_len, char user_id[DN_ID_MAX + 1], size_t *user_id_len,
                         dn_session *session)
{
    storage_ref storage = open_storage(L, storage_index ? storage_index : push_storage(L, 1, 0));
    return resolve_user_id(L, lc, 1, &storage, user_id, user_id_len) &&
           resolve_session(L, lc, 1, &storage, page, page_len, session);
}

bool storage_user_id(lua_State *L, lclient *lc, int storage_arg, char out[DN_ID_MAX + 1],
                     size_t *out_len)
{
    storage_ref storage = open_storage(L, push_storage(L, 1, storage_arg));
    return resolve_user_id(L, lc, 1, &storage, out, out_len);
}

bool storage_session(lua_State *L, lclient *lc, int storage_arg, dn_session *session)
{
    storage_ref storage = open_storage(L, push_storage(L, 1, storage_arg));
    return resolve_session(L, lc, 1, &storage, NULL, 0, session);
}
