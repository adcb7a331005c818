import Foundation
import KiriData
import KiriLua
import KiriTensor

/// `kiri.data`: datasets for training (Preludes/data.lua builds the dataset table over these host functions). A
/// dataset lives under a handle that only its table's closures hold, until `ds:close()` or the end of the run; its
/// bytes count against the run's memory cap. Every file goes through FileAccess: Fashion-MNIST's system folder must be
/// a read root, as the bundled models' folders are (RecipeRunner grants both), and a folder the script names must lie
/// in the run's read roots.
public final class DataLibrary: LuaLibrary {
    /// Where Debian's dataset-fashion-mnist puts the IDX files (setup.sh installs it).
    public static let debianFashionMNIST = "/usr/share/datasets/fashion-mnist"

    /// The ten classes, label 0 first, as the default model's prompts name them (Plugins/models/fashion_mnist.lua).
    public static let fashionMNISTClasses = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                                             "bag", "ankle boot"]

    /// The folder `fashion_mnist{}` reads without `root`, or nil when it is not installed.
    let fashionMNIST: String?
    private var datasets: [Int: ImageDataset] = [:]
    /// Folders whose images of another size are being resized (kiri.data.images), with the dataset's flip setting.
    private var loading: [Int: (folder: ImageFolder, flip: Bool)] = [:]
    private var nextHandle = 1

    public init(fashionMNIST: String? = BundledFiles.isFolder(debianFashionMNIST) ? debianFashionMNIST : nil) {
        self.fashionMNIST = fashionMNIST
    }

    public let prelude: [UInt8]? = PackageResources.data_lua

    public func close() {
        datasets.removeAll()
        loading.removeAll()
    }

    public var bindings: [Binding] { [
        /// (split, root or nil, flip) → handle, for kiri.data.fashion_mnist{split =, root =, flip =}.
        Binding(name: "dataFashionMNIST", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("fashion_mnist") {
                let split = try call.string(1)
                guard let prefix = ["train": "train", "test": "t10k"][split] else {
                    throw ScriptError(argument: 1, "split must be \"train\" or \"test\", got '\(split)'")
                }
                let root = call.isNil(2) ? nil : try call.string(2)
                let dataset = try Self.translated {
                    try self.fashionMNIST(prefix: prefix, root: root, files: call.runtime.files)
                }
                dataset.flip = call.boolean(3, default: false)
                call.push(integer: self.keep(dataset))
            }
        },
        /// (folder, channels or nil, height or nil, width or nil, flip) → handle of a folder being loaded: its images of
        /// another size wait for dataImagesPending/dataImagesStore, then dataImagesFinish makes it a dataset.
        Binding(name: "dataImagesOpen", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("images") {
                let name = try call.string(1)
                let channels = try call.optionalInteger(2)
                let (height, width) = (try call.optionalInteger(3), try call.optionalInteger(4))
                guard channels == nil || channels == 1 || channels == 3 else {
                    throw ScriptError(argument: 2, "channels must be 1 (grey) or 3 (RGB), got \(channels!)")
                }
                for side in [height, width].compactMap({ $0 }) where !(1...IDXFile.maxSide).contains(side) {
                    throw ScriptError(argument: 2, "size must be from 1 to \(IDXFile.maxSide) pixels a side, got \(side)")
                }
                let files = call.runtime.files
                let real = try files.resolveForReading(name)
                guard BundledFiles.isFolder(real) else { throw ScriptError(argument: 1, "'\(name)' is a file, not a folder") }
                let folder = try Self.translated {
                    try ImageFolder(path: real, name: name, channels: channels, size: height.flatMap { h in width.map { (h, $0) } },
                                    resolve: files.resolveForReading)
                }
                let handle = self.nextHandle
                self.nextHandle += 1
                self.loading[handle] = (folder, call.boolean(5, default: false))
                call.push(integer: handle)
            }
        },
        /// (handle) → the next images waiting to be resized, [N, C, h, w] in [0, 1], or nothing.
        Binding(name: "dataImagesPending", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            guard let folder = self.loading[try call.integer(1)]?.folder else { throw ScriptError("the dataset is closed") }
            if let images = try Self.translated({ try folder.nextGroup() }) { try call.push(images) } else { call.pushNil() }
        },
        /// (handle, images): the group dataImagesPending handed out, resized by post/resize.
        Binding(name: "dataImagesStore", tables: ["host"], tensorResults: 0) { call in
            guard let folder = self.loading[try call.integer(1)]?.folder else { throw ScriptError("the dataset is closed") }
            guard call.isTensor(2) else { throw ScriptError("post/resize returned \(call.typeName(2)), not a Tensor") }
            try Self.translated { try folder.store(try call.tensor(2), resizer: "post/resize") }
        },
        /// (handle): the folder, every image at its size, becomes a dataset under the same handle.
        Binding(name: "dataImagesFinish", tables: ["host"], tensorResults: 0) { call in
            let handle = try call.integer(1)
            guard let (folder, flip) = self.loading.removeValue(forKey: handle) else { throw ScriptError("the dataset is closed") }
            self.datasets[handle] = folder.dataset(flip: flip)
        },
        /// (handle) → {count, channels, height, width, number of classes (0: no labels)}.
        Binding(name: "dataInfo", tables: ["host"], tensorResults: 0) { call in
            let dataset = try self.dataset(call)
            try call.push(numbers: [dataset.count, dataset.channels, dataset.height, dataset.width, dataset.classes?.count ?? 0].map(Double.init))
        },
        /// (handle, i) → the name of class i (1-based).
        Binding(name: "dataClass", tables: ["host"], tensorResults: 0) { call in
            let classes = try self.dataset(call).classes ?? []
            let index = try call.integer(2)
            guard (1...classes.count).contains(index) else { throw ScriptError("no class \(index)") }
            try call.push(classes[index - 1])
        },
        /// (handle, i) → item i (1-based) as [C, H, W] in [-1, 1], and its label or nil, for ds:get(i).
        Binding(name: "dataGet", tables: ["host"], tensorResults: 1) { call in
            try ScriptError.naming("get", handleFirst: true) {
                let dataset = try self.dataset(call)
                let index = try Self.integer(call, 2)
                guard (1...dataset.count).contains(index) else {
                    throw ScriptError(argument: 2, "index \(index) out of range 1..\(dataset.count)")
                }
                let (image, label) = try dataset.item(index - 1)
                try call.push(image)
                if let label { call.push(integer: label) } else { call.pushNil() }
            }
        },
        /// (handle, n, seed, step or nil, flip or nil) → images [n, C, H, W] in [-1, 1] and labels [n] or nil, for
        /// ds:batch(n, seed, step, {flip =}).
        Binding(name: "dataBatch", tables: ["host"], tensorResults: 2) { call in
            try ScriptError.naming("batch", handleFirst: true) {
                let dataset = try self.dataset(call)
                let size = try Self.integer(call, 2)
                let seed = UInt64(bitPattern: Int64(try Self.integer(call, 3)))
                let step = call.isNil(4) ? 0 : try Self.integer(call, 4)
                let flip = call.isNil(5) ? nil : call.boolean(5, default: false)
                let (images, labels) = try Self.translated(argumentOffset: 1) {
                    try dataset.batch(size: size, seed: seed, step: step, flip: flip)
                }
                try call.push(images)
                if let labels { try call.push(labels) } else { call.pushNil() }
            }
        },
        /// (handle): frees the dataset now (ds:close(), or `local ds <close> = ...`).
        Binding(name: "dataRelease", tables: ["host"], tensorResults: 0) { call in
            let handle = try call.integer(1)
            self.datasets[handle] = nil
            self.loading[handle] = nil
        },
    ] }

    private func keep(_ dataset: ImageDataset) -> Int {
        let handle = nextHandle
        nextHandle += 1
        datasets[handle] = dataset
        return handle
    }

    private func dataset(_ call: LuaCall) throws -> ImageDataset {
        guard let dataset = datasets[try call.integer(1)] else { throw ScriptError("the dataset is closed") }
        return dataset
    }

    /// Fashion-MNIST's `prefix` split (train, t10k): from `root`, as the script names it, or else from the system
    /// folder, whose host path no message shows (it reads `fashion-mnist/...`).
    private func fashionMNIST(prefix: String, root: String?, files: FileAccess) throws -> ImageDataset {
        guard let folder = root ?? fashionMNIST else {
            throw ScriptError("Fashion-MNIST is not installed: install Debian's dataset-fashion-mnist (setup.sh does), "
                + "or give root = a folder with its IDX files")
        }
        let shownFolder = root ?? "fashion-mnist"
        func locate(_ file: String) throws -> (path: String, name: String) {
            var refusal: Error?
            // gzip'd as Debian ships them, or unpacked.
            for candidate in [file + ".gz", file] {
                do {
                    let real = try files.resolveForReading(folder + "/" + candidate)
                    guard FileAccess.isRegularFile(real) else { throw ScriptError("cannot read '\(shownFolder)/\(candidate)': a folder, not a file") }
                    return (real, shownFolder + "/" + candidate)
                } catch {
                    refusal = refusal ?? error
                }
            }
            guard root == nil, let error = refusal as? ScriptError else { throw refusal! }
            throw ScriptError(error.message.replacingOccurrences(of: folder, with: shownFolder))
        }
        return try IDXFile.dataset(images: try locate("\(prefix)-images-idx3-ubyte"), labels: try locate("\(prefix)-labels-idx1-ubyte"),
                                   classes: Self.fashionMNISTClasses)
    }

    /// An integer argument in lauxlib's words (luaL_checkinteger): "number expected, got nil", "number has no integer
    /// representation".
    private static func integer(_ call: LuaCall, _ index: Int) throws -> Int {
        guard call.isNumber(index) else { throw ScriptError(argument: index, "number expected, got \(call.typeName(index))") }
        return try call.integer(index)
    }

    /// KiriData's errors as the script's: an argument numbered as the host gets it (`argumentOffset` more than the
    /// script's own numbers).
    @discardableResult
    private static func translated<T>(argumentOffset: Int = 0, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DataError {
            throw ScriptError(argument: error.argument.map { $0 + argumentOffset }, error.message)
        }
    }
}
