/* dn_posix: the few POSIX calls spec/82-hostile_spec.lua needs to fork a Lua state
 * and talk to the child. Test support only; not part of the module. Works with Lua
 * 5.1 to 5.4 and LuaJIT (only the 5.1 API is used). Failures answer nil, message. */
#include <lauxlib.h>
#include <lua.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(lua_State *L)
{
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
}

/* fork() -> pid in the parent, 0 in the child */
static int p_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0) return fail(L);
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* waitpid(pid) -> exit status (0-255), or 128 + signal number when killed */
static int p_waitpid(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status;
    pid_t r;
    do r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) return fail(L);
    if (WIFEXITED(status))
        lua_pushinteger(L, WEXITSTATUS(status));
    else
        lua_pushinteger(L, 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
    return 1;
}

/* _exit(code): leaves without running atexit handlers, finalizers or lua_close */
static int p_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

static int p_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* kill(pid, sig) -> true */
static int p_kill(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (kill(pid, sig) != 0) return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* pipe() -> rfd, wfd */
static int p_pipe(lua_State *L)
{
    int fds[2];
    if (pipe(fds) != 0) return fail(L);
    lua_pushinteger(L, fds[0]);
    lua_pushinteger(L, fds[1]);
    return 2;
}

/* write(fd, s) -> bytes written (all of s unless an error) */
static int p_write(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    size_t len, done = 0;
    const char *s = luaL_checklstring(L, 2, &len);
    while (done < len) {
        ssize_t n = write(fd, s + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(L);
        done += (size_t)n;
    }
    lua_pushinteger(L, (lua_Integer)done);
    return 1;
}

/* read(fd, n) -> up to n bytes; "" at end of file */
static int p_read(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    lua_Integer want = luaL_checkinteger(L, 2);
    luaL_argcheck(L, want > 0 && want <= 1 << 20, 2, "read 1 byte to 1 MiB");
    char *buf = malloc((size_t)want);
    if (!buf) return luaL_error(L, "out of memory");
    ssize_t n;
    do n = read(fd, buf, (size_t)want);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        free(buf);
        return fail(L);
    }
    lua_pushlstring(L, buf, (size_t)n);
    free(buf);
    return 1;
}

/* close(fd) -> true */
static int p_close(lua_State *L)
{
    if (close((int)luaL_checkinteger(L, 1)) != 0) return fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg functions[] = {
    {"fork", p_fork},   {"waitpid", p_waitpid}, {"_exit", p_exit},  {"getpid", p_getpid},
    {"kill", p_kill},   {"pipe", p_pipe},       {"write", p_write}, {"read", p_read},
    {"close", p_close}, {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_dn_posix(lua_State *L);

int luaopen_dn_posix(lua_State *L)
{
    lua_newtable(L);
    for (const luaL_Reg *f = functions; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
