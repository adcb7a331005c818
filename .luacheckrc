-- luacheck settings for Kiri's Lua (the preludes are linted by KiriTests/PreludeLintTests.swift).
std = "lua54"
max_line_length = 130
-- Recipes and plugins run in the sandbox, where `kiri` is a global; recipes also get `arg`.
read_globals = {"kiri"}
