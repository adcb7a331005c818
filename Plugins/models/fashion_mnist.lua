-- Kiri's default model: 28x28 Fashion-MNIST, class-conditional, prompts name a class ("sneaker", "ankle boots")
-- Kiri trained it (kiri train, Scripts/train.lua): a diffusers UNet2DModel predicting v on the DDPM linear
-- schedule, with class 10 as the null class (labels dropped 15% of the time, for classifier-free
-- guidance; Ho & Salimans 2022). kiri.models.fashion_mnist() returns the model of kiri.models.load
-- plus:
--   m.classes          the ten class names, label 0 first
--   m.sample_shape     {1, 28, 28}: one sample's channels, height and width
--   m:encode(prompt)   -> extra for the denoiser, {class = label}: the class the prompt names, by
--                      name, plural or synonym, with an article or not ("a pair of trousers", "Boots").
--                      The empty prompt is the null class (the unconditional branch of CFG).
--                      An unknown prompt is an error that lists the names.
local CLASSES = {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"}
local NULL_CLASS = 10
local SYNONYMS = {
    ["t-shirt"] = {"t shirt", "tshirt", "tee", "tee shirt", "top"},
    trouser = {"pants", "jeans", "slacks", "pair of trousers", "pair of pants", "pair of jeans"},
    pullover = {"sweater", "jumper", "sweatshirt", "hoodie"},
    dress = {"gown", "frock"},
    coat = {"jacket", "overcoat", "parka", "anorak"},
    sandal = {"flip flop", "flip-flop", "slide"},
    shirt = {"blouse", "button-up shirt", "dress shirt"},
    sneaker = {"trainer", "running shoe", "sports shoe", "shoe"},
    bag = {"handbag", "purse", "tote", "tote bag"},
    ["ankle boot"] = {"boot", "bootie", "booty"},
}

local labels = {}
for label, name in ipairs(CLASSES) do
    labels[name] = label - 1
    for _, synonym in ipairs(SYNONYMS[name]) do labels[synonym] = label - 1 end
end

-- "A pair of Sneakers." -> "pair of sneakers"
local function normalise(prompt)
    local text = prompt:lower():gsub("[%.!,;]", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    return (text:gsub("^an? ", ""):gsub("^the ", ""):gsub("^some ", ""))
end

-- The label of `text` as written, or with its last word made singular.
local function lookup(text)
    if labels[text] then return labels[text] end
    for _, ending in ipairs({"ies", "es", "s"}) do
        if text:sub(-#ending) == ending then
            local stem = text:sub(1, -#ending - 1) .. (ending == "ies" and "y" or "")
            if labels[stem] then return labels[stem] end
        end
    end
end

return function()
    local model = kiri.models.load(kiri.models.bundled("fashion-mnist"))
    model.classes = CLASSES
    model.sample_shape = {1, 28, 28}
    function model.encode(_, prompt)
        if type(prompt) ~= "string" then
            error(string.format("bad argument #1 to 'encode' (string expected, got %s)", type(prompt)), 2)
        end
        -- The longest class name with an article is 20 bytes; normalising far longer text would be refused.
        local text = #prompt <= 256 and normalise(prompt) or prompt
        if text == "" then return {class = NULL_CLASS} end
        local label = lookup(text) or lookup(text:gsub("^pair of ", ""))
        if label == nil then
            error(string.format("the default model knows no '%s'; prompts name one of its classes: %s "
                .. "(plurals and synonyms such as 'boots', 'jeans' or 'jacket' work too)", prompt,
                table.concat(CLASSES, ", ")), 2)
        end
        return {class = label}
    end
    return model
end
