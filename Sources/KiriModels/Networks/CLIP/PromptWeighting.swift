import Foundation

/// A stretch of prompt text and the weight its brackets give it, as AUTOMATIC1111's `parse_prompt_attention`
/// (modules/prompt_parser.py) returns them. A BREAK is the piece ("BREAK", -1), as there: a BREAK inside
/// brackets has its −1 multiplied away and is then the word "BREAK" with that weight, which A1111 encodes as text.
public struct PromptPiece: Equatable, Sendable {
    public var text: String
    public var weight: Double

    public init(_ text: String, _ weight: Double) {
        self.text = text
        self.weight = weight
    }

    /// Whether the piece ends a chunk: A1111's tokenize_line tests `text == 'BREAK' and weight == -1`.
    public var isBreak: Bool { text == "BREAK" && weight == -1 }
}

/// A prompt Kiri refuses: unbalanced or too deeply nested brackets, or a weight that is not a number.
public struct PromptError: Error, CustomStringConvertible, Equatable, Sendable {
    /// 1-based position, counted in Unicode scalars, of the character at fault.
    public var column: Int
    /// E.g. "unbalanced '(' at column 7".
    public var message: String

    public init(column: Int, _ message: String) {
        self.column = column
        self.message = message
    }

    public var description: String { "prompt: \(message)" }
}

/// One window of a prompt for the text encoder: A1111's PromptChunk (modules/sd_hijack_clip.py).
public struct PromptChunk: Equatable, Sendable {
    /// `PromptWeighting.windowLength` ids: start, up to 75 of the prompt's, end, then padding.
    public var tokens: [Int]
    /// One per token: the weight of the piece the token came from, 1 for start, end and padding.
    public var weights: [Double]
}

/// A1111's prompt emphasis and long-prompt chunking: `parse_prompt_attention` in modules/prompt_parser.py and
/// `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` in modules/sd_hijack_clip.py, ported from their behaviour.
/// The one departure is that unbalanced brackets are an error naming the bracket, where A1111 closes an open
/// bracket at the end of the prompt and reads a stray closing one as text.
public enum PromptWeighting {
    /// Prompt tokens per chunk, between the start and end tokens.
    public static let chunkLength = 75
    /// Tokens per chunk with start and end: what each text-encoder pass sees.
    public static let windowLength = chunkLength + 2
    /// Open brackets allowed at once. Each closing bracket reweights every piece inside it, so the cap keeps the
    /// parse linear in the prompt (at most this many multiplications per piece); 64 is far past any real prompt.
    public static let maximumDepth = 64
    /// A1111's `comma_padding_backtrack` default: how far back a full chunk may be cut at a comma.
    public static let commaBacktrack = 20

    // MARK: Parsing

    /// The weighted pieces of `prompt`, equal runs merged, as A1111's parse_prompt_attention gives them:
    /// `(text)` multiplies by 1.1, `[text]` divides by 1.1, `(text:w)` multiplies by w, `\(` `\)` `\[` `\]` `\\`
    /// are the characters themselves (a backslash before anything else is dropped), and BREAK as a word of its own
    /// is the piece ("BREAK", -1) with the whitespace around it removed. Round and square brackets are matched
    /// separately, so `([a)]` is balanced, as in A1111. An empty prompt is the one piece ("", 1).
    ///
    /// Errors name a column: a closing bracket with no open one of its kind, else the leftmost bracket left open;
    /// the bracket that goes past `maximumDepth`; a weight such as `1.2.3` that Python's float() refuses (A1111
    /// fails there too).
    public static func parse(_ prompt: String) throws(PromptError) -> [PromptPiece] {
        var parser = Parser(Array(prompt.unicodeScalars))
        return try parser.run()
    }

    /// A single pass over the prompt's scalars following A1111's `re_attention` alternatives in order; weights are
    /// multiplied at each closing bracket over the pieces since its opening one, in A1111's order, so every weight
    /// is the same Double.
    private struct Parser {
        let scalars: [Unicode.Scalar]
        var pieces: [PromptPiece] = []
        /// Open brackets: the index in `pieces` where each starts and its 1-based column.
        var round: [(start: Int, column: Int)] = []
        var square: [(start: Int, column: Int)] = []

        init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }

