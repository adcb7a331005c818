import XCTest
@testable import KiriLua

/// kiri.post.grid, lib.font and kiri.post.upscale_nearest. The expected grids are drawn here, in Swift,
/// pixel by pixel at positions this file computes from the layout rules (padding before every band and
/// column and after the last, as torchvision's make_grid; columns as wide as their cell, labels wrapped to
/// fit, 2 font pixels between a label's lines; cells and labels centred, row labels right-aligned), with
/// this file's own copy of the glyphs the labels use and each test's own wrapping of its labels: a wrong
/// offset, a wrong glyph, a wrong line break or a lost padding pixel in the plugins fails the comparison.
final class GridTests: XCTestCase {
    /// The glyphs the tests' labels use, copied by hand from the font's sheet.
    static let glyphs: [Character: [String]] = [
        "I": [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
        "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
        " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
    ]
    static let box = ["#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"]

    /// A [C, h, w] image, channel-major like the tensors.
    struct Picture: Equatable {
        var channels, height, width: Int
        var values: [Float]

        init(channels: Int, height: Int, width: Int, fill: Float) {
            (self.channels, self.height, self.width) = (channels, height, width)
            values = Array(repeating: fill, count: channels * height * width)
        }

        /// Distinct values k/64 (exact in float32 and in print), none 0 or 1, different in each cell.
        static func sample(_ seed: Int, channels: Int, height: Int, width: Int) -> Picture {
            var picture = Picture(channels: channels, height: height, width: width, fill: 0)
            for c in 0..<channels { for y in 0..<height { for x in 0..<width {
                picture[c, y, x] = Float((seed * 31 + c * 7 + y * 5 + x * 3) % 62 + 1) / 64
            } } }
            return picture
        }

        subscript(c: Int, y: Int, x: Int) -> Float {
            get { values[(c * height + y) * width + x] }
            set { values[(c * height + y) * width + x] = newValue }
        }

        /// A Lua expression for this image as a [C, h, w] tensor, or [1, C, h, w] if `batched`.
        func lua(batched: Bool = false) -> String {
            let planes = (0..<channels).map { c in
                "{" + (0..<height).map { y in
                    "{" + (0..<width).map { x in "\(self[c, y, x])" }.joined(separator: ",") + "}"
                }.joined(separator: ",") + "}"
            }.joined(separator: ",")
            return batched ? "kiri.tensor({{\(planes)}})" : "kiri.tensor({\(planes)})"
        }

        /// `image`, `scale` times larger by repetition, with its top left at (top, left); a grey image
        /// goes to every channel.
        mutating func paint(_ image: Picture, scale: Int = 1, top: Int, left: Int) {
            for c in 0..<channels { for y in 0..<image.height * scale { for x in 0..<image.width * scale {
                self[c, top + y, left + x] = image[image.channels == 1 ? 0 : c, y / scale, x / scale]
            } } }
        }

        /// `text` in this file's glyphs, each glyph pixel a `scale` x `scale` block, advancing 6 pixels.
        mutating func write(_ text: String, scale: Int, top: Int, left: Int, ink: Float) {
            for (k, character) in text.enumerated() {
                let glyph = GridTests.glyphs[character] ?? GridTests.box
                for (row, line) in glyph.enumerated() {
                    for (column, pixel) in line.enumerated() where pixel == "#" {
                        for c in 0..<channels { for dy in 0..<scale { for dx in 0..<scale {
                            self[c, top + row * scale + dy, left + (k * 6 + column) * scale + dx] = ink
                        } } }
                    }
                }
            }
        }

        /// The first pixel that differs from `expected`, and how many do, for a failure message.
        func difference(from expected: Picture) -> String? {
            guard (channels, height, width) == (expected.channels, expected.height, expected.width) else {
                return "shape [\(channels),\(height),\(width)], expected [\(expected.channels),\(expected.height),\(expected.width)]"
            }
            let wrong = values.indices.filter { values[$0] != expected.values[$0] }
            guard let first = wrong.first else { return nil }
            let (c, y, x) = (first / (height * width), first / width % height, first % width)
            return "\(wrong.count) pixels differ; first at [c \(c), y \(y), x \(x)]: \(values[first]), expected \(expected.values[first])"
        }
    }

    struct Options {
        var rowLabels: [String]? = nil
        var columnLabels: [String]? = nil
        var title: String? = nil
        var scale = 1, textScale = 1, padding = 2
        var background: Float = 1, ink: Float = 0
        /// The lines a label is expected to wrap to, where it is not just its own lines ("\n").
        var wrapped: [String: [String]] = [:]

        func lines(_ label: String) -> [String] {
            wrapped[label] ?? label.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        }

        var lua: String {
            func quoted(_ label: String) -> String { "\"" + label.replacingOccurrences(of: "\n", with: "\\n") + "\"" }
            func list(_ labels: [String]?) -> String {
                labels.map { "{" + $0.map(quoted).joined(separator: ", ") + "}" } ?? "nil"
            }
            return "{row_labels = \(list(rowLabels)), column_labels = \(list(columnLabels)), title = "
                + (title.map(quoted) ?? "nil")
                + ", scale = \(scale), text_scale = \(textScale), padding = \(padding), background = \(background), ink = \(ink)}"
        }
    }

    static func textWidth(_ text: String, _ scale: Int) -> Int { text.isEmpty ? 0 : (6 * text.count - 1) * scale }

    /// The width and height of a label's lines: 7 font pixels a line, 2 between lines.
    static func blockSize(_ lines: [String], _ scale: Int) -> (width: Int, height: Int) {
        (lines.map { textWidth($0, scale) }.max() ?? 0, (lines.count * 9 - 2) * scale)
    }

    /// The grid as the layout rules place it, drawn here independently of the plugin.
    static func expectedGrid(_ rows: [[Picture?]], _ options: Options) -> Picture {
        let cells = rows.flatMap { $0 }.compactMap { $0 }
        let (p, scale, textScale) = (options.padding, options.scale, options.textScale)
        let channels = cells.map(\.channels).max()!
        let (cellHeight, cellWidth) = (cells[0].height * scale, cells[0].width * scale)
        let columnCount = rows.map(\.count).max()!
        let columnLines = options.columnLabels?.map(options.lines)
        let rowLines = options.rowLabels?.map(options.lines)
        let columnWidths = (0..<columnCount).map { j in
            max(cellWidth, columnLines.map { blockSize($0[j], textScale).width } ?? 0)
        }
        let bandHeight = columnLines?.map { blockSize($0, textScale).height }.max() ?? 0
        let rowHeight = max(cellHeight, rowLines?.map { blockSize($0, textScale).height }.max() ?? 0)
        let labelWidth = rowLines?.map { blockSize($0, textScale).width }.max() ?? 0
        let titleLines = options.title.map(options.lines)
        let titleSize = titleLines.map { blockSize($0, textScale) }
        let bodyWidth = p + (options.rowLabels == nil ? 0 : labelWidth + p) + columnWidths.reduce(0) { $0 + $1 + p }
        let width = max(bodyWidth, titleSize.map { $0.width + 2 * p } ?? 0)
        let height = p + (titleSize.map { $0.height + p } ?? 0) + (options.columnLabels == nil ? 0 : bandHeight + p)
            + rows.count * (rowHeight + p)
        var grid = Picture(channels: channels, height: height, width: width, fill: options.background)

        /// Lines one under another from `top`, each centred on `centre`, or ending at `right`.
        func write(_ lines: [String], top: Int, centre: (left: Int, width: Int)? = nil, right: Int? = nil) {
            for (k, line) in lines.enumerated() {
                let lineWidth = textWidth(line, textScale)
                let left = right.map { $0 - lineWidth } ?? centre!.left + (centre!.width - lineWidth) / 2
                grid.write(line, scale: textScale, top: top + k * 9 * textScale, left: left, ink: options.ink)
            }
        }

        let bodyLeft = (width - bodyWidth) / 2
        let firstColumn = bodyLeft + p + (options.rowLabels == nil ? 0 : labelWidth + p)
        let columnLefts = (0..<columnCount).map { j in firstColumn + columnWidths[..<j].reduce(0) { $0 + $1 + p } }
        var top = p
        if let titleLines, let titleSize {
            write(titleLines, top: top, centre: ((width - titleSize.width) / 2, titleSize.width))
            top += titleSize.height + p
        }
        if let columnLines {
            for (j, lines) in columnLines.enumerated() {
                let blockHeight = blockSize(lines, textScale).height
                write(lines, top: top + (bandHeight - blockHeight) / 2, centre: (columnLefts[j], columnWidths[j]))
            }
            top += bandHeight + p
        }
        for (i, row) in rows.enumerated() {
            if let lines = rowLines?[i] {
                write(lines, top: top + (rowHeight - blockSize(lines, textScale).height) / 2, right: bodyLeft + p + labelWidth)
            }
            for (j, cell) in row.enumerated() {
                guard let cell else { continue }
                grid.paint(cell, scale: scale, top: top + (rowHeight - cellHeight) / 2,
                           left: columnLefts[j] + (columnWidths[j] - cellWidth) / 2)
            }
            top += rowHeight + p
        }
        return grid
    }

    /// Runs `setup` then prints the tensor `expression` evaluates to: its shape, then its values.
    func tensor(_ expression: String, setup: String = "", file: StaticString = #filePath, line: UInt = #line) -> Picture? {
        let output = runLua(setup + """

        local out = \(expression)
        local values = {}
        local function flatten(t) for _, v in ipairs(t) do if type(v) == "table" then flatten(v) else values[#values + 1] = string.format("%.9g", v) end end end
        flatten(out:totable())
        print(table.concat(out:shape(), " "))
        print(table.concat(values, " "))
        """, file: file, line: line)
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 2 else { return nil }
        let shape = printedNumbers(String(lines[0])).map { Int($0) }
        let values = printedNumbers(String(lines[1])).map { Float($0) }
        guard shape.count == 3 else {
            XCTFail("a [C, H, W] tensor expected, got shape \(shape)", file: file, line: line)
            return nil
        }
        var picture = Picture(channels: shape[0], height: shape[1], width: shape[2], fill: 0)
        XCTAssertEqual(values.count, picture.values.count, "values printed", file: file, line: line)
        if values.count == picture.values.count { picture.values = values }
        return picture
    }

    /// kiri.post.grid on `rows` (nil: a missing cell) with `options`, against expectedGrid.
    func checkGrid(_ rows: [[Picture?]], _ options: Options, file: StaticString = #filePath, line: UInt = #line) {
        let lists = rows.map { "{" + $0.map { $0?.lua() ?? "nil" }.joined(separator: ", ") + "}" }
        guard let got = tensor("kiri.post.grid({\(lists.joined(separator: ",\n"))}, \(options.lua))",
                               file: file, line: line) else { return XCTFail("no output", file: file, line: line) }
        if let difference = got.difference(from: Self.expectedGrid(rows, options)) {
            XCTFail("grid: \(difference)", file: file, line: line)
        }
    }

    // MARK: - Geometry, cells and padding

    func testOutputShapeFollowsTheLayoutFormula() {
        // 2 rows x 3 columns of 1 x 5 x 4 cells, scale 3, padding 4, label "TIT" (17 px, wider than the 12 px
        // cell, which holds 2 characters) over column 2 wraps to "TI" and "T": a band of 7 + 2 + 7 px, the
        // columns stay 12 px. W = 4 + 3 * (12 + 4) = 52; H = 4 + (16 + 4) + 2 * (15 + 4) = 62. With row labels
        // "I", "TT" (11 px): W += 11 + 4.
        let cell = "kiri.zeros({1, 5, 4})"
        let rows = "{{\(cell), \(cell), \(cell)}, {\(cell), \(cell), \(cell)}}"
        let shapes = runLua("""
        local function shape(t) print(table.concat(t:shape(), " ")) end
        shape(kiri.post.grid(\(rows), {scale = 3, padding = 4, column_labels = {"", "TIT", ""}}))
        shape(kiri.post.grid(\(rows), {scale = 3, padding = 4, column_labels = {"", "TIT", ""}, row_labels = {"I", "TT"}}))
        shape(kiri.post.grid(\(rows), {padding = 0}))
        shape(kiri.post.grid(\(rows), {title = "TITITITITIT", padding = 1, text_scale = 2}))
        """)
        // The title "TITITITITIT", 2 * 65 px, is wider than the body: W = 1 + 130 + 1; H = 1 + (14 + 1) + 2 * (5 + 1).
        XCTAssertEqual(shapes, """
        1 62 52
        1 62 67
        1 10 12
        1 28 132

        """)
    }

    func testCellsSitAtTheirPlacesScaledAndPaddingIsBackground() {
        let rgb = (0..<5).map { Picture.sample($0, channels: 3, height: 3, width: 4) }
        checkGrid([[rgb[0], rgb[1], rgb[2]], [rgb[3], rgb[4]]], Options(scale: 2, padding: 3, background: 0.25))
        // Grey cells among RGB ones go to all three channels.
        let grey = Picture.sample(7, channels: 1, height: 3, width: 4)
        checkGrid([[grey, rgb[0]], [rgb[1], grey]], Options(scale: 1, padding: 1, background: 0.75))
        checkGrid([[grey], [grey]], Options(scale: 3, padding: 0))
    }

    func testBatchedCellsAreTakenAsSingleImages() {
        let cells = (0..<2).map { Picture.sample($0, channels: 1, height: 2, width: 3) }
        guard let got = tensor("kiri.post.grid({{\(cells[0].lua(batched: true)), \(cells[1].lua(batched: true))}})") else {
            return XCTFail("no output")
        }
        XCTAssertNil(got.difference(from: Self.expectedGrid([[cells[0], cells[1]]], Options())))
    }

    // MARK: - Labels

    func testLabelPixelsAreTheGlyphs() {
        let cells = (0..<4).map { Picture.sample($0, channels: 3, height: 6, width: 5) }
        // "I" centred over a 10 px cell; "TITIT" (29 px) wraps to one character a line, the most a 10 px cell
        // holds; row labels right-aligned in 11 px.
        checkGrid([[cells[0], cells[1]], [cells[2], cells[3]]],
                  Options(rowLabels: ["T", "IT"], columnLabels: ["I", "TITIT"], title: "TIT", scale: 2, padding: 2,
                          background: 0.5, ink: 0.125, wrapped: ["TITIT": ["T", "I", "T", "I", "T"]]))
        // Text scaled 2x, taller than the cells; a title wider than the body, which is centred under it.
        checkGrid([[cells[0]], [cells[1]]],
                  Options(rowLabels: ["T", "IT"], columnLabels: ["I"], title: "TITITIT", textScale: 2, padding: 1))
        // An unknown character is a box.
        checkGrid([[cells[0]]], Options(columnLabels: ["I\u{e9}"], scale: 3))   // 15 px: 2 characters
    }

    /// Long column labels wrap inside their own column: between words, then inside a word too long for a
    /// line. The columns keep the cells' width, so each label's ink lies over its own cell and the padding
    /// between columns stays background down through the label band.
    func testLongColumnLabelsWrapWithinTheirColumns() {
        let cells = (0..<3).map { Picture.sample($0, channels: 1, height: 4, width: 20) }   // 20 px: 3 characters
        let labels = ["TIT TITIT", "I", "TITITITIT"]
        let options = Options(columnLabels: labels, padding: 2,
                              wrapped: ["TIT TITIT": ["TIT", "TIT", "IT"], "TITITITIT": ["TIT", "ITI", "TIT"]])
        checkGrid([cells], options)
        guard let got = tensor("kiri.post.grid({{\(cells.map { $0.lua() }.joined(separator: ", "))}}, \(options.lua))") else {
            return XCTFail("no output")
        }
        let band = 3 * 7 + 2 * 2
        XCTAssertEqual([got.width, got.height], [2 + 3 * (20 + 2), 2 + band + 2 + 4 + 2], "columns as wide as the cells")
        guard got.width == 2 + 3 * (20 + 2), got.height == 2 + band + 2 + 4 + 2 else { return }
        for j in 0..<3 {
            let left = 2 + j * 22
            let ink = (2..<(2 + band)).flatMap { y in (left..<(left + 20)).map { x in got[0, y, x] } }.filter { $0 == 0 }
            XCTAssertGreaterThan(ink.count, 0, "label \(j + 1) is drawn over its column")
            for x in [left - 2, left - 1, left + 20, left + 21] where x < got.width {
                let column = (0..<(2 + band + 2)).map { got[0, $0, x] }
                XCTAssertEqual(Set(column), [1], "x = \(x), between columns \(j) and \(j + 1), is background")
            }
        }
    }

    /// A label's own lines ("\n") are drawn line by line: column labels and the title centred, row labels
    /// right-aligned and vertically centred in a row that grows to hold them. Row labels wrap at 20
    /// characters when the cells are narrower.
    func testMultiLineLabels() {
        let cells = (0..<4).map { Picture.sample($0, channels: 3, height: 5, width: 6) }
        let long = "TITITITITIT TITITITITIT"
        checkGrid([[cells[0], cells[1]], [cells[2], cells[3]]],
                  Options(rowLabels: ["I\nTT\nT", long], columnLabels: ["T\nI", "TI"], title: "I\nTIT", padding: 3,
                          wrapped: [long: ["TITITITITIT", "TITITITITIT"], "TI": ["T", "I"]]))
        checkGrid([[cells[0]]], Options(rowLabels: ["TIT\n\nI"], columnLabels: ["I\n"], textScale: 2))
    }

    // MARK: - Font

    func testFontWidthAndGlyphs() {
        XCTAssertEqual(runLua("""
        local font = require "lib.font"
        print(font.width(""), font.width("A"), font.width("AB"), font.width("Hello, world!"), font.width("\u{e9}t\u{e9}"),
              font.width(42), font.height, font.advance)
        """), "0\t5\t11\t77\t17\t11\t7\t6\n")
        for (text, glyphs) in [("IT", [Self.glyphs["I"]!, Self.glyphs["T"]!]), ("\u{1}\u{e9}", [Self.box, Self.box])] {
            guard let got = tensor("require('lib.font').render('\(text)'):unsqueeze(1)") else { return XCTFail("no output") }
            var expected = Picture(channels: 1, height: 7, width: 11, fill: 0)
            for (k, glyph) in glyphs.enumerated() {
                for (row, line) in glyph.enumerated() {
                    for (column, pixel) in line.enumerated() where pixel == "#" { expected[0, row, k * 6 + column] = 1 }
                }
            }
            XCTAssertNil(got.difference(from: expected), "render(\(text.debugDescription))")
        }
        XCTAssertEqual(runLua("""
        local font = require "lib.font"
        local chars = {}
        for code = 32, 126 do chars[#chars + 1] = string.char(code) end
        local text = table.concat(chars)
        local box = font.render("\\1")
        local boxes = 0
        for code = 32, 126 do
            local glyph = font.render(string.char(code))
            if (glyph - box):abs():sum() == 0 then boxes = boxes + 1 end
        end
        print(table.concat(font.render(text):shape(), " "), boxes, font.render(" "):sum(), box:sum())
        """), "7 \(95 * 6 - 1)\t0\t0.0\t20.0\n", "every printable ASCII character has its own glyph")
    }

    /// lib.font's wrap, by characters: words joined while they fit, a word longer than a line broken after
    /// its last "_", "-", "/", ".", "," or ":" in the line's second half, else at the width; "\n" starts a
    /// line; a line holds at least one character; runs of spaces are one break.
    func testFontWrap() {
        let cases: [(text: String, width: Int, lines: [String])] = [
            ("Sampler: dpmpp_2m_sde", 56, ["Sampler:", "dpmpp_2m_", "sde"]),   // 56 px: 9 characters
            ("Sampler: euler", 83, ["Sampler: euler"]),                         // 14 characters, exactly
            ("Sampler: euler", 82, ["Sampler:", "euler"]),
            ("abcdefghijkl", 29, ["abcde", "fghij", "kl"]),
            ("a_bcdefghijk", 29, ["a_bcd", "efghi", "jk"]),                     // "_" in the first half: no break there
            ("ab-cdefghij", 17, ["ab-", "cde", "fgh", "ij"]),
            ("abc-defghij", 29, ["abc-", "defgh", "ij"]),
            ("  two   words  ", 200, ["two words"]),
            ("one\n\ntwo\n", 200, ["one", "", "two", ""]),
            ("", 10, [""]),
            ("wide", 0, ["w", "i", "d", "e"]),
            ("\u{e9}t\u{e9} d\u{e9}j\u{e0}", 23, ["\u{e9}t\u{e9}", "d\u{e9}j\u{e0}"]),
        ]
        for (text, width, lines) in cases {
            let quoted = text.replacingOccurrences(of: "\n", with: "\\n")
            XCTAssertEqual(runLua("print(table.concat(require('lib.font').wrap(\"\(quoted)\", \(width)), '|'))"),
                           lines.joined(separator: "|") + "\n", "wrap(\(text.debugDescription), \(width))")
        }
        XCTAssertEqual(runLua("print(table.concat(require('lib.font').wrap(1234, 11), '|'))"), "12|34\n")
    }

    // MARK: - Tensor input

    func testNCHWTensorInputWithColumnsAndAMissingLastCell() {
        let cells = (0..<5).map { Picture.sample($0, channels: 1, height: 3, width: 2) }
        let batch = "kiri.cat({" + cells.map { $0.lua(batched: true) }.joined(separator: ", ") + "}, 1)"
        let rows: [[Picture?]] = [[cells[0], cells[1], cells[2]], [cells[3], cells[4], nil]]
        for call in ["kiri.post.grid(batch, {columns = 3, padding = 1})", "kiri.post.grid(batch, {padding = 1})"] {
            guard let got = tensor(call, setup: "local batch = \(batch)") else { return XCTFail("no output") }
            if let difference = got.difference(from: Self.expectedGrid(rows, Options(padding: 1))) { XCTFail("\(call): \(difference)") }
        }
        guard let twoColumns = tensor("kiri.post.grid(batch, {columns = 2, padding = 1})", setup: "local batch = \(batch)") else {
            return XCTFail("no output")
        }
        XCTAssertNil(twoColumns.difference(from: Self.expectedGrid([[cells[0], cells[1]], [cells[2], cells[3]], [cells[4]]],
                                                                   Options(padding: 1))))
        // ceil(sqrt(N)) columns by default: 4 -> 2, 10 -> 4, 1 -> 1 (width p + k (2 + p), p = 2).
        XCTAssertEqual(runLua("""
        local widths = {}
        for _, n in ipairs({4, 10, 1}) do widths[#widths + 1] = kiri.post.grid(kiri.zeros({n, 3, 2, 2})):size(3) end
        print(table.concat(widths, " "))
        """), "10 18 6\n")
    }

    // MARK: - upscale_nearest

    func testUpscaleNearestRepeatsEachPixel() {
        let image = Picture.sample(3, channels: 2, height: 3, width: 4)
        guard let got = tensor("kiri.post.upscale_nearest(\(image.lua(batched: true)), 3):select(1, 1)") else {
            return XCTFail("no output")
        }
        var expected = Picture(channels: 2, height: 9, width: 12, fill: 0)
        expected.paint(image, scale: 3, top: 0, left: 0)
        XCTAssertNil(got.difference(from: expected))
        XCTAssertEqual(runLua("print(table.concat(kiri.post.upscale_nearest(kiri.zeros({3, 5}), 2):shape(), ' '))"), "6 10\n")
    }

    // MARK: - Errors

    func testErrorsNameWhatIsWrong() {
        let cases: [(String, String)] = [
            ("kiri.post.grid()", "test.lua:1: bad argument #1 to 'grid' (list of rows or Tensor expected, got nil)"),
            ("kiri.post.grid({{a, a, a}, {a, a, b}})", "test.lua:1: grid: image [2][3] has shape [1,28,28], but image [1][1] has [1,32,32]"),
            ("kiri.post.grid({{a}, {a}}, {row_labels = {'x', 'y', 'z'}})", "grid: 3 row_labels for 2 rows"),
            ("kiri.post.grid({{a, a}}, {column_labels = {'x'}})", "grid: 1 column_labels for 2 columns"),
            ("kiri.post.grid({{a}}, {row_labels = {{}}})", "grid: row_labels[1] is a table, a string expected"),
            ("kiri.post.grid({a})", "grid: row 1 is a Tensor, but a list of images expected"),
            ("kiri.post.grid({{a, 'b'}})", "grid: image [1][2] is a string, a Tensor expected"),
            ("kiri.post.grid({{kiri.zeros({2, 4, 4})}})", "grid: image [1][1] has shape [2,4,4], but [C,h,w] or [1,C,h,w] with C = 1 or 3 expected"),
            ("kiri.post.grid(kiri.zeros({3, 4, 4}))", "bad argument #1 to 'grid' ([N, C, h, w] Tensor expected, got shape [3,4,4])"),
            ("kiri.post.grid({{}})", "grid: no images"),
            ("kiri.post.grid({{a}}, 'big')", "bad argument #2 to 'grid' (table expected, got string)"),
            ("kiri.post.grid({{a}}, {scale = 1.5})", "grid: scale must be a whole number >= 1, got 1.5"),
            ("kiri.post.grid({{a}}, {padding = -1})", "grid: padding must be a whole number >= 0, got -1"),
            ("kiri.post.grid({{a}}, {background = 2})", "grid: background must be a number in [0, 1], got 2"),
            ("kiri.post.upscale_nearest(a, 0)", "bad argument #2 to 'upscale_nearest' (positive integer expected, got 0)"),
            ("require('lib.font').width({})", "bad argument #1 to 'width' (string expected, got table)"),
            ("require('lib.font').wrap('a')", "bad argument #2 to 'wrap' (number expected, got nil)"),
        ]
        for (call, message) in cases {
            // The images share line 1 with the call, so the messages can name test.lua:1.
            let failure = luaError("local a, b = kiri.zeros({1, 32, 32}), kiri.zeros({1, 28, 28}); local x = \(call)")
            XCTAssertTrue(failure?.message.contains(message) ?? false, "\(call): \(failure?.message ?? "no error")")
        }
    }
}
