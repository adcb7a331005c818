#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Torch7-like printout: a column for 1-D, a matrix for 2-D, "(i,j,.,.) = " headed matrices (1-based, as Lua
/// users count) for higher ranks, then "[Tensor of size 2x3]". Dimensions longer than 6 show their first and last
/// three entries around "...", so printing a latent stays short.
extension Tensor: CustomStringConvertible {
    public var description: String {
        let size = "[Tensor of size \(shape.map(String.init).joined(separator: "x"))]"
        if isReleased { return "[released Tensor of size \(shape.map(String.init).joined(separator: "x"))]" }
        if count == 0 { return size }
        let format = numberFormat()
        if rank == 0 { return " \(formatted(data[0], format))\n[Tensor with no dimension]" }

        // Cells first (nil is an elided "..."), so every number can be padded to the widest one shown. Each block is
        // one matrix with its header, or nil for an elided run of matrices.
        let strides = contiguousStrides(shape)
        let (rows, columns) = rank == 1 ? (shape[0], 1) : (shape[rank - 2], shape[rank - 1])
        let rowStride = rank == 1 ? 1 : strides[rank - 2]
        var prefixes: [[Int]?] = [[]]
        for dim in 0..<max(0, rank - 2) {
            prefixes = prefixes.flatMap { prefix in
                prefix.map { prefix in shownIndices(shape[dim]).map { index in index.map { prefix + [$0] } } } ?? [nil]
            }
        }
        let blocks: [(header: String, rows: [[String?]?])?] = prefixes.map { prefix in
            prefix.map { prefix in
                let base = zip(prefix, strides).reduce(0) { $0 + $1.0 * $1.1 }
                let header = prefix.isEmpty ? "" : "(" + prefix.map { String($0 + 1) }.joined(separator: ",") + ",.,.) = "
                let cells = shownIndices(rows).map { row in
                    row.map { row in
                        shownIndices(columns).map { column in column.map { formatted(data[base + row * rowStride + $0], format) } }
                    }
                }
                return (header, cells)
            }
        }

        let width = blocks.compactMap { $0 }.flatMap(\.rows).compactMap { $0 }.joined().compactMap { $0?.count }.max() ?? 0
        var lines: [String] = []
        for (index, block) in blocks.enumerated() {
            if index > 0 { lines.append("") }
            guard let block else {
                lines.append("...")
                continue
            }
            if !block.header.isEmpty { lines.append(block.header) }
            lines += block.rows.map { render($0, width) }
        }
        lines.append(size)
        return lines.joined(separator: "\n")
    }

    /// One printf format for the whole tensor, as Torch7 does, so columns line up: integers when every finite value
    /// is one, fixed point for moderate magnitudes, scientific otherwise.
    private func numberFormat() -> String {
        var integral = true, largest: Float = 0, smallest = Float.infinity
        for value in UnsafeBufferPointer(start: data, count: count) where value.isFinite {
            integral = integral && value.rounded() == value
            largest = max(largest, value.magnitude)
            if value != 0 { smallest = min(smallest, value.magnitude) }
        }
        if integral, largest < 1e9 { return "%.0f" }
        return largest < 1e5 && smallest >= 1e-4 ? "%.4f" : "%.4e"
    }
}

/// Indices of a dimension to print; nil stands for the elided middle.
private func shownIndices(_ size: Int) -> [Int?] {
    size > 6 ? [0, 1, 2, nil, size - 3, size - 2, size - 1] : Array(0..<size)
}

private func render(_ row: [String?]?, _ width: Int) -> String {
    guard let row else { return "..." }
    return row.map { cell in
        let text = cell ?? "..."
        return " " + String(repeating: " ", count: max(0, width - text.count)) + text
    }.joined()
}

private func formatted(_ value: Float, _ format: String) -> String {
    let value = value == 0 ? 0 : Double(value)  // no "-0"
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
        _ = withVaList([value]) { vsnprintf(buffer.baseAddress, buffer.count, format, $0) }
        return String(cString: buffer.baseAddress!)
    }
}
