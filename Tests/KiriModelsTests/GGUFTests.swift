import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// GGUF files as stable-diffusion.cpp users have them: its own conversion of the tiny SD 1.x checkpoint reads as
/// that checkpoint, tensor by tensor, and makes its image; the header cases of Tests/Fixtures/fuzz/gguf (written by
/// make_corpus.py, and read back by ggml's gguf-py there) give the values or errors they should.
final class GGUFTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fuzz/gguf").path

    func open(_ name: String) throws -> SafetensorsFile { try SafetensorsFile(path: "\(Self.corpus)/\(name).gguf") }

    /// Every tensor of sd.cpp's `convert --type q8_0` output against the checkpoint it came from (sd.cpp leaves out
    /// the scheduler's buffers, which no network reads): F16 and F32 ones equal, Q8_0 ones equal to the checkpoint's
    /// values quantised as ggml's quantize_row_q8_0_ref does (Kiri's `weights=q8_0`, tested against that reference
    /// in WeightFormatTests), shapes as torch has them.
    func testStableDiffusionCppConversionReadsAsTheCheckpoint() throws {
        let gguf = try SafetensorsFile(path: "\(SingleFileTests.fixtures)/sd1_q8_0.gguf")
        let checkpoint = try SafetensorsFile(path: "\(SingleFileTests.fixtures)/sd1.safetensors")
        var counts: [DType: Int] = [:]
        for name in gguf.names where checkpoint.info(name) != nil {
            let info = try XCTUnwrap(gguf.info(name))
            XCTAssertEqual(info.shape, checkpoint.shape(name), name)
            let original = try checkpoint.tensor(name)
            var expected = original.values
            if info.dtype == .q8_0 {
                // Blocks run along the rows; a 1-D weight (a layer norm's) is one row.
                let rows = original.shape.count > 1 ? original.shape[0] : 1
                let matrix = try WeightMatrix(original.data, rows: rows, columns: original.count / rows, format: .q8_0)
                XCTAssertEqual(matrix.format, .q8_0, name)
                expected = try matrix.tensor().values
            }
            XCTAssertEqual(try gguf.tensor(name).values, expected, "\(name) (\(info.dtype.rawValue))")
            counts[info.dtype, default: 0] += 1
        }
        print("sd1_q8_0.gguf: \(counts.map { "\($0.value) \($0.key.rawValue)" }.sorted().joined(separator: ", ")) tensors match the checkpoint")
        XCTAssertGreaterThan(counts[.q8_0] ?? 0, 100)
        XCTAssertGreaterThan(counts[.f16] ?? 0, 100)
    }

    /// The GGUF file loads as a pipeline (by its checkpoint keys) and its image is the checkpoint's within q8_0's
    /// rounding (half a step of each block's scale per weight, layer norms included, through three steps and the
    /// decoder of a random-weight model).
    func testPipelineFromGGUF() throws {
        let tokenizer = URL(fileURLWithPath: SingleFileTests.fixtures).deletingLastPathComponent().appendingPathComponent("tokenizer/small").path
        func image(_ path: String) throws -> (values: [Float], parameters: Int) {
            let pipeline = try DiffusionPipeline(files: PipelineFiles.locate(path)) { _ in try CLIPTokenizer(folder: tokenizer) }
            XCTAssertEqual(pipeline.family?.rawValue, "sd1")
            let context = try pipeline.textEncoder!.forward([[0, 5, 9, 2] + Array(repeating: 1, count: 12)]).hiddenStates
            let x = try Tensor.randn([1, 4, 8, 8], seed: 7)
            for (t, step) in [(900, -0.5), (500, -0.3), (100, -0.1)] as [(Float, Float)] {
                let eps = try pipeline.unet.forward(x, timesteps: [t], context: context)
                for i in 0..<x.count { x.data[i] += step * eps.data[i] }
            }
            return (try pipeline.vae!.decode(x).values, pipeline.unet.parameterCount)
        }
        let fromGGUF = try image("\(SingleFileTests.fixtures)/sd1_q8_0.gguf")
        let fromCheckpoint = try image("\(SingleFileTests.fixtures)/sd1.safetensors")
        XCTAssertEqual(fromGGUF.parameters, fromCheckpoint.parameters)
        let error = relativeError(fromGGUF.values, fromCheckpoint.values)
        print("image from sd1_q8_0.gguf against sd1.safetensors: max |Δ| / max |reference| = \(error)")
        XCTAssertGreaterThan(error, 0, "Q8_0 weights should change the image a little")
        XCTAssertLessThanOrEqual(error, 5e-2)
    }

    func testValidFilesReadAsGGUFPyReadsThem() throws {
        for name in ["valid", "alignment_64", "version_2"] {
            let file = try open(name)
            XCTAssertEqual(file.names, ["w", "h", "b", "q"], name)
            XCTAssertEqual(file.shape("w"), [2, 2])
            XCTAssertEqual(file.shape("b"), [2, 1], "dimensions are innermost first in the file")
            XCTAssertEqual(file.shape("q"), [2, 32])
            XCTAssertEqual(try file.tensor("w").values, [1, 2, 3, 4], name)
            XCTAssertEqual(try file.tensor("h").values, [1, -2, 0.5], name)
            XCTAssertEqual(try file.tensor("b").values, [1, -2], name)
            XCTAssertEqual(try file.tensor("q").values, (0..<64).map { Float($0 % 32 - 16) * 0.5 }, name)
        }
        let metadata = try open("valid").metadata
        XCTAssertEqual(metadata["general.name"], "tiny")
        XCTAssertEqual(["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "u64", "i64", "f64", "tokens"].map { metadata[$0] },
                       ["7", "-7", "7", "-7", "7", "-7", "0.5", "true", "7", "-7", "0.25", "(array)"])
        let other = try open("other_quantisation")
        XCTAssertEqual(other.unreadTensors, ["k": "Q4_K"])
        XCTAssertThrowsError(try other.tensor("k")) { XCTAssertTrue("\($0)".contains("dtype Q4_K is not supported"), "\($0)") }
    }

    /// One case per check of the header: each is refused with an error naming the file and what is wrong.
    func testMalformedHeadersAreRefused() throws {
        let cases = [
            "bad_version": "GGUF version 1 is not supported", "truncated": "the file ends inside the header (40 bytes)",
            "tensor_count_huge": "1099511627776 tensors cannot fit", "string_past_end": "bytes of string cannot fit",
            "duplicate_key": "duplicate metadata key 'u8'", "duplicate_name": "duplicate tensor name 'w'",
            "nested_array": "an array holds arrays", "bad_alignment": "general.alignment must be a u32 power of two",
            "five_dimensions": "5 dimensions (GGUF allows 1 to 4)", "q8_0_partial_row": "rows of 16 elements are not whole Q8_0 blocks",
            "misaligned_offset": "offset 4 is not a multiple of the alignment 32", "past_end": "run past the",
            "overlap": "overlaps tensor", "unknown_type": "unknown ggml type 99",
        ]
        for (name, expected) in cases.sorted(by: { $0.key < $1.key }) {
            XCTAssertThrowsError(try open(name), name) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(name): \(error)")
                XCTAssertTrue("\(error)".contains("\(name).gguf"), "\(name): the error names the file")
            }
        }
    }
}
