import Foundation

/// OpenAI CLIP's byte-level BPE, giving the ids of transformers 5's `CLIPTokenizer`
/// (transformers/models/clip/tokenization_clip.py, a tokenizers-library pipeline; the vocabulary is open_clip's
/// tokenizer.py / CLIP's simple_tokenizer.py). That pipeline is:
/// 1. `<|startoftext|>`, `<|endoftext|>` and the pad token written in the prompt are special tokens, matched in the
///    raw text (so in SD2, whose pad token is `!`, every `!` is id 0);
/// 2. each stretch between them is NFC-normalised, whitespace runs become one space, and every scalar is lower-cased
///    on its own (Rust's `char::to_lowercase`: `İ` becomes `i` + U+0307, a final `Σ` becomes `σ`, not `ς`);
/// 3. words are the matches of `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
///    over code points, whitespace dropped; the ByteLevel pre-tokenizer then splits again with GPT-2's pattern,
///    which changes only a lower-cased special token's words (`<|`, `startoftext`, `|>`);
/// 4. each word's UTF-8 bytes become GPT-2's byte symbols, the last with `</w>`, merged by rank.
/// ftfy and html.unescape, which open_clip and transformers 4's slow tokenizer apply when ftfy is installed, are
/// not part of this pipeline, so mojibake and HTML entities are tokenized as written.
public struct CLIPTokenizer: Sendable {
    public static let startText = "<|startoftext|>"
    public static let endText = "<|endoftext|>"
    /// Larger than any published tokenizer.json (3.6 MB for CLIP) with room to spare.
    public static let maximumFileSize = 64 << 20

    /// `<|startoftext|>`, 49406 in CLIP's vocabulary.
    public let startToken: Int
    /// `<|endoftext|>`, 49407 in CLIP's vocabulary; SD1's padding.
    public let endToken: Int
    /// What fills a window after `endToken`: the tokenizer files' `pad_token`, `<|endoftext|>` unless they say
    /// otherwise (SD2's say `!`, id 0). Like the other special tokens it is matched in the prompt's raw text.
    public let padToken: Int
    public let vocabularySize: Int

    /// The special tokens' UTF-8 text and ids, longest first: the tokenizers library's added vocabulary matches the
    /// longest at the leftmost position.
    private let specialTokens: [(text: [UInt8], token: Int)]
    /// (left, right) symbol ids packed as `left << 32 | right` → the merge's rank and the merged symbol's id.
    private let merges: [UInt64: Merge]
    /// The symbol of byte b at 0..<256, and of byte b ending a word (with `</w>`) at 256 + b.
    private let byteSymbols: [Int32]
    private let cache = WordCache()

    private struct Merge {
        var rank: Int32
        var merged: Int32
    }

    // MARK: Loading

