import Foundation
import KiriImage
import KiriTensor

/// A folder of PNG files read as a dataset, torchvision's ImageFolder layout: either images directly in the folder
/// (no labels), or images in subfolders whose names, sorted, are the classes (label 0 first). Hidden entries and
/// files not named `.png` are skipped; class folders are read one level deep. Every image is converted to `channels`
/// (grey or RGB, alpha dropped) and must have the dataset's size: the first image's, or the one asked for. Images of
/// another size are left for the caller to resize (`nextGroup`, `store`: the engine uses kiri.post.resize), grouped
/// by their size. Messages name files by the folder's name as the caller gave it.
public final class ImageFolder {
    /// Class names, label 0 first, or nil when the images lie directly in the folder.
    public let classes: [String]?
    public let channels: Int
    public let height: Int
    public let width: Int
    private let files: [(path: String, name: String, label: Int?)]
    private let pixels: CountedBuffer<UInt8>
    private let labels: CountedBuffer<Int32>?
    /// Items of another size, by that size: what `nextGroup` hands out.
    private var pending: [(item: Int, height: Int, width: Int)] = []
    /// The items of the group handed out and not yet stored.
    private var handedOut: [Int] = []

    /// Reads the folder `path` (a real path), which the script calls `name`. `channels` 1 or 3 converts every image
    /// (nil: as the first image, grey or colour, and all must agree); `size` (height, width) is the size every image
    /// gets (nil: the first image's, and all must have it). `resolve` turns a path as the script would name it into
    /// the real path the run may read, or throws (the sandbox's FileAccess).
    public init(path: String, name: String, channels: Int?, size: (height: Int, width: Int)?,
                resolve: (String) throws -> String) throws {
        precondition(channels == nil || channels == 1 || channels == 3)
        let shownFolder = name.count > 1 && name.hasSuffix("/") ? String(name.dropLast()) : name
        var images: [(path: String, name: String, label: Int?)] = []
        var classNames: [String] = []
        for entry in try Self.entries(path, shownFolder) {
            if entry.isFolder {
                let classFolder = try resolve(entry.name)
                let label = classNames.count
                let inside = try Self.entries(classFolder, entry.name).filter { !$0.isFolder }
                guard !inside.isEmpty else {
                    throw DataError("the class folder '\(entry.name)' has no PNG images")
                }
                for file in inside { images.append((try resolve(file.name), file.name, label)) }
                classNames.append(entry.entry)
            } else {
                images.append((try resolve(entry.name), entry.name, nil))
            }
            guard images.count <= ImageDataset.maxItems else {
                throw DataError("'\(shownFolder)' has more than \(ImageDataset.maxItems) images")
            }
        }
        guard !images.isEmpty else {
            throw DataError("'\(shownFolder)' has no PNG images (directly inside it, or in class subfolders)")
        }
        if !classNames.isEmpty, let loose = images.first(where: { $0.label == nil }) {
            throw DataError("'\(shownFolder)' has both class subfolders and images outside them ('\(loose.name)'): "
                + "put every image in a class folder, or none")
        }
        files = images
        classes = classNames.isEmpty ? nil : classNames

        let first = try Self.decode(images[0].path, images[0].name)
        let firstIsGrey = first.channels <= 2
        self.channels = channels ?? (firstIsGrey ? 1 : 3)
        (height, width) = size ?? (first.height, first.width)
        let itemBytes = self.channels * height * width
        let (total, overflow) = itemBytes.multipliedReportingOverflow(by: images.count)
        guard !overflow else { throw DataError("'\(shownFolder)': \(images.count) images of \(height)×\(width) pixels are too many bytes") }
        pixels = try CountedBuffer<UInt8>(count: total, what: "\(images.count) images of \(self.channels)×\(height)×\(width) bytes")
        labels = try classes.map { _ in try CountedBuffer<Int32>(count: images.count, what: "\(images.count) labels") }
        for (item, file) in images.enumerated() {
            try Cancellation.current?.check()
            let image = try item == 0 ? first : Self.decode(file.path, file.name)
            if channels == nil, (image.channels <= 2) != firstIsGrey {
                throw DataError("'\(file.name)' is \(Self.kind(image)) but '\(images[0].name)' is \(Self.kind(first)): "
                    + "give channels = 1 or 3 to convert them")
            }
            labels?.pointer[item] = Int32(file.label ?? 0)
            if image.height == height, image.width == width {
                Self.planar(image, channels: self.channels, into: pixels.pointer + item * itemBytes)
            } else if size != nil {
                pending.append((item, image.height, image.width))
            } else {
                throw DataError("'\(file.name)' is \(image.width)×\(image.height) but '\(images[0].name)' is \(width)×\(height): "
                    + "give size = N or {height, width} to resize them")
            }
        }
        pending.sort { ($0.height, $0.width, $0.item) < ($1.height, $1.width, $1.item) }
    }

