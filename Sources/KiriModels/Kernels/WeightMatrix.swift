import KiriKernels
import KiriTensor

/// How a network keeps a weight matrix in memory. A float32 copy of an f16 checkpoint would be twice its file
/// (an SD 1.5 UNet: 3.4 GB instead of 1.7), so weights stay as the file stores them, or as the user asks.
public enum WeightFormat: String, Sendable, CaseIterable {
    case f32, f16, bf16
    /// ggml's q8_0 (stable-diffusion.cpp's `--type q8_0`): blocks of 32 int8 weights sharing a float16 scale,
    /// 34 bytes per 32 weights. Only for rows whose length is a multiple of 32; other rows keep float16.
    case q8_0

    init(_ dtype: DType) {
        switch dtype {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .q8_0: self = .q8_0
        }
    }

    var kernelType: kiri_dtype {
        switch self {
        case .f32: KIRI_F32
        case .f16: KIRI_F16
        case .bf16: KIRI_BF16
        case .q8_0: KIRI_Q8_0
        }
    }

    /// Bytes of one row of `columns` weights.
    func rowBytes(_ columns: Int) -> Int { kiri_dtype_bytes(kernelType, columns) }
}

/// A weight matrix [rows, columns] (a conv's [O, I·k·k]) in its `format`. Kernels read it a chunk of rows at a
/// time (`WeightChunks`), widened to float32 in scratch, so no float32 copy of the model exists. The storage counts
/// against the run's memory cap.
final class WeightMatrix {
    let format: WeightFormat
    let rows: Int, columns: Int
    private let storage: TensorStorage

    /// `values` [rows, columns] in `format`: rounded to float16 or bfloat16 (ties to even) or quantized to q8_0,
    /// which falls back to float16 when a row is not whole blocks of 32.
    init(_ values: UnsafePointer<Float>, rows: Int, columns: Int, format: WeightFormat) throws {
        let format = format == .q8_0 && columns % 32 != 0 ? .f16 : format
        (self.format, self.rows, self.columns) = (format, rows, columns)
        let rowBytes = format.rowBytes(columns)
        storage = try TensorStorage(count: (rows * rowBytes + 3) / 4)
        let base = UncheckedSendable(value: UnsafeMutableRawPointer(storage.pointer)), source = UncheckedSendable(value: values)
        Parallel.forEach(rows, grain: max(1, (1 << 16) / max(columns, 1))) { range in
            kiri_narrow(base.value + range.lowerBound * rowBytes, source.value + range.lowerBound * columns, format.kernelType,
                        range.count * columns)
        }
    }

    /// A matrix whose bytes `copy` writes as they are stored (a file's, already in `format`), or nil when it
    /// cannot and wrote nothing.
    init?(rows: Int, columns: Int, format: WeightFormat, copying copy: (UnsafeMutableRawPointer) -> Bool) throws {
        (self.format, self.rows, self.columns) = (format, rows, columns)
        storage = try TensorStorage(count: (rows * format.rowBytes(columns) + 3) / 4)
        guard copy(UnsafeMutableRawPointer(storage.pointer)) else { return nil }
    }

    /// The float32 `tensor` [O, …] as the matrix [O, rest], sharing its storage: a trainable layer's weight, which
    /// the optimiser updates in place between forward passes.
    init(sharing tensor: Tensor) {
        (format, rows, columns) = (.f32, tensor.shape[0], tensor.count / max(tensor.shape[0], 1))
        storage = tensor.storage
    }

    convenience init(_ tensor: Tensor, format: WeightFormat) throws {
        try self.init(tensor.data, rows: tensor.shape[0], columns: tensor.count / max(tensor.shape[0], 1), format: format)
    }