    /// The files of a `tokenizer/` folder it may read.
    public static let fileNames = ["tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]

    /// A diffusers `tokenizer/` folder: `tokenizer.json` when present (as transformers prefers it), otherwise
    /// `vocab.json` with `merges.txt`; the pad token from `special_tokens_map.json`, else `tokenizer_config.json`
    /// (the order in which transformers lets them override each other).
    public init(folder: String) throws(ModelFileError) {
        let padToken = try Self.padTokenName(folder: folder)
        let tokenizerJSON = folder + "/tokenizer.json"
        if FileManager.default.fileExists(atPath: tokenizerJSON) {
            try self.init(tokenizerJSON: Self.read(tokenizerJSON), path: tokenizerJSON, padToken: padToken)
        } else {
            let vocabulary = folder + "/vocab.json", merges = folder + "/merges.txt"
            try self.init(vocabularyJSON: Self.read(vocabulary), merges: Self.read(merges),
                          vocabularyPath: vocabulary, mergesPath: merges, padToken: padToken)
        }
    }

    /// `vocab.json` and `merges.txt` as transformers 4 saves them; the paths only name the files in errors.
    public init(vocabularyJSON: [UInt8], merges: [UInt8], vocabularyPath: String = "vocab.json",
                mergesPath: String = "merges.txt", padToken: String? = nil) throws(ModelFileError) {
        let json = try Self.parseJSON(vocabularyJSON, path: vocabularyPath)
        let vocabulary = try Self.vocabulary(json, path: vocabularyPath, field: "the file")
        let pairs = try Self.mergeLines(merges, path: mergesPath)
        try self.init(vocabulary: vocabulary, merges: pairs, vocabularyPath: vocabularyPath, mergesPath: mergesPath, padToken: padToken)
    }

    /// A `tokenizer.json`: its `model.vocab` and `model.merges` (strings `"a b"` or pairs `["a", "b"]`). Like
    /// transformers' CLIPTokenizer, it keeps CLIP's own normalizer and pre-tokenizer whatever the file names.
    public init(tokenizerJSON: [UInt8], path: String = "tokenizer.json", padToken: String? = nil) throws(ModelFileError) {
        let json = try Self.parseJSON(tokenizerJSON, path: path)
        guard let model = json["model"], case .object = model else {
            throw ModelFileError(path, "no 'model' object")
        }
        if let type = model["type"], type != .string("BPE") {
            throw ModelFileError(path, "field 'model.type' is \(Self.describe(type)); a CLIP tokenizer is \"BPE\"")
        }
        guard let vocabularyValue = model["vocab"] else { throw ModelFileError(path, "missing field 'model.vocab'") }
        let vocabulary = try Self.vocabulary(vocabularyValue, path: path, field: "field 'model.vocab'")
        guard case .array(let entries) = model["merges"] else {
            throw ModelFileError(path, "field 'model.merges' is \(model["merges"].map(Self.describe) ?? "missing"), not an array")
        }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            switch entry {
            case .string(let line):
                guard let pair = Self.pair(line) else {
                    throw ModelFileError(path, "merge \(index) is \(Self.quote(line)), not two symbols separated by one space")
                }
                pairs.append(pair)
            case .array(let parts):
                guard parts.count == 2, case .string(let left) = parts[0], case .string(let right) = parts[1] else {
                    throw ModelFileError(path, "merge \(index) is not a pair of strings")
                }
                pairs.append((left, right))
            default:
                throw ModelFileError(path, "merge \(index) is \(entry.kindName), not a string or a pair of strings")
            }
        }
        try self.init(vocabulary: vocabulary, merges: pairs, vocabularyPath: path, mergesPath: path, padToken: padToken)
    }

    /// The merges alone, in `merges.txt` form, with the vocabulary CLIP derives from them (open_clip's
    /// `SimpleTokenizer`): the 256 byte symbols, the same with `</w>`, each merge's result in rank order, then
    /// `<|startoftext|>` and `<|endoftext|>`, the byte symbols in `bytes_to_unicode`'s order (printable bytes
    /// first). For CLIP's 48,894 merges this is openai/clip-vit-large-patch14's
    /// vocab.json, id for id, which is why Kiri bundles only the merges.
    public init(derivingVocabularyFromMerges merges: [UInt8], path: String, padToken: String? = nil) throws(ModelFileError) {
        let pairs = try Self.mergeLines(merges, path: path)
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(512 + pairs.count + 2)
        let symbols = Self.printableBytes.map { Self.byteSymbolTexts[$0] }
            + (0..<256).filter { !Self.printableBytes.contains($0) }.map { Self.byteSymbolTexts[$0] }
        for token in symbols + symbols.map({ $0 + "</w>" }) + pairs.map({ $0.0 + $0.1 })
            + [Self.startText, Self.endText] where vocabulary[token] == nil {
            vocabulary[token] = vocabulary.count
        }
        guard vocabulary.count == 512 + pairs.count + 2 else {
            throw ModelFileError(path, "two merges give the same symbol, so the vocabulary cannot be derived from them")
        }
        try self.init(vocabulary: vocabulary, merges: pairs, vocabularyPath: path, mergesPath: path, padToken: padToken)
    }

