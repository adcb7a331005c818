import Foundation
import KiriTensor
import XCTest
@testable import KiriModels

/// Security cases 22–30 of ../shared/security-cases.md, one crafted file each, then files that must load.
final class SafetensorsTests: ModelFileTestCase {
    /// One header entry, as text.
    func tensorEntry(_ name: String, _ dtype: String, _ shape: String, _ offsets: String) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":\(offsets)}"
    }

    /// One F32 entry.
    func tensorEntry(_ name: String, _ shape: String, _ offsets: String) -> String { tensorEntry(name, "F32", shape, offsets) }

    // MARK: Case 22: too short; header length over the limit

    func testCase22FileShorterThanTheLengthPrefix() throws {
        for size in [0, 1, 7] {
            try assertRefused(Array(repeating: 0, count: size), ["file is \(size) bytes, shorter than the 8-byte header length"])
        }
    }

    func testCase22HeaderLengthOverTheLimitIsRefusedBeforeReading() throws {
        // The file is 10 bytes: the limit is checked before the length is compared with the file, let alone read.
        try assertRefused(safetensors("{}", length: 100_000_001), ["header length 100000001 exceeds the limit of 100000000 bytes"])
        // At the limit, the next check (past the end) is the one that fires.
        try assertRefused(safetensors("{}", length: 100_000_000), ["header length 100000000 runs past the end of the file (10 bytes)"])
    }

    // MARK: Case 23: 8 + length overflows or runs past the end

    func testCase23HeaderLengthOverflows() throws {
        try assertRefused(safetensors("{}", length: UInt64.max), ["header length 18446744073709551615 overflows"])
        try assertRefused(safetensors("{}", length: UInt64.max - 7 + 1), ["overflows"])
    }

    func testCase23HeaderRunsPastTheEnd() throws {
        try assertRefused(safetensors("{}", length: 3), ["header length 3 runs past the end of the file (10 bytes)"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[0,4]"))}", data: [0, 0, 0, 0], length: 500), ["runs past the end"])
    }

    // MARK: Case 24: not UTF-8, not JSON, not an object, unknown dtype

    func testCase24HeaderNotUTF8() throws {
        // A stray continuation byte, and an overlong encoding of '/'.
        try assertRefused(safetensors(header: Array("{\"w".utf8) + [0xFF] + Array("\":1}".utf8)), ["header is not valid UTF-8"])
        try assertRefused(safetensors(header: Array("{\"".utf8) + [0xC0, 0xAF] + Array("\":1}".utf8)), ["header is not valid UTF-8"])
    }

    func testCase24HeaderNotJSON() throws {
        for header in ["{\"w\": {\"dtype\": \"F32\",", "{'w': 1}", "{\"a\": 1,}", "{\"a\": NaN}", "{\"a\": 01}", "{} {}", ""] {
            try assertRefused(safetensors(header), ["header is not valid JSON"])
        }
        // Nesting beyond the parser's depth limit is an error, not a stack overflow.
        try assertRefused(safetensors("{\"a\":" + String(repeating: "[", count: 100_000)), ["nesting deeper than 128 levels"])
    }

    func testCase24HeaderNotAnObject() throws {
        try assertRefused(safetensors("[]"), ["header is an array, not a JSON object"])
        try assertRefused(safetensors("\"F32\""), ["header is a string, not a JSON object"])
        try assertRefused(safetensors("null"), ["header is null, not a JSON object"])
        try assertRefused(safetensors("{\"w\": [1, 2]}"), ["tensor 'w': entry is an array, not an object"])
    }

    func testCase24UnknownDType() throws {
        try assertRefused(safetensors("{\(tensorEntry("w", "Q7", "[1]", "[0,4]"))}", data: [0, 0, 0, 0]), ["tensor 'w': unknown dtype 'Q7'"])
        try assertRefused(safetensors("{\(tensorEntry("w", "f32", "[1]", "[0,4]"))}", data: [0, 0, 0, 0]), ["unknown dtype 'f32'"])
        try assertRefused(safetensors("{\(tensorEntry("w", "F8_E4M3", "[1]", "[0,1]"))}", data: [0]),
                          ["tensor 'w': dtype F8_E4M3 is not supported (Kiri reads F32, F16 and BF16)"])
        try assertRefused(safetensors("{\"w\":{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,4]}}", data: [0, 0, 0, 0]),
                          ["tensor 'w': dtype is a number, not a string"])
        try assertRefused(safetensors("{\"w\":{\"shape\":[],\"data_offsets\":[0,4]}}", data: [0, 0, 0, 0]), ["tensor 'w': missing 'dtype'"])
        try assertRefused(safetensors("{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", data: [0, 0, 0, 0]),
                          ["tensor 'w': unknown field 'x'"])
    }

    /// Integer buffers (a text encoder's int64 `position_ids`) are validated and kept out of the tensors a network
    /// reads; asking for one names its dtype.
    func testCase24IntegerBuffersAreSkipped() throws {
        let path = try write(safetensors("{\(tensorEntry("ids", "I64", "[2]", "[0,16]")),\(tensorEntry("w", "F32", "[1]", "[16,20]"))}",
                                         data: Array(repeating: 0, count: 20)))
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.names, ["w"])
        XCTAssertEqual(file.unreadTensors, ["ids": "I64"])
        XCTAssertNil(file.shape("ids"))
        XCTAssertThrowsError(try file.tensor("ids")) { error in
            XCTAssertEqual("\(error)", "\(path): tensor 'ids': dtype I64 is not supported (Kiri reads F32, F16, BF16 and GGUF's Q8_0)")
        }
        try assertRefused(safetensors("{\(tensorEntry("ids", "I64", "[2]", "[0,12]"))}", data: Array(repeating: 0, count: 12)),
                          ["tensor 'ids': shape [2] × I64 is 16 bytes but data_offsets [0, 12] span 12"])
    }

    // MARK: Case 25: duplicate tensor names

    func testCase25DuplicateTensorNames() throws {
        let header = "{\(tensorEntry("w", "[1]", "[0,4]")),\(tensorEntry("w", "[1]", "[4,8]"))}"
        try assertRefused(safetensors(header, data: Array(repeating: 0, count: 8)), ["duplicate tensor name 'w'"])
        // A key repeated inside an entry is refused too: which dtype would be meant?
        let inner = "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}"
        try assertRefused(safetensors(inner, data: [0, 0, 0, 0]), ["duplicate key 'dtype'"])
    }

    // MARK: Case 26: offsets out of bounds, overlapping, with gaps, begin > end

    func testCase26OffsetsOutOfBounds() throws {
        try assertRefused(safetensors("{\(tensorEntry("w", "[4]", "[0,16]"))}", data: Array(repeating: 0, count: 8)),
                          ["tensor 'w': data_offsets [0, 16] out of bounds (the data section is 8 bytes)"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[18446744073709551612,18446744073709551616]"))}", data: [0, 0, 0, 0]),
                          ["tensor 'w': data_offsets [18446744073709551612, 18446744073709551616] out of bounds"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[-4,0]"))}", data: [0, 0, 0, 0]), ["out of bounds"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[0]"))}", data: [0, 0, 0, 0]), ["data_offsets must be an array of two integers"])
    }

    func testCase26OffsetsOverlap() throws {
        let header = "{\(tensorEntry("a", "[2]", "[0,8]")),\(tensorEntry("b", "[2]", "[4,12]"))}"
        try assertRefused(safetensors(header, data: Array(repeating: 0, count: 12)),
                          ["tensor 'b' data_offsets [4, 12] overlap tensor 'a' [0, 8]"])
        // Two names for the same bytes are an overlap as well.
        let aliased = "{\(tensorEntry("a", "[1]", "[0,4]")),\(tensorEntry("b", "[1]", "[0,4]"))}"
        try assertRefused(safetensors(aliased, data: [0, 0, 0, 0]), ["overlap"])
    }

    func testCase26OffsetsLeaveAGap() throws {
        let header = "{\(tensorEntry("a", "[1]", "[0,4]")),\(tensorEntry("b", "[1]", "[8,12]"))}"
        try assertRefused(safetensors(header, data: Array(repeating: 0, count: 12)),
                          ["gap in the data section: bytes [4, 8) before tensor 'b' belong to no tensor"])
        try assertRefused(safetensors("{\(tensorEntry("a", "[1]", "[4,8]"))}", data: Array(repeating: 0, count: 8)), ["bytes [0, 4)"])
    }

    func testCase26BeginAfterEnd() throws {
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[8,4]"))}", data: Array(repeating: 0, count: 8)),
                          ["tensor 'w': data_offsets [8, 4] begin after they end"])
    }

    // MARK: Case 27: shape × dtype size against the span; overflow

    func testCase27ShapeDoesNotMatchTheSpan() throws {
        try assertRefused(safetensors("{\(tensorEntry("w", "[2,3]", "[0,20]"))}", data: Array(repeating: 0, count: 20)),
                          ["tensor 'w': shape [2, 3] × F32 is 24 bytes but data_offsets [0, 20] span 20"])
        try assertRefused(safetensors("{\(tensorEntry("h", "F16", "[4]", "[0,16]"))}", data: Array(repeating: 0, count: 16)),
                          ["tensor 'h': shape [4] × F16 is 8 bytes but data_offsets [0, 16] span 16"])
    }

    func testCase27SizeArithmeticOverflows() throws {
        let data: [UInt8] = [0, 0, 0, 0]
        try assertRefused(safetensors("{\(tensorEntry("w", "[4294967296,4294967296]", "[0,4]"))}", data: data),
                          ["tensor 'w': element count of shape [4294967296, 4294967296] overflows"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[2305843009213693952]", "[0,4]"))}", data: data),
                          ["tensor 'w': byte size of shape [2305843009213693952] × F32 overflows"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[99999999999999999999]", "[0,4]"))}", data: data),
                          ["tensor 'w': shape dimension 99999999999999999999 overflows"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[-1]", "[0,4]"))}", data: data), ["tensor 'w': shape has negative dimension -1"])
        try assertRefused(safetensors("{\(tensorEntry("w", "[1.5]", "[0,4]"))}", data: data), ["tensor 'w': shape has 1.5, not an integer"])
    }

    // MARK: Case 28: trailing bytes

    func testCase28TrailingBytesAfterTheLastTensor() throws {
        try assertRefused(safetensors("{\(tensorEntry("w", "[1]", "[0,4]"))}", data: Array(repeating: 0, count: 8)),
                          ["4 trailing bytes after the last tensor (the data section is 8 bytes, the tensors end at 4)"])
        try assertRefused(safetensors("{}", data: [1, 2, 3]), ["3 trailing bytes"])
    }

    // MARK: Case 29: whitespace padding, zero-size and rank-0 tensors

    func testCase29WhitespacePaddingZeroSizeAndRankZeroTensors() throws {
        // safetensors pads the header with spaces to a multiple of 8; any JSON whitespace is accepted.
        let header = "\n{ \(tensorEntry("scalar", "[]", "[0, 4]")) ,\t\(tensorEntry("empty", "[0,3]", "[4,4]")),"
            + "\(tensorEntry("none", "BF16", "[2,0]", "[0,0]")),\r\n \"__metadata__\" : {\"format\" : \"pt\"} }       "
        let path = try write(safetensors(header, data: bytes([2.5])))
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.names, ["scalar", "empty", "none"])
        XCTAssertEqual(file.metadata, ["format": "pt"])
        let scalar = try file.tensor("scalar")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(try scalar.item(), 2.5)
        XCTAssertEqual(try file.tensor("empty").shape, [0, 3])
        XCTAssertEqual(try file.tensor("empty").count, 0)
        XCTAssertEqual(try file.tensor("none").shape, [2, 0])
        XCTAssertEqual(file.info("empty"), SafetensorsFile.TensorInfo(dtype: .f32, shape: [0, 3], dataOffsets: 4..<4, count: 0))
        XCTAssertEqual(file.parameterCount, 1)
    }

    func testCase29EmptyHeaderAndNoData() throws {
        let file = try SafetensorsFile(path: try write(safetensors("{}")))
        XCTAssertEqual(file.names, [])
        XCTAssertNil(file.storageDType)
    }

    // MARK: Case 30: unaligned data

    func testCase30UnalignedOffsetsReadCorrectly() throws {
        // Header of odd length, so the data starts at an odd file offset, and every tensor at an odd address.
        var header = "{\(tensorEntry("a", "F16", "[1]", "[0,2]")),\(tensorEntry("b", "F32", "[2]", "[2,10]")),"
            + "\(tensorEntry("c", "BF16", "[1]", "[10,12]")),\(tensorEntry("d", "F32", "[1]", "[12,16]"))}"
        if header.utf8.count % 2 == 0 { header += " " }
        let data = bytes([UInt16(0x3C00)]) + bytes([-1.25, 3e-8]) + bytes([UInt16(0xC040)]) + bytes([Float.greatestFiniteMagnitude])
        let path = try write(safetensors(header, data: data))
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual((8 + header.utf8.count) % 2, 1)
        XCTAssertEqual(try file.tensor("a").values, [1])
        XCTAssertEqual(try file.tensor("b").values, [-1.25, 3e-8])
        XCTAssertEqual(try file.tensor("c").values, [-3])
        XCTAssertEqual(try file.tensor("d").values, [Float.greatestFiniteMagnitude])
    }

    // MARK: Files that load

    func testFloat32Float16AndBFloat16ConvertToKnownValues() throws {
        // F16: 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x7BFF = 65504. BF16: 0x3F80 = 1, 0x4049 = 3.140625.
        let header = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9 \\ud83d\\ude00\"},"
            + "\(tensorEntry("full", "F32", "[2]", "[0,8]")),\(tensorEntry("half", "F16", "[2,2]", "[8,16]")),\(tensorEntry("brain", "BF16", "[2]", "[16,20]"))}"
        let data = bytes([1.5, -2]) + bytes([0x3C00, 0xC000, 0x3555, 0x7BFF] as [UInt16]) + bytes([0x3F80, 0x4049] as [UInt16])
        let path = try write(safetensors(header, data: data))
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.names, ["full", "half", "brain"])
        XCTAssertEqual(file.metadata["note"], "café 😀")
        XCTAssertEqual(file.info("half")?.dtype, .f16)
        XCTAssertEqual(file.info("half")?.shape, [2, 2])
        XCTAssertEqual(try file.tensor("full").values, [1.5, -2])
        let half = try file.tensor("half")
        XCTAssertEqual(half.shape, [2, 2])
        XCTAssertEqual(half.values, [1, -2, 0.333251953125, 65504])
        XCTAssertEqual(try file.tensor("brain").values, [1, 3.140625])
        XCTAssertEqual(file.parameterCount, 8)
        // F16 holds 8 bytes, F32 8, BF16 4: the tie goes to the earlier case of DType.
        XCTAssertEqual(file.storageDType, .f32)
    }

    func testLargeTensorConvertsInChunksAcrossCores() throws {
        // Above the threshold where conversion is split between threads; every element must land in its place.
        let count = (1 << 18) + 3
        let halves = (0..<count).map { UInt16($0 * 7 % 0x7C00) }  // every finite non-negative half, in a scrambled order
        let path = try write(safetensors("{\(tensorEntry("w", "F16", "[\(count)]", "[0,\(2 * count)]"))}", data: bytes(halves)))
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.storageDType, .f16)
        let values = try file.tensor("w").values
        XCTAssertEqual(values.count, count)
        for index in [0, 1, 2047, 2048, count / 2 - 1, count / 2, count / 2 + 1, count - 1] {
            XCTAssertEqual(values[index], Float(Float16(bitPattern: halves[index])), "element \(index)")
        }
    }

    func testCloseUnmapsAndLaterReadsThrow() throws {
        let path = try write(safetensors("{\(tensorEntry("w", "[1]", "[0,4]"))}", data: bytes([7 as Float])))
        let file = try SafetensorsFile(path: path)
        let before = try file.tensor("w")
        XCTAssertFalse(file.isClosed)
        file.close()
        file.close()
        XCTAssertTrue(file.isClosed)
        XCTAssertEqual(before.values, [7], "converted tensors own their storage")
        assertModelFileError(path, ["file is closed; cannot read tensor 'w'"]) { try file.tensor("w") }
    }

    func testMetadataMustBeStrings() throws {
        try assertRefused(safetensors("{\"__metadata__\":{\"epoch\":3}}"), ["__metadata__ 'epoch' is a number, not a string"])
        try assertRefused(safetensors("{\"__metadata__\":[\"pt\"]}"), ["__metadata__ is an array, not an object of strings"])
    }

    func testTensorLargerThanTheTensorCoreAllowsIsAnErrorNamingIt() throws {
        // Rank 6 is valid safetensors, but Kiri's tensors stop at rank 5.
        let path = try write(safetensors("{\(tensorEntry("w", "[1,1,1,1,1,1]", "[0,4]"))}", data: bytes([1 as Float])))
        let file = try SafetensorsFile(path: path)
        assertModelFileError(path, ["tensor 'w': ", "rank 6 exceeds the maximum of 5"]) { try file.tensor("w") }
    }

    func testOnlyRegularFilesAreOpened() throws {
        // A FIFO would block a reader waiting for a writer; a folder or device has no safetensors in it.
        let fifo = (folder as NSString).appendingPathComponent("pipe.safetensors")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        assertModelFileError(fifo, ["not a regular file"]) { try SafetensorsFile(path: fifo) }
        assertModelFileError(folder, ["not a regular file"]) { try SafetensorsFile(path: folder) }
        assertModelFileError("/dev/zero", ["not a regular file"]) { try SafetensorsFile(path: "/dev/zero") }
    }

    func testRenamedPickleGetsAHint() throws {
        // torch.save writes a zip archive; its first bytes read as an absurd header length.
        try assertRefused([0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x08, 0x08, 0x00, 0x00],
                          ["exceeds the limit", "the file starts like a PyTorch pickle checkpoint"])
    }
}
