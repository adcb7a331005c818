-- A labelled grid of images: cells in rows and columns with row, column and title labels (A1111's X/Y plot)
-- Follows AUTOMATIC1111 modules/images.py, image_grid (rows of equal cells) and draw_grid_annotations
-- (labels above the columns and left of the rows, wrapped word by word to fit), with padding as
-- torchvision.utils.make_grid has it: before every row and column, and after the last.
--
-- kiri.post.grid(images, opts) -> [C, H, W] in [0, 1]
--   images  a list of rows, each a list of [C, h, w] or [1, C, h, w] images in [0, 1], all of one h and w,
--           C = 1 or 3 (grey cells become RGB when any cell is RGB); or an [N, C, h, w] tensor, laid out
--           row-major in opts.columns columns (default ceil(sqrt(N))). Cells a row lacks are background.
--   opts    row_labels      one string per row, right-aligned in a column left of the rows, wrapped to the
--                           wider of a cell and 20 characters
--           column_labels   one string per column, centred above it and wrapped to the cell's width, so a
--                           long label takes more lines rather than its neighbour's place
--           title           centred above everything, in its own lines ("\n") only; the grid widens
--                           to fit it
--           scale           whole-number nearest-neighbour upscaling of every cell (1)
--           text_scale      whole-number upscaling of the labels' 5x7 font, lib.font (1)
--           padding         pixels between cells and around them (2)
--           background, ink grey levels in [0, 1] (1, white, and 0, black)
-- A label may have several lines ("\n"); lib.font's wrap breaks the long ones, between words, else inside a
-- word. Rows are as tall as a cell or the tallest row label, whichever is taller, with both centred in the
-- row; the band of column labels is as tall as the tallest of them. A column is as wide as its cell (wider
-- only when the cell is narrower than one character).
local font = require "lib.font"
local check = require "lib.check"
local format = string.format
local kind, shape_text = check.kind, check.shape_text

-- The checks raise errors at grid's caller: level 3 is (check, grid, caller).

local function whole_option(opts, key, default, least)
    local value = opts[key]
    if value == nil then return default end
    local whole = type(value) == "number" and math.tointeger(value)
    if not whole or whole < least then
        error(format("grid: %s must be a whole number >= %d, got %s", key, least, tostring(value)), 3)
    end
    return whole
end

local function level_option(opts, key, default)
    local value = opts[key]
    if value == nil then return default end
    if type(value) ~= "number" or not (value >= 0 and value <= 1) then
        error(format("grid: %s must be a number in [0, 1], got %s", key, tostring(value)), 3)
    end
    return value
end

local function label_option(labels, key, count, things)
    if labels == nil then return nil end
    if type(labels) ~= "table" then error(format("grid: %s must be a list of strings, got %s", key, kind(labels)), 3) end
    if #labels ~= count then error(format("grid: %d %s for %d %s", #labels, key, count, things), 3) end
    for i = 1, count do
        if type(labels[i]) ~= "string" and type(labels[i]) ~= "number" then
            error(format("grid: %s[%d] is a %s, a string expected", key, i, kind(labels[i])), 3)
        end
    end
    return labels
end

-- The cells as rows of [C, h, w] tensors, and the C (the largest), h and w they share.
local function cells(images, columns)
    local rows = images
    if type(images) == "userdata" then
        local shape = images:shape()
        if #shape ~= 4 then
            error(format("bad argument #1 to 'grid' ([N, C, h, w] Tensor expected, got shape %s)", shape_text(shape)), 3)
        end
        columns = columns or math.ceil(math.sqrt(shape[1]))
        rows = {}
        for n = 1, shape[1] do
            local i = (n - 1) // columns + 1
            rows[i] = rows[i] or {}
            rows[i][#rows[i] + 1] = images:select(1, n)
        end
    elseif type(images) ~= "table" then
        error(format("bad argument #1 to 'grid' (list of rows or Tensor expected, got %s)", type(images)), 3)
    end
    local result, channels, first = {}, 1, nil
    for i = 1, #rows do
        if type(rows[i]) ~= "table" then
            error(format("grid: row %d is a %s, but a list of images expected", i, kind(rows[i])), 3)
        end
        result[i] = {}
        for j = 1, #rows[i] do
            local image, name = rows[i][j], format("image [%d][%d]", i, j)
            if type(image) ~= "userdata" then error(format("grid: %s is a %s, a Tensor expected", name, kind(image)), 3) end
            local given = image:shape()
            if #given == 4 and given[1] == 1 then image = image:select(1, 1) end
            local shape = image:shape()
            if #shape ~= 3 or (shape[1] ~= 1 and shape[1] ~= 3) then
                error(format("grid: %s has shape %s, but [C,h,w] or [1,C,h,w] with C = 1 or 3 expected",
                    name, shape_text(given)), 3)
            end
            if not first then
                first = { name = name, given = given, height = shape[2], width = shape[3] }
            elseif shape[2] ~= first.height or shape[3] ~= first.width then
                error(format("grid: %s has shape %s, but %s has %s", name, shape_text(given), first.name,
                    shape_text(first.given)), 3)
            end
            channels = math.max(channels, shape[1])
            result[i][j] = image
        end
    end
    if not first then error("grid: no images", 3) end
    return result, channels, first.height, first.width
end

return function(images, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error(format("bad argument #2 to 'grid' (table expected, got %s)", kind(opts)), 2)
    end
    opts = opts or {}
    local rows, channels, height, width = cells(images, whole_option(opts, "columns", nil, 1))
    local scale, text_scale = whole_option(opts, "scale", 1, 1), whole_option(opts, "text_scale", 1, 1)
    local padding = whole_option(opts, "padding", 2, 0)
    local background, ink = level_option(opts, "background", 1), level_option(opts, "ink", 0)
    local column_count = 0
    for _, row in ipairs(rows) do column_count = math.max(column_count, #row) end
    local row_labels = label_option(opts.row_labels, "row_labels", #rows, "rows")
    local column_labels = label_option(opts.column_labels, "column_labels", column_count, "columns")
    local title = opts.title
    if title ~= nil and type(title) ~= "string" and type(title) ~= "number" then
        error(format("grid: title must be a string, got %s", kind(title)), 2)
    end

    local function fill(rows_high, columns_wide)
        return kiri.full({ channels, rows_high, columns_wide }, background)
    end
    -- image [C, h, w] on a background [C, rows_high, columns_wide], its top left corner at (top, left) (0-based)
    local function place(image, rows_high, columns_wide, top, left)
        local h, w = image:size(2), image:size(3)
        local line = kiri.cat({ fill(h, left), image, fill(h, columns_wide - w - left) }, 3)
        return kiri.cat({ fill(top, columns_wide), line, fill(rows_high - h - top, columns_wide) }, 2)
    end
    local function centre(image, rows_high, columns_wide)
        return place(image, rows_high, columns_wide, (rows_high - image:size(2)) // 2, (columns_wide - image:size(3)) // 2)
    end
    -- parts side by side (dim 3) or one over another (dim 2), padding before each and after the last
    local function spaced(parts, dim, span)
        local joined = {}
        local gap = dim == 3 and fill(span, padding) or fill(padding, span)
        for _, part in ipairs(parts) do joined[#joined + 1] = gap; joined[#joined + 1] = part end
        joined[#joined + 1] = gap
        return kiri.cat(joined, dim)
    end
    local function text(line)
        local mask = kiri.post.upscale_nearest(font.render(line), text_scale)
        local image = mask * ink + (1 - mask) * background   -- exact at both levels
        return image:unsqueeze(1):expand({ channels, image:size(1), image:size(2) })
    end

    -- A label's lines, wrapped to `limit` pixels, with the width and height they take: 2 font pixels between
    -- lines, since the glyphs' descenders reach their bottom row and would touch the next line's capitals.
    local text_height, line_gap = font.height * text_scale, 2 * text_scale
    local function wrapped(label, limit)
        local lines = font.wrap(label, limit // text_scale)
        local widest = 0
        for _, line in ipairs(lines) do widest = math.max(widest, font.width(line) * text_scale) end
        return { lines = lines, width = widest, height = #lines * (text_height + line_gap) - line_gap }
    end
    -- a wrapped label's lines one under another in `columns_wide`, each centred, or right-aligned if `right`
    local function block(label, columns_wide, right)
        local parts = {}
        for k, line in ipairs(label.lines) do
            if k > 1 then parts[#parts + 1] = fill(line_gap, columns_wide) end
            local image = text(line)
            local left = right and columns_wide - image:size(3) or (columns_wide - image:size(3)) // 2
            parts[#parts + 1] = place(image, text_height, columns_wide, 0, left)
        end
        return kiri.cat(parts, 2)
    end

    local cell_height, cell_width = height * scale, width * scale
    local rows_text, columns_text = {}, {}
    local label_width, row_height, band_height = 0, cell_height, 0
    for i, label in ipairs(row_labels or {}) do
        -- A1111 gives the row labels 3/4 of a cell; 20 characters keep Kiri's small cells' labels readable.
        rows_text[i] = wrapped(label, math.max(cell_width, (20 * font.advance - 1) * text_scale))
        label_width = math.max(label_width, rows_text[i].width)
        row_height = math.max(row_height, rows_text[i].height)
    end
    local widths = {}
    for j = 1, column_count do
        widths[j] = cell_width
        if column_labels then
            columns_text[j] = wrapped(column_labels[j], cell_width)
            widths[j] = math.max(cell_width, columns_text[j].width)
            band_height = math.max(band_height, columns_text[j].height)
        end
    end

    local bands = {}
    if column_labels then
        local parts = row_labels and { fill(band_height, label_width) } or {}
        for j, label in ipairs(columns_text) do parts[#parts + 1] = centre(block(label, widths[j]), band_height, widths[j]) end
        bands[#bands + 1] = spaced(parts, 3, band_height)
    end
    for i, row in ipairs(rows) do
        local parts = {}
        if row_labels then
            local label = block(rows_text[i], label_width, true)
            parts[1] = place(label, row_height, label_width, (row_height - label:size(2)) // 2, 0)
        end
        for j = 1, column_count do
            local image = row[j]
            if image then
                image = kiri.post.upscale_nearest(image:expand({ channels, height, width }), scale)
                parts[#parts + 1] = centre(image, row_height, widths[j])
            else
                parts[#parts + 1] = fill(row_height, widths[j])
            end
        end
        bands[#bands + 1] = spaced(parts, 3, row_height)
    end

    local body_width = bands[1]:size(3)
    local heading = title and wrapped(title, math.huge)
    local total_width = math.max(body_width, heading and heading.width + 2 * padding or 0)
    for b, band in ipairs(bands) do bands[b] = centre(band, band:size(2), total_width) end
    if heading then table.insert(bands, 1, centre(block(heading, heading.width), heading.height, total_width)) end
    return spaced(bands, 2, total_width)
end
