/* The options of dukanext.new and dukanext.configure: the table of known options,
 * one raw reading of the given ones, their checks (each mistake raises, naming the
 * option) and their application to a dn_config. */
#include "binding.h"
#include "suggest.h"
#include "url.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef enum option_kind {
    OPT_URL,
    OPT_TEXT,
    OPT_SECONDS,
    OPT_COUNT,
    OPT_COUNT_OR_AUTO, /* an integer, or "auto" stored as 0 */
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
    {"max_in_flight", OPT_COUNT_OR_AUTO, CONFIG_FIELD(max_in_flight), 1, 1024},
    {"max_in_flight_cap", OPT_COUNT, CONFIG_FIELD(max_in_flight_cap), 1, 1024},
    {"max_connections", OPT_COUNT, CONFIG_FIELD(max_connections), 1, 1024},
    {"max_retries", OPT_COUNT, CONFIG_FIELD(max_retries), 0, 100},
    {"retry_base", OPT_SECONDS, CONFIG_FIELD(retry_base_ms), 0, 1e6},
    {"retry_max", OPT_SECONDS, CONFIG_FIELD(retry_max_ms), 0, 1e6},
    {"max_age", OPT_SECONDS, CONFIG_FIELD(max_age_ms), 0.001, 31536000},
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
        if (!dn_config_is_header_name(name, name_len))
            luaL_error(L, "dukanext: option 'headers': '%s' is not a valid header name", name);
        if (dn_config_is_reserved_header(name))
            luaL_error(L, "dukanext: option 'headers': '%s' is set by dukanext itself", name);
        if (!dn_config_is_single_line(value, value_len))
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

static void check_number_option(lua_State *L, const option_spec *spec, int value)
{
    int t = lua_type(L, value);
    if (spec->kind == OPT_COUNT_OR_AUTO && t == LUA_TSTRING &&
        strcmp(lua_tostring(L, value), "auto") == 0)
        return;
    double n = lua_tonumber(L, value);
    const char *unit = spec->kind == OPT_SECONDS ? "a number of seconds"
                       : spec->kind == OPT_COUNT ? "an integer"
                                                 : "\"auto\" or an integer";
    if (t != LUA_TNUMBER || n != n || n < spec->min || n > spec->max ||
        (spec->kind != OPT_SECONDS && floor(n) != n)) {
        /* lua_pushfstring knows no %g */
        char range[64];
        snprintf(range, sizeof range, "from %g to %g", spec->min, spec->max);
        luaL_error(L, "dukanext: option '%s' must be %s %s", spec->name, unit, range);
    }
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
        const char *problem = dn_url_problem(url, len);
        if (problem) {
            /* Room for SHOWN_VALUE_MAX bytes and more, so that a cut URL shows "...". */
            char redacted[SHOWN_VALUE_MAX + 8];
            push_shown_value(L, redacted, dn_url_redact(url, len, redacted, sizeof redacted));
            luaL_error(L, "dukanext: option '%s' %s: %s", spec->name, problem, lua_tostring(L, -1));
        }
        break;
    }
    case OPT_TEXT: {
        if (t != LUA_TSTRING) luaL_error(L, "dukanext: option '%s' must be a string", spec->name);
        const char *text = lua_tolstring(L, value, &len);
        if (!dn_config_is_single_line(text, len))
            luaL_error(L, "dukanext: option '%s' must not contain NUL, CR or LF", spec->name);
        break;
    }
    case OPT_SECONDS:
    case OPT_COUNT:
    case OPT_COUNT_OR_AUTO:
        check_number_option(L, spec, value);
        break;
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

/* Names users write for options, and what they meant. */
static const dn_alias option_aliases[] = {
    {"url", "endpoint"},
    {"uri", "endpoint"},
    {"endpoint_url", "endpoint"},
    {"server", "endpoint"},
    {"retries", "max_retries"},
    {"error_handler", "on_error"},
    {"callback", "on_error"},
    {"max_queue_size", "max_queue"},
    {NULL, NULL},
};