    private init(vocabulary: [String: Int], merges pairs: [(String, String)], vocabularyPath: String, mergesPath: String,
                 padToken: String?) throws(ModelFileError) {
        func id(_ token: String) throws(ModelFileError) -> Int {
            guard let id = vocabulary[token] else { throw ModelFileError(vocabularyPath, "the vocabulary has no \(Self.quote(token))") }
            return id
        }
        startToken = try id(Self.startText)
        endToken = try id(Self.endText)
        let padText = padToken ?? Self.endText
        guard !padText.isEmpty else { throw ModelFileError(vocabularyPath, "the pad token is empty") }
        self.padToken = try id(padText)
        specialTokens = Set([Self.startText, Self.endText, padText]).map { (Array($0.utf8), vocabulary[$0]!) }
            .sorted { $0.text.count > $1.text.count }
        byteSymbols = try (Self.byteSymbolTexts + Self.byteSymbolTexts.map { $0 + "</w>" }).map { token throws(ModelFileError) in
            Int32(try id(token))
        }
        var merges: [UInt64: Merge] = [:]
        merges.reserveCapacity(pairs.count)
        for (rank, (left, right)) in pairs.enumerated() {
            guard let leftID = vocabulary[left], let rightID = vocabulary[right], let merged = vocabulary[left + right] else {
                let missing = vocabulary[left] == nil ? left : vocabulary[right] == nil ? right : left + right
                throw ModelFileError(mergesPath, "merge \(rank) (\(Self.quote(left + " " + right))): the vocabulary has no \(Self.quote(missing))")
            }
            // A repeated pair keeps its last rank, as the tokenizers library's merge map does.
            merges[UInt64(leftID) << 32 | UInt64(rightID)] = Merge(rank: Int32(rank), merged: Int32(merged))
        }
        self.merges = merges
        vocabularySize = vocabulary.count
    }

    // MARK: Encoding

