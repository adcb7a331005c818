import Foundation
import KiriImage
import KiriLua
import KiriTensor

/// `kiri.image`: PNG files as [C, H, W] tensors in [0, 1], and their text chunks as tables. Paths go through
/// FileAccess like every other file: loads from the folders the run may read, saves under the output folder.
public final class ImageLibrary: LuaLibrary {
    /// Text chunks `kiri.image.save` adds to every PNG after the script's own (whose keys win): provenance.
    let imageText: [(key: String, value: String)]

    public init(imageText: [(key: String, value: String)] = []) { self.imageText = imageText }

    public let prelude: [UInt8]? = nil

    public func close() {}

    public var bindings: [Binding] { [
        /// () → the engine's version, which the PNGs it writes record (A1111's "Version").
        Binding(name: "version", tables: ["kiri"], tensorResults: 0) { call in
            try call.push(KiriVersion.string)
        },
        /// (path) → the image as a [C, H, W] tensor (C: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and its text chunks
        /// as {key = value}.
        Binding(name: "load", tables: ["kiri.image"], tensorResults: 1) { call in
            let path = try call.string(1)
            let runtime = call.runtime
            let real = try runtime.files.resolveForReading(path)
            // Each channel value takes a byte while decoding and four in the tensor: an image too large for
            // what is left of the memory cap is refused from its header, before anything is allocated.
            let left = max(0, runtime.budget.limit - runtime.budget.used)
            let image: PNGImage
            do throws(ImageError) {
                image = try PNGImage.read(path: real, byteLimit: left / 5, name: path)
            } catch {
                guard let values = error.pixelBytes else { throw ScriptError(error.message) }
                throw ScriptError("cannot load '\(path)': its \(values) channel values take \(describeBytes(values * 5)) "
                    + "(as bytes, then float32), but the run has \(describeBytes(left)) left of its "
                    + "\(describeBytes(runtime.budget.limit)) memory cap (--memory)")
            }
            try call.push(image.tensor())
            try call.push(strings: image.text.map { ($0.key, $0.value) })
        },
        /// (path, image, text): writes a [C, H, W] or [1, C, H, W] tensor in [0, 1] as an 8-bit PNG under the
        /// output folder, with the text chunks `text` (string keys and values) and then the run's `imageText`
        /// for keys `text` does not have. Returns the file's path as the user knows it (with the output folder):
        /// the next free name when `path` exists and the run may not overwrite (FileAccess.write).
        Binding(name: "save", tables: ["kiri.image"], tensorResults: 0) { call in
            let path = try call.string(1)
            let tensor = try call.tensor(2)
            // Sorted, so the same table always writes the same file.
            let given = call.isNil(3) ? [] : try call.stringTable(3).sorted { $0.key < $1.key }
            var text = try given.map { key, value in
                let chunk = PNGImage.TextChunk(key: key, value: value)
                do throws(ImageError) { try chunk.validate() } catch { throw ScriptError(argument: 3, error.message) }
                return chunk
            }
            let runtime = call.runtime
            let keys = Set(given.map(\.key))
            text += self.imageText.filter { !keys.contains($0.key) }.map { PNGImage.TextChunk(key: $0.key, value: $0.value) }
            if !runtime.loadedPlugins.isEmpty, !keys.contains(RecipeProvenance.pluginsKey) {
                text.append(PNGImage.TextChunk(key: RecipeProvenance.pluginsKey, value: RecipeProvenance.pluginText(runtime.loadedPlugins)))
            }
            let encoded: [UInt8]
            do throws(ImageError) {
                try PNGImage.checkTextTotal(text)
            } catch {
                throw ScriptError(argument: 3, error.message)
            }
            do throws(ImageError) {
                encoded = try PNGImage(tensor: tensor, text: text).encoded()
            } catch {
                throw ScriptError(argument: 2, error.message)
            }
            // The file's bytes are held while written: they count against the memory cap, then the disk cap.
            guard runtime.budget.reserve(encoded.count) else {
                throw ScriptError("not enough memory to write '\(path)' (\(describeBytes(encoded.count)); --memory)")
            }
            defer { runtime.budget.release(encoded.count) }
            guard path.lowercased().hasSuffix(".png") else {
                throw ScriptError(argument: 1, "Kiri writes PNG files: give a name ending in .png, got '\(path)'")
            }
            let written = try runtime.files.write(encoded, to: path, disk: runtime.disk)
            try call.push(runtime.files.shownPath(written))
        },
    ] }
}