        mutating func run() throws(PromptError) -> [PromptPiece] {
            var index = 0
            while index < scalars.count {
                let scalar = scalars[index]
                switch scalar {
                case "\\":
                    if index + 1 < scalars.count, "()[]\\".unicodeScalars.contains(scalars[index + 1]) {
                        pieces.append(PromptPiece(String(scalars[index + 1]), 1))
                        index += 2
                    } else {
                        pieces.append(PromptPiece("", 1))
                        index += 1
                    }
                case "(", "[":
                    guard round.count + square.count < maximumDepth else {
                        throw PromptError(column: index + 1, "brackets nested deeper than \(maximumDepth) at column \(index + 1)")
                    }
                    if scalar == "(" { round.append((pieces.count, index + 1)) } else { square.append((pieces.count, index + 1)) }
                    index += 1
                case ":":
                    if let (number, end) = weightSuffix(from: index) {
                        guard let open = round.popLast() else { throw unbalanced(")", column: end) }
                        guard let weight = Self.double(scalars[number]) else {
                            throw PromptError(column: number.lowerBound + 1, "weight '\(text(number))' at column \(number.lowerBound + 1) is not a number")
                        }
                        multiply(from: open.start, by: weight)
                        index = end
                    } else {
                        appendText(index..<index + 1)
                        index += 1
                    }
                case ")":
                    guard let open = round.popLast() else { throw unbalanced(")", column: index + 1) }
                    multiply(from: open.start, by: 1.1)
                    index += 1
                case "]":
                    guard let open = square.popLast() else { throw unbalanced("]", column: index + 1) }
                    multiply(from: open.start, by: 1 / 1.1)
                    index += 1
                default:
                    var end = index + 1
                    while end < scalars.count, !"\\()[]:".unicodeScalars.contains(scalars[end]) { end += 1 }
                    appendText(index..<end)
                    index = end
                }
            }
            let unclosed = (round.map { ($0.column, "(") } + square.map { ($0.column, "[") }).min { $0.0 < $1.0 }
            if let (column, bracket) = unclosed { throw unbalanced(bracket, column: column) }
            return merged()
        }

        func unbalanced(_ bracket: String, column: Int) -> PromptError {
            PromptError(column: column, "unbalanced '\(bracket)' at column \(column)")
        }

        /// A1111's `:\s*([+-]?[.\d]+)\s*\)` at the colon at `index`: where the number is and the index after the
        /// `)` (whose column is that index). `\d` and `\s` are Python's, so any decimal digit and Python's whitespace.
        func weightSuffix(from index: Int) -> (Range<Int>, Int)? {
            var position = index + 1
            while position < scalars.count, Self.isSpace(scalars[position]) { position += 1 }
            let start = position
            if position < scalars.count, scalars[position] == "+" || scalars[position] == "-" { position += 1 }
            let digits = position
            while position < scalars.count, scalars[position] == "." || scalars[position].properties.generalCategory == .decimalNumber {
                position += 1
            }
            guard position > digits else { return nil }
            let number = start..<position
            while position < scalars.count, Self.isSpace(scalars[position]) { position += 1 }
            guard position < scalars.count, scalars[position] == ")" else { return nil }
            return (number, position + 1)
        }

        /// Python's `float()` of a sign, digits and dots: any decimal digit counts as its ASCII value.
        static func double(_ number: ArraySlice<Unicode.Scalar>) -> Double? {
            var ascii = ""
            for scalar in number {
                if let value = scalar.properties.numericValue, scalar.properties.generalCategory == .decimalNumber {
                    ascii.unicodeScalars.append(Unicode.Scalar(UInt8(48 + Int(value))))
                } else {
                    ascii.unicodeScalars.append(scalar)
                }
            }
            return Double(ascii)
        }

        mutating func multiply(from start: Int, by multiplier: Double) {
            for index in start..<pieces.count { pieces[index].weight *= multiplier }
        }

        /// A run of text, split at each BREAK as `re.split(r"\s*\bBREAK\b\s*", text)` splits it: every part is a
        /// piece of weight 1, even an empty one, with ("BREAK", -1) between parts.
        mutating func appendText(_ range: Range<Int>) {
            let breakWord = Array("BREAK".unicodeScalars)
            var partStart = range.lowerBound, cursor = range.lowerBound
            var position = range.lowerBound
            while position + breakWord.count <= range.upperBound {
                let after = position + breakWord.count
                guard scalars[position..<after].elementsEqual(breakWord),
                      position == range.lowerBound || !Self.isWord(scalars[position - 1]),
                      after == range.upperBound || !Self.isWord(scalars[after]) else {
                    position += 1
                    continue
                }
                var matchStart = position, matchEnd = after
                while matchStart > cursor, Self.isSpace(scalars[matchStart - 1]) { matchStart -= 1 }
                while matchEnd < range.upperBound, Self.isSpace(scalars[matchEnd]) { matchEnd += 1 }
                pieces.append(PromptPiece(text(partStart..<matchStart), 1))
                pieces.append(PromptPiece("BREAK", -1))
                (partStart, cursor, position) = (matchEnd, matchEnd, matchEnd)
            }
            pieces.append(PromptPiece(text(partStart..<range.upperBound), 1))
        }