    /// The ids of `text` without `<|startoftext|>` and `<|endoftext|>` around them.
    ///
    /// Untrusted prompts are bounded: every step is linear in the text except the merges of one word, which take
    /// O(n log n) for a word of n bytes (the tokenizers library's heap, not the quadratic rescan of
    /// simple_tokenizer.py), so a megabyte without a space costs about as much as a megabyte of words.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        let bytes = Array(text.utf8)
        var start = 0
        var index = 0
        while index < bytes.count {
            if let (length, token) = specialToken(in: bytes, at: index) {
                appendWords(of: bytes[start..<index], to: &ids)
                ids.append(token)
                index += length
                start = index
            } else {
                index += 1
            }
        }
        appendWords(of: bytes[start...], to: &ids)
        return ids
    }

    /// `<|startoftext|>`, the ids of `text`, `<|endoftext|>`: what `tokenizer(text)["input_ids"]` gives.
    public func tokenize(_ text: String) -> [Int] { [startToken] + encode(text) + [endToken] }

    /// The text-encoder input diffusers builds with `tokenizer(text, padding="max_length", max_length=length,
    /// truncation=True)`: the first `length − 2` ids of `text` between start and end, then padding.
    public func window(_ text: String, length: Int = 77) -> [Int] { window(encode(text), length: length) }

    /// `content` (ids without start and end) cut to `length − 2`, wrapped in start and end, and padded to `length`.
    public func window(_ content: some Collection<Int>, length: Int = 77) -> [Int] {
        precondition(length >= 2, "a window of \(length) tokens has no room for start and end")
        var ids = [startToken] + content.prefix(length - 2) + [endToken]
        ids += repeatElement(padToken, count: length - ids.count)
        return ids
    }

    /// `content` in consecutive windows of `length − 2` ids, each made as `window` makes one; an empty prompt is one
    /// window. This is how A1111 and ComfyUI encode prompts past 75 tokens, without A1111's moving a cut back to
    /// the last comma or its BREAK, which belong to whoever parses the prompt.
    public func windows(_ content: [Int], length: Int = 77) -> [[Int]] {
        precondition(length >= 3, "a window of \(length) tokens has no room for content")
        let step = length - 2
        return stride(from: 0, to: max(content.count, 1), by: step).map { start in
            window(content[start..<min(start + step, content.count)], length: length)
        }
    }

    /// The special token spelled at `index` of the raw text, matched before any normalisation as transformers
    /// matches added tokens (so `<|STARTOFTEXT|>` is ordinary text).
    private func specialToken(in bytes: [UInt8], at index: Int) -> (length: Int, token: Int)? {
        for (text, token) in specialTokens
        where text[0] == bytes[index] && bytes.count - index >= text.count && bytes[index..<index + text.count].elementsEqual(text) {
            return (text.count, token)
        }
        return nil
    }

    /// Normalises one stretch of text between special tokens, splits it into words and appends their ids.
    private func appendWords(of raw: ArraySlice<UInt8>, to ids: inout [Int]) {
        guard !raw.isEmpty else { return }
        // Scalars below U+0300 (UTF-8 lead bytes below 0xCC) neither change nor compose under NFC, and Foundation's
        // NFC costs about a second per megabyte, so most prompts skip it.
        let decoded = String(decoding: raw, as: UTF8.self)
        let text = raw.allSatisfy { $0 < 0xCC } ? decoded : decoded.precomposedStringWithCanonicalMapping
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(raw.count)
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                scalars.append(("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32)! : scalar)
            } else {
                scalars.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        var word: [UInt8] = []
        func flush() {
            guard !word.isEmpty else { return }
            appendMerged(word, to: &ids)
            word.removeAll(keepingCapacity: true)
        }
        func append(_ range: Range<Int>) {
            for scalar in scalars[range] { word.append(contentsOf: UTF8.encode(scalar)!) }
            flush()
        }
        var index = 0
        while index < scalars.count {
            let start = index
            let kind = Self.kind(scalars[index])
            if kind == .space {
                index += 1
            } else if let name = Self.specialName(scalars, at: index) {
                // GPT-2's split of the special token's one CLIP word: "<|", the name, "|>".
                append(index..<index + 2)
                append(index + 2..<index + 2 + name)
                append(index + 2 + name..<index + 4 + name)
                index += name + 4
            } else if let length = Self.contraction(scalars, at: index) {
                index += length
                append(start..<index)
            } else if kind == .number {
                index += 1
                append(start..<index)
            } else {
                repeat { index += 1 } while index < scalars.count && Self.kind(scalars[index]) == kind
                append(start..<index)
            }
        }
    }

    /// BPE over one word's bytes, merging the lowest-ranked adjacent pair first and the leftmost among equals,
    /// as the tokenizers library's `Word::merge_all` does.
    private func appendMerged(_ word: [UInt8], to ids: inout [Int]) {
        if let cached = cache[word] {
            ids.append(contentsOf: cached)
            return
        }
        var symbols = word.indices.map { byteSymbols[Int(word[$0]) + ($0 == word.count - 1 ? 256 : 0)] }
        var next = Array(1...symbols.count)
        var previous = Array(-1..<(symbols.count - 1))
        var alive = [Bool](repeating: true, count: symbols.count)
        var queue = MergeQueue()
        func enqueue(_ position: Int) {
            let right = next[position]
            guard right < symbols.count, let merge = merges[UInt64(symbols[position]) << 32 | UInt64(symbols[right])] else { return }
            queue.push(rank: merge.rank, position: Int32(position), merged: merge.merged)
        }
        for position in symbols.indices.dropLast() { enqueue(position) }
        while let top = queue.pop() {
            let position = Int(top.position)
            let right = next[position]
            // Entries made stale by an earlier merge: the left symbol was absorbed, or the pair changed.
            guard alive[position], right < symbols.count,
                  merges[UInt64(symbols[position]) << 32 | UInt64(symbols[right])]?.merged == top.merged else { continue }
            symbols[position] = top.merged
            alive[right] = false
            next[position] = next[right]
            if next[right] < symbols.count { previous[next[right]] = position }
            if previous[position] >= 0 { enqueue(previous[position]) }
            enqueue(position)
        }
        let result = symbols.indices.filter { alive[$0] }.map { Int(symbols[$0]) }
        cache[word] = result
        ids.append(contentsOf: result)
    }

    // MARK: Pre-tokenisation

    private enum Kind { case space, letter, number, other }

    /// `\s` is Unicode's White_Space (so U+0085 and U+3000 separate words and U+001C and U+200B do not), `\p{L}`
    /// and `\p{N}` the general categories. Swift's Unicode tables stand in for Oniguruma's and Rust's: they agree on
    /// every golden case, but a character newer than one of their Unicode versions may be classed differently.
    private static func kind(_ scalar: Unicode.Scalar) -> Kind {
        if scalar.isASCII { return asciiKinds[Int(scalar.value)] }
        if scalar.properties.isWhitespace { return .space }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Unicode property lookups are binary searches; prompts are mostly ASCII.
    private static let asciiKinds: [Kind] = (0..<128).map { value in
        switch UInt8(value) {
        case 0x09...0x0D, 0x20: .space
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): .number
        default: .other
        }
    }

    /// The length of the special token's name when the lower-cased text spells `<|startoftext|>` or
    /// `<|endoftext|>` at `index`, the regex's first two alternatives.
    private static func specialName(_ scalars: [Unicode.Scalar], at index: Int) -> Int? {
        for name in ["startoftext", "endoftext"] {
            let spelled = "<|" + name + "|>"
            if scalars.count - index >= spelled.unicodeScalars.count,
               scalars[index..<index + spelled.unicodeScalars.count].elementsEqual(spelled.unicodeScalars) {
                return name.unicodeScalars.count
            }
        }
        return nil
    }

    /// The length of `'s`, `'t`, `'re`, `'ve`, `'m`, `'ll` or `'d` at `index`, in the regex's order.
    private static func contraction(_ scalars: [Unicode.Scalar], at index: Int) -> Int? {
        guard scalars[index] == "'" else { return nil }
        for ending in ["s", "t", "re", "ve", "m", "ll", "d"] {
            let count = ending.unicodeScalars.count
            if scalars.count - index > count, scalars[index + 1...index + count].elementsEqual(ending.unicodeScalars) {
                return count + 1
            }
        }
        return nil
    }

    // MARK: Files

    /// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100
    /// onwards, so no symbol is whitespace or a control character.
    private static let printableBytes = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)

    private static let byteSymbolTexts: [String] = {
        var symbols = [String](repeating: "", count: 256)
        var shifted = 0
        for byte in 0..<256 {
            if printableBytes.contains(byte) {
                symbols[byte] = String(Unicode.Scalar(UInt8(byte)))
            } else {
                symbols[byte] = String(Unicode.Scalar(UInt32(256 + shifted))!)
                shifted += 1
            }
        }
        return symbols
    }()

    private static func read(_ path: String) throws(ModelFileError) -> [UInt8] {
        let file = try MappedFile(path: path)
        defer { file.unmap() }
        guard file.size <= maximumFileSize else {
            throw ModelFileError(path, "file is \(file.size) bytes, more than the limit of \(maximumFileSize)")
        }
        return Array(file.bytes)
    }

    private static func text(_ bytes: [UInt8], path: String) throws(ModelFileError) -> String {
        guard bytes.withUnsafeBytes(StrictJSONParser.isValidUTF8) else { throw ModelFileError(path, "file is not valid UTF-8") }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func parseJSON(_ bytes: [UInt8], path: String) throws(ModelFileError) -> JSONValue {
        guard bytes.count <= maximumFileSize else {
            throw ModelFileError(path, "file is \(bytes.count) bytes, more than the limit of \(maximumFileSize)")
        }
        _ = try text(bytes, path: path)
        do {
            return try StrictJSONParser.parse(bytes)
        } catch {
            throw ModelFileError(path, "file is not valid JSON: \(error)")
        }
    }

    private static func vocabulary(_ json: JSONValue, path: String, field: String) throws(ModelFileError) -> [String: Int] {
        guard case .object(let members) = json else { throw ModelFileError(path, "\(field) is \(json.kindName), not an object of token ids") }
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(members.count)
        for member in members {
            // Ids are packed two to a 64-bit merge key.
            guard let id = member.value.integer, (0...Int(Int32.max)).contains(id) else {
                throw ModelFileError(path, "token \(quote(member.key)) has id \(describe(member.value)), not an integer in 0...\(Int32.max)")
            }
            vocabulary[member.key] = id
        }
        return vocabulary
    }

    /// `merges.txt`: one merge per line, the two symbols separated by one space; a first line starting with
    /// `#version` is a header (the tokenizers library's `convert_merges_to_hashmap`).
    private static func mergeLines(_ bytes: [UInt8], path: String) throws(ModelFileError) -> [(String, String)] {
        guard bytes.count <= maximumFileSize else {
            throw ModelFileError(path, "file is \(bytes.count) bytes, more than the limit of \(maximumFileSize)")
        }
        var lines = try text(bytes, path: path).split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(lines.count)
        for (number, rawLine) in zip(1..., lines) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line.hasPrefix("#version") { continue }
            guard let pair = pair(line) else {
                throw ModelFileError(path, "line \(number) is \(quote(line)), not two symbols separated by one space")
            }
            pairs.append(pair)
        }
        return pairs
    }

    private static func pair(_ line: some StringProtocol) -> (String, String)? {
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    /// The `pad_token` of `special_tokens_map.json`, else of `tokenizer_config.json`, either as a string or as an
    /// AddedToken object's `content`; nil when neither file names one.
    private static func padTokenName(folder: String) throws(ModelFileError) -> String? {
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = folder + "/" + name
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let json = try parseJSON(read(path), path: path)
            guard case .object = json else { throw ModelFileError(path, "file is \(json.kindName), not a JSON object") }
            switch json["pad_token"] {
            case nil, .null?: continue
            case .string(let token)?: return token
            case let value?:
                guard case .string(let token)? = value["content"] else {
                    throw ModelFileError(path, "field 'pad_token' is \(describe(value)), not a token or an object with a 'content' string")
                }
                return token
            }
        }
        return nil
    }

    private static func quote(_ text: some StringProtocol) -> String {
        let shown = text.count > 40 ? text.prefix(40) + "…" : String(text)
        return "'" + shown.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? String($0) : $0.escaped(asASCII: true) }.joined() + "'"
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): "the string \(quote(text))"
        case .number(let text): text
        default: value.kindName
        }
    }
}

