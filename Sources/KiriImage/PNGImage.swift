import PNGBridge

/// A failed image read, write or conversion. The message names the file at fault, e.g.
/// `'foo.png': not a PNG file`.
public struct ImageError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// Set when a read was refused because the decoded pixels (one byte per channel value) would pass the
    /// caller's byte limit: how many bytes they would have taken.
    public var pixelBytes: Int?

    public init(_ message: String, pixelBytes: Int? = nil) {
        self.message = message
        self.pixelBytes = pixelBytes
    }

    public var description: String { message }
}

/// An 8-bit image as a PNG holds it: `channels` interleaved bytes per pixel (1 grey, 2 grey+alpha, 3 RGB,
/// 4 RGBA), rows top to bottom, and its text chunks in file order.
public struct PNGImage: Sendable, Equatable {
    /// A tEXt, zTXt or iTXt chunk, as UTF-8.
    public struct TextChunk: Sendable, Equatable {
        public var key: String
        public var value: String

        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    /// The most text, keys and values in UTF-8, that `encoded()` writes. Kiri's own text (the recipe, its source
    /// and arguments, the A1111 parameters) takes kilobytes; 16 MiB leaves ample room, while bounding what a
    /// write copies and compresses (libpng holds a few copies of the text) and what a reader of Kiri's PNGs must
    /// allow to read them back.
    public static let maxTextBytes = 16 << 20

    public let width: Int
    public let height: Int
    public let channels: Int
    /// height × width × channels bytes.
    public let pixels: [UInt8]
    public var text: [TextChunk]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8], text: [TextChunk] = []) throws(ImageError) {
        guard (1...4).contains(channels) else {
            throw ImageError("an image has 1 to 4 channels (grey, grey+alpha, RGB, RGBA), got \(channels)")
        }
        let (area, overflow) = width.multipliedReportingOverflow(by: height)
        guard width >= 0, height >= 0, !overflow, area.multipliedReportingOverflow(by: channels) == (pixels.count, false) else {
            throw ImageError("\(pixels.count) bytes do not fill a \(width)x\(height) image with \(channels) channels")
        }
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
        self.text = text
    }

    /// Decodes the PNG at `path` to 8-bit channels. Palette images become RGB, tRNS an alpha channel, 16-bit
    /// channels are scaled (libpng's png_set_scale_16: round(v × 255 / 65535)). The text chunks (as `readText`
    /// reads them) and the pixels share `byteLimit`: refuses text past it as it is read, then, before decoding,
    /// images over 65536 pixels a side or whose pixels would take more than the text leaves. Messages call the
    /// file `name` (by default `path`).
    public static func read(path: String, byteLimit: Int = 1 << 30, name: String? = nil) throws(ImageError) -> PNGImage {
        let name = name ?? path
        var error = [CChar](repeating: 0, count: 512)
        var header = KiriPNGHeader()
        var opened: OpaquePointer?
        let status = kiri_png_open(path, name, max(0, byteLimit), &opened, &header, &error, error.count)
        guard status == KIRI_PNG_OK, let reader = opened else {
            throw ImageError(message(error), pixelBytes: status == KIRI_PNG_TOO_LARGE ? header.byteCount : nil)
        }
        defer { kiri_png_close(reader) }
        var chunks: UnsafePointer<KiriPNGText>?
        var chunkCount = 0
        var decoded = KIRI_PNG_ERROR
        let pixels = [UInt8](unsafeUninitializedCapacity: header.byteCount) { buffer, initialized in
            decoded = kiri_png_decode(reader, buffer.baseAddress, buffer.count, &chunks, &chunkCount, &error, error.count)
            initialized = decoded == KIRI_PNG_OK ? header.byteCount : 0
        }
        guard decoded == KIRI_PNG_OK else { throw ImageError(message(error)) }
        return try PNGImage(width: Int(header.width), height: Int(header.height), channels: Int(header.channels),
                            pixels: pixels, text: textChunks(chunks, chunkCount))
    }

    /// The text chunks (tEXt, zTXt and iTXt, compressed or not) of the PNG at `path`, without decoding its image:
    /// `kiri run --from` needs only these. Takes time in proportion to the file's size, holds no more than
    /// `byteLimit` bytes of text at once (as read and as inflated), and never allocates for a chunk longer than
    /// what is left of the file. Checks CRCs as libpng does (a bad one drops a text chunk, fails on a critical
    /// chunk) and stops at IEND. Messages call the file `name` (by default `path`).
    public static func readText(path: String, byteLimit: Int, name: String? = nil) throws(ImageError) -> [TextChunk] {
        var error = [CChar](repeating: 0, count: 512)
        var list: OpaquePointer?
        var chunks: UnsafePointer<KiriPNGText>?
        var chunkCount = 0
        guard kiri_png_read_text(path, name ?? path, max(0, byteLimit), &list, &chunks, &chunkCount, &error,
                                 error.count) == KIRI_PNG_OK else {
            throw ImageError(message(error))
        }
        defer { kiri_png_free_text(list) }
        return textChunks(chunks, chunkCount)
    }

    /// The image and its text chunks as a PNG file's bytes, so a caller can count them before writing them where
    /// it wants. Refuses more than `maxTextBytes` of text, keys that are not PNG keywords (see
    /// `TextChunk.validate`), and sides outside 1 to 65536 pixels.
    public func encoded() throws(ImageError) -> [UInt8] {
        try Self.checkTextTotal(text)
        guard (1...Int(KIRI_PNG_MAX_SIDE)).contains(width), (1...Int(KIRI_PNG_MAX_SIDE)).contains(height) else {
            throw ImageError("cannot write a \(width)x\(height) image (each side must be 1 to \(KIRI_PNG_MAX_SIDE) pixels)")
        }
        var error = [CChar](repeating: 0, count: 512)
        var bytes: UnsafeMutablePointer<UInt8>?
        var size = 0
        let status = TextChunk.withC(text) { chunks in
            kiri_png_encode(pixels, UInt32(width), UInt32(height), Int32(channels), chunks.baseAddress, chunks.count,
                            &bytes, &size, &error, error.count)
        }
        guard status == KIRI_PNG_OK else { throw ImageError(Self.message(error)) }
        defer { kiri_png_free(bytes) }
        return Array(UnsafeBufferPointer(start: bytes, count: size))
    }

    /// Throws, naming the key that crosses it, if the text's keys and values take more than `maxTextBytes` in UTF-8.
    public static func checkTextTotal(_ text: [TextChunk]) throws(ImageError) {
        var total = 0
        for chunk in text {
            total += chunk.key.utf8.count + chunk.value.utf8.count
            if total > maxTextBytes {
                throw ImageError("text key '\(chunk.key)' brings the text to \(total) bytes, over the \(maxTextBytes >> 20) MiB "
                    + "(\(maxTextBytes) bytes) a written PNG may carry")
            }
        }
    }

    fileprivate static func message(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func textChunks(_ chunks: UnsafePointer<KiriPNGText>?, _ count: Int) -> [TextChunk] {
        UnsafeBufferPointer(start: chunks, count: count).map { chunk in
            TextChunk(key: string(chunk.key, chunk.keyLength), value: string(chunk.value, chunk.valueLength))
        }
    }

    private static func string(_ bytes: UnsafePointer<CChar>?, _ count: Int) -> String {
        guard let bytes, count > 0 else { return "" }
        return bytes.withMemoryRebound(to: UInt8.self, capacity: count) {
            String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self)
        }
    }
}

