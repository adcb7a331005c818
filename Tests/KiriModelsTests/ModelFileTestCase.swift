import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// Base for tests that write model files: a fresh temporary folder per test, a byte-level safetensors writer, and
/// an assertion that an error is a `ModelFileError` naming the file and saying what it should.
class ModelFileTestCase: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-models-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Writes `bytes` to `name` (folders created as needed) and returns the path.
    @discardableResult
    func write(_ bytes: [UInt8], _ name: String = "model.safetensors") throws -> String {
        let path = (folder as NSString).appendingPathComponent(name)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @discardableResult
    func write(_ text: String, _ name: String) throws -> String { try write(Array(text.utf8), name) }

    /// A safetensors file: the 8-byte little-endian length (`length`, or the header's real length), the header
    /// bytes, then `data`.
    func safetensors(header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
        littleEndian(length ?? UInt64(header.count)) + header + data
    }

    func safetensors(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
        safetensors(header: Array(header.utf8), data: data, length: length)
    }

    func littleEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    func bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * $0)) } }
    }

    func bytes(_ values: [UInt16]) -> [UInt8] { values.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)] } }

    /// Runs `body`, which must throw a ModelFileError whose path is `path` and whose message contains every one of
    /// `fragments`; returns the message so a test can print or check more.
    @discardableResult
    func assertModelFileError<T>(_ path: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                                 _ body: () throws -> T) -> String {
        do {
            _ = try body()
            XCTFail("no error; expected one containing \(fragments)", file: file, line: line)
            return ""
        } catch let error as ModelFileError {
            XCTAssertEqual(error.path, path, "error names the wrong file: \(error)", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(path + ": "), "\(error)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", file: file, line: line)
            }
            return error.message
        } catch {
            XCTFail("expected a ModelFileError, got \(type(of: error)): \(error)", file: file, line: line)
            return ""
        }
    }

    /// `tensors` as an F32 safetensors file with `metadata` in its header, written to a new file.
    func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws -> String {
        var header: [String] = [], data: [UInt8] = []
        if !metadata.isEmpty {
            let encoded = try JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys])
            header.append("\"__metadata__\": " + String(decoding: encoded, as: UTF8.self))
        }
        for (key, tensor) in tensors {
            let begin = data.count
            data += bytes(Array(UnsafeBufferPointer(start: tensor.data, count: tensor.count)))
            header.append("\"\(key)\": {\"dtype\": \"F32\", \"shape\": \(tensor.shape), \"data_offsets\": [\(begin), \(data.count)]}")
        }
        return try write(safetensors("{" + header.joined(separator: ", ") + "}", data: data), "rewritten-\(UUID().uuidString).safetensors")
    }

    /// Every tensor of `path` as float32, replaced by what `transform` returns for it, written to a new file with
    /// the same metadata.
    func rewrite(_ path: String, _ transform: (String, Tensor) throws -> [(String, Tensor)]) throws -> String {
        let file = try SafetensorsFile(path: path)
        var tensors: [(String, Tensor)] = []
        for name in file.names { tensors += try transform(name, try file.tensor(name)) }
        return try write(tensors, metadata: file.metadata)
    }

    /// Opens `bytes` as a safetensors file and asserts the error.
    @discardableResult
    func assertRefused(_ bytes: [UInt8], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = try write(bytes)
        return assertModelFileError(path, fragments, file: file, line: line) { try SafetensorsFile(path: path) }
    }
}
