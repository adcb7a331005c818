import Foundation

/// out[B, dimension] = diffusers' get_timestep_embedding(timesteps[B], dimension, flip_sin_to_cos,
/// downscale_freq_shift) (models/embeddings.py, max_period 10000, scale 1): [sin(t·f) | cos(t·f)] (cos first when
/// flipped) with f_i = exp(-ln(10000) · i / (dimension/2 - shift)), an odd dimension padded with a zero. Every
/// intermediate is rounded to float32 where torch's float32 ops round it, so t·f — up to 1000 radians — is the same
/// float and the sines agree to an ulp.
func timestepEmbeddingForward(_ out: UnsafeMutablePointer<Float>, _ timesteps: [Float], dimension: Int, flipSinToCos: Bool,
                              frequencyShift: Double) {
    let half = dimension / 2
    let logPeriod = Float(-log(10000.0))
    let divisor = Float(Double(half) - frequencyShift)
    let frequencies = (0..<half).map { i in Float(Foundation.exp(Double(logPeriod * Float(i) / divisor))) }
    for (b, t) in timesteps.enumerated() {
        let row = out + b * dimension
        for i in 0..<half {
            let argument = Double(t * frequencies[i])
            let (sine, cosine) = (Float(Foundation.sin(argument)), Float(Foundation.cos(argument)))
            row[i] = flipSinToCos ? cosine : sine
            row[half + i] = flipSinToCos ? sine : cosine
        }
        if dimension % 2 == 1 { row[dimension - 1] = 0 }
    }
}

/// out[B, T, D] = tokenTable[tokens[b][t]] + positionTable[t] — transformers' CLIPTextEmbeddings (token_embedding
/// of input_ids plus position_embedding of position_ids 0..<T). Every id must be a row of `tokenTable` and T at most
/// the rows of `positionTable`; the caller checks. The token table, the largest tensor of a CLIP text model, stays
/// in its stored format and only the rows used are widened.
func tokenEmbeddingForward(_ out: UnsafeMutablePointer<Float>, _ tokens: [[Int]], _ tokenTable: WeightMatrix,
                           _ positionTable: UnsafePointer<Float>, features: Int) {
    for (b, sequence) in tokens.enumerated() {
        for (t, token) in sequence.enumerated() {
            let row = out + (b * sequence.count + t) * features, position = positionTable + t * features
            tokenTable.widen(token..<token + 1, into: row)
            for i in 0..<features { row[i] += position[i] }
        }
    }
}
