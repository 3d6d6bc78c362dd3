/* What the binding's files share: the per-client state beside the core client, the
 * client's Lua values, and the functions one file offers the others. dukanext.c
 * holds the client userdata, its methods and the module table; binding_emit.c the
 * event's fields and the emit pipeline; binding_storage.c the storage bridge;
 * binding_options.c the options. Nothing here is seen outside the
 * module. */
#ifndef DN_BINDING_H
#define DN_BINDING_H

#include "client.h"
#include "compat.h"
#include "ids.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>

#define FILE_STORE_MT "dukanext.file_storage"

/* Every module function and client method shares these upvalues. */
#define UV_HUB    1 /* the hub box of this Lua state */
#define UV_ENCODE 2 /* encode of our private lua-cjson instance */
#define UV_DECODE 3
#define UV_COUNT  3

/* Deep enough for any sensible metadata, shallow enough to stop cycles quickly. */
#define METADATA_MAX_DEPTH 32

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
    /* The last user id this client read or made, and the session record it last
     * wrote: when the storage gives the same bytes back, emit neither validates nor
     * parses them again (see resolve_user_id, resolve_session). */
    char user_id_known[DN_ID_MAX + 1];
    size_t user_id_known_len;
    dn_session_memo session_memo;
    /* Methods of this client running now (callbacks can nest them). Its __gc, called
     * meanwhile (from a finalizer or through the debug library), only closes it: the
     * memory goes when the collector calls __gc again, once nothing runs on it. */
    unsigned calls_running;
    /* The userdata, whose lc is cleared when this is freed; NULL once its __gc ran
     * while a method of it was running, since the userdata may go after that __gc. */
    struct client_box *box;
} lclient;

/* The client's Lua values live in its userdata's user value, not in the registry:
 * a callback that refers to its own client is then an ordinary cycle the collector
 * can break. */
enum {
    CLIENT_VALUE_STORAGE = 1,
    CLIENT_VALUE_ON_ERROR,
    CLIENT_VALUE_FALLBACK, /* weak-keyed: storage -> {key = {value, why}} (see fallback_write) */
};

static inline hub_box *upvalue_hub(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(UV_HUB));
}

/* What getmetatable answers for our objects: their metatables (and __gc) stay ours. */
void lock_metatable(lua_State *L, const char *name);
static inline void push_client_value(lua_State *L, int self, int which)
{
    dn_lua_getuservalue(L, self);
    lua_rawgeti(L, -1, which);
    lua_remove(L, -2);
}

/* Pops the value on top into the client's slot `which`. */
static inline void set_client_value(lua_State *L, int self, int which)
{
    dn_lua_getuservalue(L, self);
    lua_insert(L, -2);
    lua_rawseti(L, -2, which);
    lua_pop(L, 1);
}
const char *error_text(lua_State *L, int idx);
/* Answers nil, "CODE: reason": how runtime problems are returned. */
int refuse(lua_State *L, const char *code, const char *fmt, ...);
/* A client with work left holds a registry reference to itself (see dukanext.c). */
void anchor_if_busy(lua_State *L, lclient *lc, int self);

/* ---- emit (binding_emit.c) ---- */

/* The body of client:emit(event, metadata, fields) for a client entered by the
 * caller: answers its Lua results. */
int emit_running(lua_State *L, lclient *lc);

/* ---- the storage bridge (binding_storage.c) ---- */

/* The user id, or the session, of client 1 through the storage argument storage_arg
 * (0: the client's own storage), for get_user_id and get_session_id. False when no id
 * could be made. */
bool storage_user_id(lua_State *L, lclient *lc, int storage_arg, char out[DN_ID_MAX + 1],
                     size_t *out_len);
bool storage_session(lua_State *L, lclient *lc, int storage_arg, dn_session *session);
bool is_storage(lua_State *L, int idx);
void check_storage_arg(lua_State *L, int arg);
void push_memory_storage(lua_State *L);
int module_memory_storage(lua_State *L);
int file_store_gc(lua_State *L);
/* Emit's visitor: the user id and the session of client 1 through the storage at
 * storage_index (0: the client's own). page: the first page for a new session (may
 * be NULL). False when no id could be made. */
bool resolve_visitor_ids(lua_State *L, lclient *lc, int storage_index, const char *page,
                         size_t page_len, char user_id[DN_ID_MAX + 1], size_t *user_id_len,
                         dn_session *session);
int module_file_storage(lua_State *L);

/* ---- the options (binding_options.c) ---- */

int read_options(lua_State *L, int opts);
void check_options(lua_State *L, int base);
bool apply_options(lua_State *L, int base, dn_config *config);
int option_slot(int base, const char *name);

#endif