    /// Several matrices with the same columns, one under the other ([q | k | v] stacked), in the first one's format;
    /// one stored otherwise (a file may mix dtypes) is converted through float32.
    init(stacking matrices: [WeightMatrix]) throws {
        (format, columns) = (matrices[0].format, matrices[0].columns)
        rows = matrices.reduce(0) { $0 + $1.rows }
        storage = try TensorStorage(count: (rows * format.rowBytes(columns) + 3) / 4)
        var offset = 0
        for matrix in matrices {
            let bytes = matrix.rows * format.rowBytes(columns), target = UnsafeMutableRawPointer(storage.pointer) + offset
            if matrix.format == format {
                target.copyMemory(from: matrix.storage.pointer, byteCount: bytes)
            } else {
                kiri_narrow(target, try matrix.tensor().data, format.kernelType, matrix.rows * columns)
            }
            offset += bytes
        }
    }

    var byteCount: Int { rows * format.rowBytes(columns) }

    /// The float32 rows themselves, when the format is float32.
    var floats: UnsafePointer<Float>? { format == .f32 ? UnsafePointer(storage.pointer) : nil }

    /// The stored bytes of row `row` onwards.
    func bytes(row: Int) -> UnsafeRawPointer { UnsafeRawPointer(storage.pointer) + row * format.rowBytes(columns) }

    /// Rows `range` as float32 into `out` [range.count, columns], with the kernels KIRI_ISA chose.
    func widen(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        kiri_kernels_active().pointee.widen(out, bytes(row: range.lowerBound), format.kernelType, range.count * columns)
    }

    /// The whole matrix as float32 (tests, and LoRA's merge).
    func tensor() throws -> Tensor {
        let tensor = try Tensor(shape: [rows, columns])
        widen(0..<rows, into: tensor.data)
        return tensor
    }
}

/// A weight matrix walked in chunks of rows, each as float32: for float32 the storage itself, in one chunk; else
/// widened on every core into a scratch of `scratchCount` floats, 16 MiB at most, so that no float32 copy of the
/// model exists. A kernel runs its usual parallel product on each chunk in turn; a chunk is large enough (thousands
/// of rows of a linear layer) that repacking the other operand per chunk costs little.
struct WeightChunks {
    /// Floats of scratch a chunk may take.
    static let floats = 1 << 22

    let weight: WeightMatrix
    let rows: Int

    /// `rowFloats`: the scratch one row costs, when a kernel keeps something else per row (a Winograd transform).
    /// `rows` overrides the choice (tests use it to make several chunks of a small matrix).
    init(_ weight: WeightMatrix, rowFloats: Int? = nil, rows: Int? = nil) {
        self.weight = weight
        let perRow = max(rowFloats ?? weight.columns, 1)
        let chosen = weight.floats != nil && rowFloats == nil ? weight.rows : Self.floats / perRow
        self.rows = max(1, min(weight.rows, rows ?? chosen))
    }

    var count: Int { (weight.rows + rows - 1) / rows }

    func range(_ chunk: Int) -> Range<Int> { chunk * rows..<min(weight.rows, (chunk + 1) * rows) }

    /// Scratch floats `forEach` needs: none for float32.
    var scratchCount: Int { weight.floats == nil ? rows * weight.columns : 0 }

    /// Calls `body(rows, floats)` for each chunk in order, with the chunk as float32 [rows.count, columns]; stops
    /// between chunks once the run is (the caller checks the cancellation before using the output).
    func forEach(scratch: UnsafeMutablePointer<Float>?, _ body: (Range<Int>, UnsafePointer<Float>) -> Void) {
        let cancellation = Cancellation.current
        for chunk in 0..<count where !(cancellation?.isStopped ?? false) {
            let range = range(chunk)
            if let floats = weight.floats {
                body(range, floats + range.lowerBound * weight.columns)
                continue
            }
            let (matrix, target) = (weight, UncheckedSendable(value: scratch!))
            Parallel.forEach(range.count, grain: max(1, (1 << 16) / weight.columns)) { rows in
                matrix.widen(range.lowerBound + rows.lowerBound..<range.lowerBound + rows.upperBound,
                             into: target.value + rows.lowerBound * matrix.columns)
            }
            body(range, UnsafePointer(scratch!))
        }
    }
}