/// A binary min-heap of pending merges, ordered by rank and then position.
private struct MergeQueue {
    struct Entry {
        var rank: Int32
        var position: Int32
        var merged: Int32
        var key: Int64 { Int64(rank) << 32 | Int64(position) }
    }

    private var entries: [Entry] = []

    mutating func push(rank: Int32, position: Int32, merged: Int32) {
        entries.append(Entry(rank: rank, position: position, merged: merged))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].key < entries[parent].key else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = entries.first else { return nil }
        let last = entries.removeLast()
        guard !entries.isEmpty else { return top }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].key < entries[smallest].key { smallest = left }
            if right < entries.count && entries[right].key < entries[smallest].key { smallest = right }
            guard smallest != parent else { return top }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

/// Merged ids of recent words: prompts repeat their words, and a word's merges cost far more than a lookup. Only
/// short words are kept and the table is emptied when full, so memory stays bounded whatever the input.
private final class WordCache: @unchecked Sendable {
    private static let capacity = 10_000
    private static let longestWord = 64
    private var words: [[UInt8]: [Int]] = [:]
    private let lock = NSLock()

    subscript(word: [UInt8]) -> [Int]? {
        get {
            guard word.count <= Self.longestWord else { return nil }
            return lock.withLock { words[word] }
        }
        set {
            guard word.count <= Self.longestWord, let newValue else { return }
            lock.withLock {
                if words.count >= Self.capacity { words.removeAll(keepingCapacity: true) }
                words[word] = newValue
            }
        }
    }
}