static void raise_unknown_option(lua_State *L, const char *name)
{
    const char *names[OPTION_COUNT + 1];
    for (size_t i = 0; i < OPTION_COUNT; i++) names[i] = option_specs[i].name;
    names[OPTION_COUNT] = NULL;
    const char *meant = dn_suggest(name, names, option_aliases);
    if (meant) luaL_error(L, "dukanext: unknown option '%s' (did you mean '%s'?)", name, meant);
    luaL_error(L, "dukanext: unknown option '%s'", name);
}

/* A copy of the raw pairs of the table at idx: what is checked is then what is applied,
 * whatever Lua code runs in between (a storage's __index) does to the original. */
static void copy_raw_pairs(lua_State *L, int idx)
{
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

/* Reads the options table at opts (0 or nil: none) once: its own keys must all be
 * known options, then each known option is read with one lua_getfield, so that options
 * inherited through __index (the "defaults" idiom) count, and pushed. Answers the stack
 * index of the first of OPTION_COUNT slots, in option_specs' order; check_options and
 * apply_options look at these values only. */
int read_options(lua_State *L, int opts)
{
    luaL_checkstack(L, OPTION_COUNT + 8, "dukanext: options");
    int base = lua_gettop(L) + 1;
    bool given = opts != 0 && !lua_isnoneornil(L, opts);
    if (given && !lua_istable(L, opts)) luaL_error(L, "dukanext: options must be a table");
    if (given) {
        lua_pushnil(L);
        while (lua_next(L, opts)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "dukanext: option names must be strings");
            if (!find_option(lua_tostring(L, -2))) raise_unknown_option(L, lua_tostring(L, -2));
            lua_pop(L, 1);
        }
    }
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (!given) {
            lua_pushnil(L);
            continue;
        }
        lua_getfield(L, opts, option_specs[i].name);
        if (option_specs[i].kind == OPT_HEADERS && lua_istable(L, -1)) {
            copy_raw_pairs(L, lua_gettop(L));
            lua_remove(L, -2);
        }
    }
    return base;
}

/* Raises for anything wrong, before anything is allocated. */
void check_options(lua_State *L, int base)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (!lua_isnil(L, base + (int)i)) check_option(L, &option_specs[i], base + (int)i);
}

/* Fills config from the options read_options pushed at base and check_options checked;
 * false only when out of memory. */
bool apply_options(lua_State *L, int base, dn_config *config)
{
    bool ok = true;
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_spec *spec = &option_specs[i];
        int value = base + (int)i;
        if (lua_isnil(L, value)) continue;
        char *field = (char *)config + spec->offset;
        switch (spec->kind) {
        case OPT_URL:
        case OPT_TEXT:
            ok = dn_config_set_string((char **)(void *)field, lua_tostring(L, value)) && ok;
            break;
        case OPT_SECONDS:
            *(int64_t *)(void *)field = (int64_t)llround(lua_tonumber(L, value) * 1000.0);
            break;
        case OPT_COUNT:
        case OPT_COUNT_OR_AUTO:
            /* "auto" reads as 0 */
            *(size_t *)(void *)field =
                lua_type(L, value) == LUA_TNUMBER ? (size_t)lua_tonumber(L, value) : 0;
            break;
        case OPT_FLAG:
            *(bool *)(void *)field = lua_toboolean(L, value);
            break;
        case OPT_HEADERS:
            lua_pushnil(L);
            while (lua_next(L, value)) {
                ok = dn_config_add_header(config, lua_tostring(L, -2), lua_tostring(L, -1)) && ok;
                lua_pop(L, 1);
            }
            break;
        case OPT_CHOICE: {
            /* Every choice enum of dn_config is an int-sized enum counting from 0. */
            const char *v = lua_tostring(L, value);
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
    /* Timeouts below a millisecond would mean "none" to curl. */
    if (config->timeout_ms < 1) config->timeout_ms = 1;
    if (config->connect_timeout_ms < 1) config->connect_timeout_ms = 1;
    if (config->session_timeout_ms < 1) config->session_timeout_ms = 1;
    return ok;
}

/* The slot read_options gave option `name`. */
int option_slot(int base, const char *name)
{
    return base + (int)(find_option(name) - option_specs);
}