extension PNGImage.TextChunk {
    /// Throws unless the chunk can be written: the key must be a PNG keyword (1 to 79 printable Latin-1
    /// characters, without leading, trailing or double spaces) and the value must hold no NUL byte.
    public func validate() throws(ImageError) {
        var error = [CChar](repeating: 0, count: 256)
        let problem = Self.withC([self]) { kiri_png_text_problem($0.baseAddress, &error, error.count) }
        if problem != 0 { throw ImageError(PNGImage.message(error)) }
    }

    /// The chunks as C sees them: pointers into one block of their UTF-8, valid during `body`.
    fileprivate static func withC<Result>(_ chunks: [Self], _ body: (UnsafeBufferPointer<KiriPNGText>) -> Result) -> Result {
        var bytes: [UInt8] = []
        for chunk in chunks {
            bytes += chunk.key.utf8
            bytes += chunk.value.utf8
        }
        bytes.append(0)     // keeps the block's address non-nil when every string is empty
        return bytes.withUnsafeBufferPointer { block in
            let base = UnsafeRawPointer(block.baseAddress!).assumingMemoryBound(to: CChar.self)
            var offset = 0
            let described = chunks.map { chunk in
                let keyLength = chunk.key.utf8.count, valueLength = chunk.value.utf8.count
                defer { offset += keyLength + valueLength }
                return KiriPNGText(key: base + offset, keyLength: keyLength, value: base + offset + keyLength,
                                   valueLength: valueLength)
            }
            return described.withUnsafeBufferPointer(body)
        }
    }
}
