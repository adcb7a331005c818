-- luacheck settings for all of Kiri's Lua. KiriTests/LuaLintTests.swift runs `luacheck .` from the checkout with
-- this file and fails on any warning; setup.sh installs Debian's lua-check.
std = "lua54"
max_line_length = 130
exclude_files = {".build/**"}

-- What a recipe or plugin sees in the sandbox (Sources/KiriLua/Preludes/sandbox.lua): the base functions it keeps,
-- read-only library tables without string.dump, and of os only clock, time and date; no io, package, debug,
-- dofile, loadfile, rawset or warn. `kiri` is read-only too. A name outside this list is nil in a run, so
-- luacheck reports it as an undefined global.
stds.kiri_sandbox = {
    read_globals = {
        "assert", "collectgarbage", "error", "getmetatable", "ipairs", "load", "next", "pairs", "pcall", "print",
        "rawequal", "rawget", "rawlen", "require", "select", "setmetatable", "tonumber", "tostring", "type", "xpcall",
        "_G", "_VERSION", "kiri",
        string = {fields = {"byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack",
            "packsize", "rep", "reverse", "sub", "unpack", "upper"}},
        table = {fields = {"concat", "insert", "move", "pack", "remove", "sort", "unpack"}},
        math = {fields = {"abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log",
            "max", "maxinteger", "min", "mininteger", "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt",
            "tan", "tointeger", "type", "ult"}},
        utf8 = {fields = {"char", "charpattern", "codepoint", "codes", "len", "offset"}},
        coroutine = {fields = {"close", "create", "isyieldable", "resume", "running", "status", "wrap", "yield"}},
        os = {fields = {"clock", "date", "time"}},
    },
}
-- A recipe also gets `arg`: its key=value arguments as strings, arg[0] the recipe's name.
stds.kiri_recipe = {read_globals = {"arg"}}

std = "kiri_sandbox"
files["Scripts/"] = {std = "kiri_sandbox+kiri_recipe"}
files["Tests/Benchmarks/"] = {std = "kiri_sandbox+kiri_recipe"}
-- The preludes run before the sandbox exists, with the host's real globals.
files["Sources/"] = {std = "lua54"}
-- The LuaLS type stubs declare `kiri` (a global there) and classes such as `local Tensor = {}` whose methods have
-- empty bodies: their arguments are only documentation, and the class tables are declared, never read.
files["docs/luals/"] = {std = "kiri_sandbox+kiri_recipe", globals = {"kiri"}, unused_args = false, ignore = {"241"}}
