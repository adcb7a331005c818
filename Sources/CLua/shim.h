// Lua 5.4 from Debian's liblua5.4-dev, for the C bridge (Sources/LuaBridge) only. Swift never imports
// this module: Lua's API macros (lua_pop, lua_pcall, ...) and every call that can raise stay in C, and
// Swift reaches Lua through LuaBridge.h's non-raising functions (kiri_pop is the shim of lua_pop, and
// so on), so no static-inline shims of the macros are needed here.
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
