-- luacheck settings for Kiri's Lua (the preludes are linted by KiriTests/PreludeLintTests.swift).
std = "lua54"
max_line_length = 130
