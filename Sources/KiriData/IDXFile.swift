import CZlib
import Foundation
import KiriTensor

/// LeCun's IDX files (the MNIST format, yann.lecun.com/exdb/mnist): the magic number 0x0000TTRR (two zero bytes, the
/// element type TT, the number of dimensions RR), RR big-endian 32-bit sizes, then the elements row-major. Kiri reads
/// unsigned bytes (type 0x08), gzip-compressed as Debian and the original site ship them, or plain (zlib's gzread
/// reads both). The file is untrusted: its sizes are checked, bounded and counted against the memory cap before
/// anything is allocated, only the bytes they declare are inflated, and a file shorter or longer than they say is
/// an error. Messages call the file by the name the caller gives.
public enum IDXFile {
    /// The most bytes one file may declare: 2 GiB, 45 times Fashion-MNIST's training images.
    public static let maxBytes = 1 << 31
    /// The longest side of an image.
    public static let maxSide = 1 << 16

    /// Images [items, rows, columns] from `images` and their labels [items] from `labels`, each label below
    /// `classes.count`.
    public static func dataset(images: (path: String, name: String), labels: (path: String, name: String),
                               classes: [String]) throws -> ImageDataset {
        let (sizes, pixels) = try read(path: images.path, name: images.name, rank: 3)
        let (labelSizes, labelBytes) = try read(path: labels.path, name: labels.name, rank: 1)
        guard labelSizes[0] == sizes[0] else {
            throw DataError("'\(labels.name)' has \(labelSizes[0]) labels for the \(sizes[0]) images of '\(images.name)'")
        }
        let values = try CountedBuffer<Int32>(count: sizes[0], what: "\(sizes[0]) labels")
        for item in 0..<sizes[0] {
            let label = labelBytes.pointer[item]
            guard Int(label) < classes.count else {
                throw DataError("'\(labels.name)': item \(item + 1) has label \(label), but the classes are 0 to \(classes.count - 1)")
            }
            values.pointer[item] = Int32(label)
        }
        return ImageDataset(count: sizes[0], channels: 1, height: sizes[1], width: sizes[2], classes: classes,
                            pixels: pixels, labels: values)
    }

    /// The sizes and elements of the unsigned-byte IDX file at `path`, which must have `rank` dimensions (1: items;
    /// 3: items, rows, columns).
    static func read(path: String, name: String, rank: Int) throws -> (sizes: [Int], bytes: CountedBuffer<UInt8>) {
        guard let file = gzopen(path, "rb") else {
            throw DataError("cannot read '\(name)': \(String(cString: strerror(errno)))")
        }
        defer { gzclose(file) }
        let expected = String(format: "0x%08X", 0x0800 | rank)
        var header = [UInt8](repeating: 0, count: 4 + 4 * rank)
        let headerRead = try header.withUnsafeMutableBytes { try read(file, $0.baseAddress!, 4, path: path) }
        if let problem = headerRead.problem { throw DataError("'\(name)': corrupt or truncated: \(problem)") }
        guard headerRead.count == 4 else { throw DataError("'\(name)': \(headerRead.count) bytes, too short for an IDX file") }
        let magic = header[0..<4].reduce(0) { $0 << 8 | Int($1) }
        guard header[0] == 0, header[1] == 0 else {
            throw DataError("'\(name)': not an IDX file (magic number \(String(format: "0x%08X", magic)), expected \(expected))")
        }
        guard header[2] == 0x08 else {
            throw DataError("'\(name)': elements of type \(String(format: "0x%02X", header[2])), but Kiri reads IDX files of "
                + "unsigned bytes (magic number \(expected))")
        }
        guard Int(header[3]) == rank else {
            throw DataError("'\(name)': \(header[3]) dimensions, expected \(rank) (magic number \(expected))")
        }
        let sizesRead = try header.withUnsafeMutableBytes { try read(file, $0.baseAddress! + 4, 4 * rank, path: path) }
        if let problem = sizesRead.problem { throw DataError("'\(name)': corrupt or truncated: \(problem)") }
        guard sizesRead.count == 4 * rank else {
            throw DataError("'\(name)': truncated in its header (\(4 + sizesRead.count) of \(4 + 4 * rank) bytes)")
        }
        let sizes = (0..<rank).map { dimension in header[(4 + 4 * dimension)..<(8 + 4 * dimension)].reduce(0) { $0 << 8 | Int($1) } }
        let described = sizes.map(String.init).joined(separator: "×")
        guard sizes[0] >= 1, sizes[0] <= ImageDataset.maxItems else {
            throw DataError("'\(name)': \(sizes[0]) items; a dataset has 1 to \(ImageDataset.maxItems)")
        }
        if rank == 3, let side = sizes[1...].first(where: { !(1...maxSide).contains($0) }) {
            throw DataError("'\(name)': images of \(sizes[1])×\(sizes[2]) pixels; a side of \(side) is outside 1 to \(maxSide)")
        }
        var total = 1
        for size in sizes {
            let (product, overflow) = total.multipliedReportingOverflow(by: size)
            guard !overflow, product <= maxBytes else {
                throw DataError("'\(name)': its header declares \(described) bytes, more than the \(describeBytes(maxBytes)) Kiri reads from an IDX file")
            }
            total = product
        }
        let bytes = try CountedBuffer<UInt8>(count: total, what: "'\(name)''s \(described) bytes")
        let dataRead = try read(file, bytes.pointer, total, path: path)
        guard dataRead.count == total else {
            throw DataError("'\(name)': " + (dataRead.problem.map { "corrupt or truncated: \($0), after" } ?? "truncated:")
                + " \(dataRead.count) of the \(total) bytes its header declares (\(described))")
        }
        // The declared bytes are all there: one more means the header lies; reading on also checks gzip's CRC.
        var extra: UInt8 = 0
        let after = try read(file, &extra, 1, path: path)
        if after.count > 0 {
            throw DataError("'\(name)': longer than its header declares (\(described) = \(total) bytes)")
        }
        if let problem = after.problem { throw DataError("'\(name)': corrupt or truncated: \(problem)") }
        return (sizes, bytes)
    }

    /// Reads up to `count` bytes, in pieces between which it checks the run's stop; fewer only at the end of the data,
    /// with zlib's reason when that end is an error (a truncated stream, a bad checksum, corrupt data).
    private static func read(_ file: gzFile, _ destination: UnsafeMutableRawPointer, _ count: Int,
                             path: String) throws -> (count: Int, problem: String?) {
        var done = 0
        while done < count {
            try Cancellation.current?.check()
            let piece = min(count - done, 1 << 20)
            let got = gzread(file, destination + done, UInt32(piece))
            if got > 0 { done += Int(got) }
            if got < piece {
                var code: Int32 = Z_OK
                // zlib puts the path it opened before its message: a host path no script may see (security case 39).
                guard let message = gzerror(file, &code).map({ String(cString: $0) }), code != Z_OK else { return (done, nil) }
                return (done, message.hasPrefix(path + ": ") ? String(message.dropFirst(path.count + 2)) : message)
            }
        }
        return (done, nil)
    }
}
