/* The few Lua C API differences between 5.1 (and LuaJIT) and 5.2-5.4 that the binding
 * meets, under names of our own so they never clash with a host's compat shims. */
#ifndef DN_COMPAT_H
#define DN_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#ifndef LUA_OK
#define LUA_OK 0
#endif

#if LUA_VERSION_NUM == 501
#define dn_lua_rawlen(L, i) lua_objlen((L), (i))
/* A userdata's environment table plays the part of 5.2's user value. */
#define dn_lua_getuservalue(L, i) lua_getfenv((L), (i))
#define dn_lua_setuservalue(L, i) lua_setfenv((L), (i))

static inline int dn_lua_absindex(lua_State *L, int i)
{
    return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}

/* luaL_setfuncs, which 5.1 lacks: every function shares the nup values on the stack. */
static inline void dn_lua_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    for (; l->name; l++) {
        for (int i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#else
#define dn_lua_rawlen(L, i)        lua_rawlen((L), (i))
#define dn_lua_absindex(L, i)      lua_absindex((L), (i))
#define dn_lua_setfuncs(L, l, nup) luaL_setfuncs((L), (l), (nup))
#define dn_lua_getuservalue(L, i)  lua_getuservalue((L), (i))
#define dn_lua_setuservalue(L, i)  lua_setuservalue((L), (i))
#endif

#endif
