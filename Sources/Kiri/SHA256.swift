/// SHA-256 (FIPS 180-4), to name a recipe's source by the hash `sha256sum` prints for the same bytes. Kiri hashes
/// a few kilobytes per run, so a plain implementation beats a crypto dependency for the build time it would cost.
enum SHA256 {
    /// The digest of `bytes` as 64 lowercase hex digits.
    static func hex<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        Array(bytes).withUnsafeBytes { hex($0)! }
    }

    /// The digest of `bytes` (a mapped file's, say) as 64 lowercase hex digits, read in place; nil if `stopped`
    /// (asked between megabytes: a model file takes seconds, and the run's time limit must still hold).
    static func hex(_ bytes: UnsafeRawBufferPointer, stopped: () -> Bool = { false }) -> String? {
        digest(bytes, stopped: stopped).map { $0.map { String($0, radix: 16).leftPadded(to: 8) }.joined() }
    }

    private static let roundConstants: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    /// Whole 64-byte blocks straight from `message`; the last partial block with its padding (a 1 bit, zeros to 56
    /// mod 64 bytes, the length in bits, big-endian) from a small buffer.
    private static func digest(_ message: UnsafeRawBufferPointer, stopped: () -> Bool) -> [UInt32]? {
        var hash: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        let whole = message.count / 64 * 64
        var schedule = [UInt32](repeating: 0, count: 64)
        if let base = message.baseAddress {
            for block in stride(from: 0, to: whole, by: 64) {
                if block & (1 << 20 - 1) == 0, stopped() { return nil }
                compress(base + block, &hash, &schedule)
            }
        }
        var tail = Array(message[whole...]) + [0x80]
        tail += [UInt8](repeating: 0, count: (56 - tail.count % 64 + 64) % 64)
        let bits = UInt64(message.count) &* 8
        tail += (0..<8).reversed().map { UInt8(truncatingIfNeeded: bits >> (8 * UInt64($0))) }
        tail.withUnsafeBytes { tail in
            for block in stride(from: 0, to: tail.count, by: 64) { compress(tail.baseAddress! + block, &hash, &schedule) }
        }
        return hash
    }

    private static func compress(_ block: UnsafeRawPointer, _ hash: inout [UInt32], _ schedule: inout [UInt32]) {
        schedule.withUnsafeMutableBufferPointer { w in
            for t in 0..<16 { w[t] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self)) }
            for t in 16..<64 {
                let s0 = rotate(w[t - 15], 7) ^ rotate(w[t - 15], 18) ^ (w[t - 15] >> 3)
                let s1 = rotate(w[t - 2], 17) ^ rotate(w[t - 2], 19) ^ (w[t - 2] >> 10)
                w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, h) = (hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7])
            roundConstants.withUnsafeBufferPointer { k in
                for t in 0..<64 {
                    let t1 = h &+ (rotate(e, 6) ^ rotate(e, 11) ^ rotate(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[t] &+ w[t]
                    let t2 = (rotate(a, 2) ^ rotate(a, 13) ^ rotate(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                    (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
                }
            }
            hash[0] &+= a; hash[1] &+= b; hash[2] &+= c; hash[3] &+= d
            hash[4] &+= e; hash[5] &+= f; hash[6] &+= g; hash[7] &+= h
        }
    }

    private static func rotate(_ value: UInt32, _ count: UInt32) -> UInt32 { value >> count | value << (32 - count) }
}

private extension String {
    func leftPadded(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}
