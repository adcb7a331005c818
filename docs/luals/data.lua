---@meta
-- LuaLS declarations of kiri.data, datasets for training (Sources/Kiri/Bindings/DataLibrary.swift and
-- Preludes/data.lua; the files are read and the batches made in Sources/KiriData).

---@class kiri.data
kiri.data = {}

---@class FashionMNISTOptions
---@field split? "train"|"test" 60000 or 10000 images (default "train")
---@field root? string a folder with the split's IDX files, gzip'd or not (default: Debian's dataset-fashion-mnist)
---@field flip? boolean whether ds:batch mirrors images at random unless told otherwise (default false)

---Fashion-MNIST: [1, 28, 28] images labelled 0 to 9, `ds.classes` the default model's class names.
---@param opts? FashionMNISTOptions
---@return Dataset
function kiri.data.fashion_mnist(opts) end

---@class ImageFolderOptions
---@field size? integer|integer[] N or {height, width}: images of another size are resized by kiri.post.resize
---@field channels? 1|3 grey (Rec. 601 luma) or RGB; alpha is dropped (default: as the images, which must agree)
---@field flip? boolean whether ds:batch mirrors images at random unless told otherwise (default false)

---A folder of PNGs: images directly in it (no labels), or in subfolders whose sorted names are the classes.
---@param folder string
---@param opts? ImageFolderOptions
---@return Dataset
function kiri.data.images(folder, opts) end

---A dataset (kiri.data.fashion_mnist, kiri.data.images): `#ds` images, kept as bytes and converted to [-1, 1] as
---they are taken. Its memory is freed by ds:close(), at the end of a `local ds <close> = ...` scope, or with the run.
---@class Dataset
---@operator len: integer
---@field classes? string[] class names, label 0 first; nil for a dataset without labels
---@field shape Shape one image's {C, H, W}
local Dataset = {}

---Image i (1 to #ds) as a [C, H, W] tensor in [-1, 1], and its label (0-based) or nil.
---@param i integer
---@return Tensor image
---@return integer? label
function Dataset:get(i) end

---@class BatchOptions
---@field flip? boolean mirror images at random (default: the dataset's flip)

---Batch `step` (0-based, default 0) of n images: items step*n + 1 ... step*n + n of a seeded shuffle per epoch, so
---that (seed, step) alone decide it. Images [n, C, H, W] in [-1, 1] and labels [n] (nil without labels).
---@param n integer at most #ds
---@param seed integer
---@param step? integer
---@param opts? BatchOptions
---@return Tensor images
---@return Tensor? labels
function Dataset:batch(n, seed, step, opts) end

---Frees the dataset's memory now.
function Dataset:close() end
