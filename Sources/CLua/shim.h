// Lua 5.4 from Debian's liblua5.4-dev. Swift cannot import function-like macros, so the few the
// runtime needs are re-exposed as static inline functions. Raising API calls are only made from C
// (Sources/LuaBridge): see LuaBridge.h for which calls Swift may make.
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static inline int clua_upvalueindex(int i) { return lua_upvalueindex(i); }
static inline int clua_pcall(lua_State *L, int nargs, int nresults, int msgh) {
    return lua_pcall(L, nargs, nresults, msgh);
}
static inline void clua_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline lua_Number clua_tonumber(lua_State *L, int i) { return lua_tonumber(L, i); }
static inline lua_Integer clua_tointeger(lua_State *L, int i) { return lua_tointeger(L, i); }
static inline int clua_isnoneornil(lua_State *L, int i) { return lua_isnoneornil(L, i); }
static inline int clua_registryindex(void) { return LUA_REGISTRYINDEX; }
