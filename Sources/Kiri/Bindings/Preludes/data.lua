-- kiri.data and the dataset table, run by the sandbox prelude before it seals the API (DataLibrary.swift). A dataset
-- is a plain table whose methods close over the handle, as a model's do (models.lua), so a script can neither forge
-- nor reach another dataset's handle. The host functions are called through pcall and their errors re-raised at the
-- script's line.
local api, host, resolve = ...
local format, gsub, pack, unpack = string.format, string.gsub, table.pack, table.unpack
local info, class_name, get, batch, release = host.dataInfo, host.dataClass, host.dataGet, host.dataBatch, host.dataRelease

-- pcall's results passed on, or its error raised at the line of the script that called the caller.
local function relay(ok, ...)
    if ok then return ... end
    local message = ...
    if type(message) == "string" then message = gsub(message, "^sandbox:%d+: ", "", 1) end
    error(message, 3)
end

-- `body(...)` with its error raised at the script's line: for the functions the script calls directly.
local function protected(body)
    return function(...)
        local results = pack(relay(pcall(body, ...)))   -- not a tail call: relay's level 3 is the script's line
        return unpack(results, 1, results.n)
    end
end

local function bad(argument, name, problem)
    error(format("bad argument #%d to '%s' (%s)", argument, name, problem), 0)
end

-- The options table of `name` (argument `argument`): a table with no keys but `allowed`'s, or nil for none.
local function options(opts, argument, name, allowed)
    if opts == nil then return {} end
    if type(opts) ~= "table" then bad(argument, name, "table or nil expected, got " .. type(opts)) end
    for key in pairs(opts) do
        if not allowed[key] then
            local names = {}
            for option in pairs(allowed) do names[#names + 1] = option end
            table.sort(names)
            bad(argument, name, format("unknown option '%s'; options: %s", tostring(key), table.concat(names, ", ")))
        end
    end
    if opts.flip ~= nil and type(opts.flip) ~= "boolean" then
        bad(argument, name, "flip must be a boolean, got " .. type(opts.flip))
    end
    return opts
end

local function dataset_object(handle)
    local count, channels, height, width, class_count = unpack(info(handle))
    local classes
    if class_count > 0 then
        classes = {}
        for i = 1, class_count do classes[i] = class_name(handle, i) end
    end
    local ds = {classes = classes, shape = {channels, height, width}}

    -- The method `name` of this dataset: checks self, then runs `body(...)` with its errors at the script's line.
    local function method(name, usage, body)
        local run = protected(body)
        ds[name] = function(self, ...)
            if self ~= ds then error(format("bad self for '%s' (call it as %s)", name, usage), 2) end
            return run(...)
        end
    end

    -- Item i (1 to #ds) as [C, H, W] in [-1, 1], and its label (0-based) or nil.
    method("get", "ds:get(i)", function(...) return get(handle, ...) end)

    -- Batch `step` (0-based) of n items in the seeded order (DataOrder.swift), mirrored at random with flip.
    method("batch", "ds:batch(n, seed, step)", function(n, seed, step, opts)
        opts = options(opts, 4, "batch", {flip = true})
        return batch(handle, n, seed, step, opts.flip)
    end)

    function ds.close(self)
        if self ~= ds then error("bad self for 'close' (call it as ds:close())", 2) end
        release(handle)
    end

    local description = format("Dataset: %d images of %dx%dx%d%s", count, channels, height, width,
        classes and format(", %d classes", #classes) or "")
    return setmetatable(ds, {
        __len = function() return count end,
        __close = function() release(handle) end,
        __tostring = function() return description end,
        __metatable = false,
    })
end

api.data = {}

-- kiri.data.fashion_mnist{split = "train"|"test", root = folder, flip = false}: Debian's dataset-fashion-mnist, or
-- the IDX files in `root`.
api.data.fashion_mnist = protected(function(opts)
    opts = options(opts, 1, "fashion_mnist", {split = true, root = true, flip = true})
    local split, root = opts.split or "train", opts.root
    if type(split) ~= "string" then bad(1, "fashion_mnist", "split must be \"train\" or \"test\", got " .. type(split)) end
    if root ~= nil and type(root) ~= "string" then bad(1, "fashion_mnist", "root must be a string, got " .. type(root)) end
    return dataset_object(host.dataFashionMNIST(split, root, opts.flip))
end)

-- The integer option `key` of kiri.data.images, or nil.
local function whole(value, what)
    if value ~= nil and math.type(value) ~= "integer" then
        bad(2, "images", format("%s must be an integer, got %s", what, math.type(value) or type(value)))
    end
    return value
end

-- Resizes the images of a folder being loaded that are not height x width, with kiri.post.resize (Pillow's
-- bilinear), a group of one size at a time.
local function resize_pending(handle, height, width)
    local resize
    while true do
        local images = host.dataImagesPending(handle)
        if images == nil then return end
        resize = resize or resolve("post", "resize")
        host.dataImagesStore(handle, resize(images, {width = width, height = height}))
    end
end

-- kiri.data.images(folder, {size = N or {height, width}, channels = 1|3, flip = false}): a folder of PNGs, directly
-- in it or in class subfolders.
api.data.images = protected(function(folder, opts)
    opts = options(opts, 2, "images", {size = true, channels = true, flip = true})
    local height, width
    if type(opts.size) == "table" then
        if #opts.size ~= 2 then bad(2, "images", format("size must be N or {height, width}, got a list of %d", #opts.size)) end
        height, width = whole(opts.size[1], "size[1]"), whole(opts.size[2], "size[2]")
    elseif opts.size ~= nil then
        height = whole(opts.size, "size")
        width = height
    end
    local handle = host.dataImagesOpen(folder, whole(opts.channels, "channels"), height, width, opts.flip)
    if height then
        local ok, message = pcall(resize_pending, handle, height, width)
        if not ok then
            release(handle)
            error(message, 0)
        end
    end
    host.dataImagesFinish(handle)
    return dataset_object(handle)
end)