    /// The next images of one size waiting to be resized, as [N, C, h, w] in [0, 1]: as many as fit in `floats`
    /// values, at least one. Nil when none are left. `store` takes them back resized.
    public func nextGroup(floats: Int = 16 << 20) throws -> Tensor? {
        precondition(handedOut.isEmpty, "ImageFolder: store the group handed out first")
        guard let first = pending.first else { return nil }
        let itemBytes = channels * first.height * first.width
        let group = pending.prefix { $0.height == first.height && $0.width == first.width }.prefix(max(1, floats / itemBytes))
        pending.removeFirst(group.count)
        let tensor = try Tensor(shape: [group.count, channels, first.height, first.width])
        let bytes = try CountedBuffer<UInt8>(count: itemBytes, what: "an image of \(channels)×\(first.height)×\(first.width) bytes")
        for (slot, entry) in group.enumerated() {
            try Cancellation.current?.check()
            let file = files[entry.item]
            let image = try Self.decode(file.path, file.name)
            guard image.height == first.height, image.width == first.width else {
                throw DataError("'\(file.name)' changed while it was read")
            }
            Self.planar(image, channels: channels, into: bytes.pointer)
            let output = tensor.data + slot * itemBytes
            for i in 0..<itemBytes { output[i] = Float(bytes.pointer[i]) / 255 }
        }
        handedOut = group.map(\.item)
        return tensor
    }

    /// The group `nextGroup` handed out, resized to [N, C, height, width] in [0, 1]: stored as bytes as PNGImage
    /// writes them (x × 255 + 0.5, clamped, truncated; NaN to 0). `resizer` names what resized them, for the error
    /// when the shape is not that.
    public func store(_ resized: Tensor, resizer: String) throws {
        let expected = [handedOut.count, channels, height, width]
        guard resized.shape == expected, !resized.isReleased else {
            throw DataError("\(resizer) returned shape \(shapeString(resized.shape)) for the images of '\(files[handedOut.first ?? 0].name)' "
                + "and others of its size, expected \(shapeString(expected))")
        }
        let itemBytes = channels * height * width
        for (slot, item) in handedOut.enumerated() {
            let input = resized.data + slot * itemBytes, output = pixels.pointer + item * itemBytes
            for i in 0..<itemBytes {
                let scaled = input[i] * 255 + 0.5
                output[i] = scaled.isNaN ? 0 : UInt8(min(max(scaled, 0), 255))
            }
        }
        handedOut = []
    }

    /// The dataset, once every image has its size.
    public func dataset(flip: Bool = false) -> ImageDataset {
        precondition(pending.isEmpty && handedOut.isEmpty, "ImageFolder: images are waiting to be resized")
        return ImageDataset(count: files.count, channels: channels, height: height, width: width, classes: classes,
                            pixels: pixels, labels: labels, flip: flip)
    }

    // MARK: - Files

    /// The folder's PNG files and subfolders, sorted by name: the entry's name, its path as the script would name it
    /// (`shown`/entry), and whether it is a folder.
    private static func entries(_ path: String, _ shown: String) throws -> [(entry: String, name: String, isFolder: Bool)] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw DataError("cannot read the folder '\(shown)': \((error as NSError).localizedDescription)")
        }
        return names.sorted().compactMap { entry in
            guard !entry.hasPrefix(".") else { return nil }
            var status = stat()
            guard stat(path + "/" + entry, &status) == 0 else { return nil }
            let isFolder = status.st_mode & S_IFMT == S_IFDIR
            guard isFolder || entry.lowercased().hasSuffix(".png") else { return nil }
            return (entry, (shown == "/" ? "" : shown) + "/" + entry, isFolder)
        }
    }

    /// The PNG at `path`, refused from its header when its pixels would pass what is left of the memory cap.
    private static func decode(_ path: String, _ name: String) throws -> PNGImage {
        let budget = MemoryBudget.current
        let left = budget.map { max(0, $0.limit - $0.used) } ?? (1 << 30)
        do throws(ImageError) {
            return try PNGImage.read(path: path, byteLimit: left, name: name)
        } catch {
            guard let bytes = error.pixelBytes else { throw DataError(error.message) }
            throw DataError("cannot load '\(name)': its pixels take \(describeBytes(bytes)), but the run has "
                + "\(describeBytes(left)) left of its \(describeBytes(budget?.limit ?? 0)) memory cap (--memory)")
        }
    }

    private static func kind(_ image: PNGImage) -> String {
        ["grey", "grey with alpha", "RGB", "RGBA"][image.channels - 1]
    }

    /// The image's first `channels` colour channels as planes [C, H, W], alpha dropped: grey repeated for RGB, RGB
    /// made grey by Rec. 601 luma in Pillow's fixed point (Convert.c, L24: (19595 R + 38470 G + 7471 B + 0x8000) >> 16,
    /// as convert("L")).
    static func planar(_ image: PNGImage, channels: Int, into output: UnsafeMutablePointer<UInt8>) {
        let plane = image.height * image.width, step = image.channels
        image.pixels.withUnsafeBufferPointer { pixels in
            if image.channels <= 2 {
                for pixel in 0..<plane { output[pixel] = pixels[pixel * step] }
                for channel in 1..<channels { (output + channel * plane).update(from: output, count: plane) }
            } else if channels == 3 {
                for pixel in 0..<plane {
                    for channel in 0..<3 { output[channel * plane + pixel] = pixels[pixel * step + channel] }
                }
            } else {
                for pixel in 0..<plane {
                    let rgb = (UInt32(pixels[pixel * step]), UInt32(pixels[pixel * step + 1]), UInt32(pixels[pixel * step + 2]))
                    output[pixel] = UInt8((rgb.0 * 19595 + rgb.1 * 38470 + rgb.2 * 7471 + 0x8000) >> 16)
                }
            }
        }
    }
}