        func text(_ range: Range<Int>) -> String { String(String.UnicodeScalarView(scalars[range])) }

        /// Adjacent pieces of equal weight joined, keeping the first's weight; no pieces is ("", 1).
        func merged() -> [PromptPiece] {
            var result: [PromptPiece] = []
            for piece in pieces {
                if let last = result.last, last.weight == piece.weight {
                    result[result.count - 1].text += piece.text
                } else {
                    result.append(piece)
                }
            }
            return result.isEmpty ? [PromptPiece("", 1)] : result
        }

        /// Python's `str.isspace`, which `\s` uses: Unicode White_Space plus the separators U+001C…U+001F.
        static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
        }

        /// Python's `\w`, which `\b` uses: letters, anything with a numeric value, and `_`.
        static func isWord(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
            default: return scalar == "_" || scalar.properties.numericType != nil
            }
        }
    }

    // MARK: Chunking

    /// The chunks A1111's tokenize_line makes of `pieces`: each piece's ids (without start and end) carry its
    /// weight; a chunk closes when it holds 75 ids, or at a BREAK. When a chunk is full and the next id is not a
    /// comma, a comma among its last `commaBacktrack` ids moves the ids after it to the next chunk (0 turns this
    /// off). Each chunk is padded to 75 with the end token and wrapped in start and end; when `tokenizer.padToken` is
    /// not the end token (SD2's OpenCLIP pads with 0), every id after the chunk's first end token becomes the pad
    /// token, as process_tokens does, even ids of an `<|endoftext|>` written in the prompt. An empty prompt is one
    /// chunk; so is a BREAK with nothing before it.
    public static func chunks(_ pieces: [PromptPiece], tokenizer: CLIPTokenizer,
                              commaBacktrack: Int = commaBacktrack) -> [PromptChunk] {
        // A lone comma is one byte symbol, so this is the id of ",</w>", which A1111 looks up in the vocabulary.
        let commaToken = tokenizer.encode(",").first
        var chunks: [PromptChunk] = []
        var tokens: [Int] = [], weights: [Double] = []
        var lastComma: Int?

        func close() {
            let padding = chunkLength - tokens.count
            var chunk = PromptChunk(tokens: [tokenizer.startToken] + tokens + repeatElement(tokenizer.endToken, count: padding + 1),
                                    weights: [1] + weights + repeatElement(1, count: padding + 1))
            if tokenizer.padToken != tokenizer.endToken {
                let end = chunk.tokens.firstIndex(of: tokenizer.endToken)!
                for index in (end + 1)..<chunk.tokens.count { chunk.tokens[index] = tokenizer.padToken }
            }
            chunks.append(chunk)
            (tokens, weights, lastComma) = ([], [], nil)
        }

        for piece in pieces {
            if piece.isBreak {
                close()
                continue
            }
            for token in tokenizer.encode(piece.text) {
                if token == commaToken {
                    lastComma = tokens.count
                } else if commaBacktrack != 0, tokens.count == chunkLength, let comma = lastComma,
                          tokens.count - comma <= commaBacktrack {
                    let cut = comma + 1
                    let movedTokens = tokens[cut...], movedWeights = weights[cut...]
                    tokens.removeSubrange(cut...)
                    weights.removeSubrange(cut...)
                    close()
                    (tokens, weights) = (Array(movedTokens), Array(movedWeights))
                }
                // A comma that arrives at a full chunk closes it and is not remembered in the next (A1111 order).
                if tokens.count == chunkLength { close() }
                tokens.append(token)
                weights.append(piece.weight)
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { close() }
        return chunks
    }

    /// `chunks(parse(prompt), …)`.
    public static func chunks(_ prompt: String, tokenizer: CLIPTokenizer,
                              commaBacktrack: Int = commaBacktrack) throws(PromptError) -> [PromptChunk] {
        chunks(try parse(prompt), tokenizer: tokenizer, commaBacktrack: commaBacktrack)
    }
}
