import KiriTensor

/// The order `ImageDataset.batch` takes items in, and which of them it mirrors: a pure function of (seed, epoch,
/// position), so a run resumed from its seed and step sees the very batches it would have seen, on any machine.
///
/// Layout (stable; changing it changes every training run):
///   key     = (UInt32(seed & 0xFFFF_FFFF), UInt32(seed >> 32)), as Philox.swift's streams
///   order:  epoch e's permutation of 0..<count is Fisher–Yates from the last position down (Durstenfeld's
///           algorithm P, Knuth TAOCP vol. 2, 3.4.2): for i = count-1 ... 1, swap i with j = (u · (i + 1)) >> 64,
///           where u = w0 | w1 << 32 of Philox4x32-10 block (counter (i, e & 0xFFFF_FFFF, e >> 32, 0x6F72_6472 "ordr")).
///   flips:  the item at position p of epoch e is mirrored when bit 31 of w0 of block
///           (counter (p, e & 0xFFFF_FFFF, e >> 32, 0x666C_6970 "flip")) is set.
/// The last counter word keeps these streams apart from each other and from kiri.randn's (whose words 2 and 3 are 0).
/// Tests/Fixtures/data/data_order_reference.py is an independent Python model of this layout.
public enum DataOrder {
    static let orderStream: UInt32 = 0x6F72_6472
    static let flipStream: UInt32 = 0x666C_6970

    /// Epoch `epoch`'s permutation of 0..<count, written to `output` (count values).
    public static func permutation(count: Int, seed: UInt64, epoch: UInt64, into output: UnsafeMutablePointer<Int32>) {
        precondition(count >= 0 && count <= Int(Int32.max), "DataOrder: count out of range")
        for i in 0..<count { output[i] = Int32(i) }
        guard count > 1 else { return }
        let key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        for i in stride(from: count - 1, through: 1, by: -1) {
            let words = Philox.block(counter: (UInt32(i), UInt32(truncatingIfNeeded: epoch), UInt32(truncatingIfNeeded: epoch >> 32),
                                               orderStream), key: key)
            let u = UInt64(words.0) | UInt64(words.1) << 32
            let j = Int(u.multipliedFullWidth(by: UInt64(i + 1)).high)
            output.swapAt(i, j)
        }
    }

    /// Whether the item at `position` of epoch `epoch` is mirrored, when flips are on.
    public static func flips(seed: UInt64, epoch: UInt64, position: Int) -> Bool {
        let key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        let words = Philox.block(counter: (UInt32(truncatingIfNeeded: position), UInt32(truncatingIfNeeded: epoch),
                                           UInt32(truncatingIfNeeded: epoch >> 32), flipStream), key: key)
        return words.0 >> 31 == 1
    }
}

private extension UnsafeMutablePointer {
    func swapAt(_ i: Int, _ j: Int) {
        let kept = self[i]
        self[i] = self[j]
        self[j] = kept
    }
}
