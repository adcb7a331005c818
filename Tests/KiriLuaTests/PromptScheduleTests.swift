import Foundation
import XCTest
@testable import KiriLua

/// A1111's prompt scheduling (Plugins/lib/prompt.lua): prompt editing, alternation, escapes and composable
/// AND parts, against texts worked out by hand from stable-diffusion-webui modules/prompt_parser.py (its
/// doctests and header comment among them), and the errors a malformed prompt raises.
final class PromptScheduleTests: XCTestCase {
    /// A prompt and its text at every step, steps = texts.count. With several AND parts, a step's text is
    /// the parts' texts joined by "AND", so it reads like the prompt without its weights.
    struct Golden {
        let prompt: String
        let texts: [String]
        var weights: [Double] = [1]
    }

    static let goldens: [Golden] = [
        Golden(prompt: "sneaker", texts: ["sneaker", "sneaker"]),
        Golden(prompt: "", texts: ["", ""]),
        // [from:to:when]: `from` while step <= when.
        Golden(prompt: "a [b:c:2] d", texts: ["a b d", "a b d", "a c d", "a c d"]),
        Golden(prompt: "a [b:3]", texts: ["a ", "a ", "a ", "a b", "a b"]),
        Golden(prompt: "a [b::3] c", texts: ["a b c", "a b c", "a b c", "a  c", "a  c"]),
        Golden(prompt: "a [b : c : 1] d", texts: ["a b  d", "a  c  d", "a  c  d"]),
        Golden(prompt: "[a:b: 2 ]", texts: ["a", "a", "b"]),
        Golden(prompt: "[:x:1]", texts: ["", "x"]),
        // A '.' makes a fraction of the steps: int(0.5 * 6) = 3, int(0.25 * 6) = 1, int(.5 * 4) = 2.
        Golden(prompt: "[sneaker:sandal:0.5]", texts: ["sneaker", "sneaker", "sneaker", "sandal", "sandal", "sandal"]),
        Golden(prompt: "[a:b:0.25]", texts: ["a", "b", "b", "b", "b", "b"]),
        Golden(prompt: "a [b:.5] c", texts: ["a  c", "a  c", "a b c", "a b c"]),
        Golden(prompt: "[a:b:1.0]", texts: ["a", "a", "a"]),
        Golden(prompt: "[a:b:1]", texts: ["a", "b", "b"]),
        Golden(prompt: "[a:b:2e0]", texts: ["a", "a", "b"]),
        // A `when` below 1 gives `to` throughout; one at or past the last step gives `from`.
        Golden(prompt: "[a:b:0]", texts: ["b", "b", "b"]),
        Golden(prompt: "[a:b:-2]", texts: ["b", "b", "b"]),
        Golden(prompt: "[a:b:0.1]", texts: ["b", "b", "b", "b", "b"]),
        Golden(prompt: "[a:b:7]", texts: ["a", "a", "a"]),
        Golden(prompt: "[a:b:1.5]", texts: ["a", "a", "a"]),
        // [a|b|c]: step s takes alternative (s - 1) % n + 1.
        Golden(prompt: "[a|b|c]", texts: ["a", "b", "c", "a", "b"]),
        Golden(prompt: "[fe|]male", texts: ["female", "male", "female", "male"]),
        Golden(prompt: "[fe|||]male", texts: ["female", "male", "male", "male", "female"]),
        Golden(prompt: "[|]", texts: ["", ""]),
        // Nesting.
        Golden(prompt: "[[a|b]:c:0.5]", texts: ["a", "b", "a", "c", "c", "c"]),
        Golden(prompt: "[a:[b|c]:3]", texts: ["a", "a", "a", "c", "b", "c"]),
        Golden(prompt: "a[b:[c:d:2]:1]e", texts: ["abe", "ace", "ade", "ade"]),
        // Escapes.
        // Escaped brackets and backslashes keep their backslash for the model's emphasis parser, as A1111's do.
        Golden(prompt: #"\[a\:b\] \(c\) x\|y \\ [d:e:1]"#, texts: [#"\[a:b\] \(c\) x|y \\ d"#, #"\[a:b\] \(c\) x|y \\ e"#]),
        // Emphasis passes through, with edits inside it and it inside edits.
        Golden(prompt: "a (b:1.2) [c] [(d):e:1] ([f|g])", texts: ["a (b:1.2) [c] (d) (f)", "a (b:1.2) [c] e (g)"]),
        // AND parts and their weights; AND is a whole word.
        Golden(prompt: "sneaker :0.7 AND [sandal|boot] :0.3",
               texts: ["sneaker AND sandal ", "sneaker AND boot ", "sneaker AND sandal "], weights: [0.7, 0.3]),
        Golden(prompt: "a :1 AND b : -0.5 AND c:+.5", texts: ["a AND b AND c"], weights: [1, -0.5, 0.5]),
        Golden(prompt: "[coat:bag:1] :2 AND [shirt|dress]",
               texts: ["coat AND shirt", "bag AND dress", "bag AND shirt"], weights: [2, 1]),
        Golden(prompt: "BRAND AND ANDY", texts: ["BRAND AND ANDY"], weights: [1, 1]),
    ]

    func testGoldenTextsAtEveryStep() {
        for golden in Self.goldens {
            let printed = runLua("""
                local prompt = require "lib.prompt"
                local parts = prompt.parts([==[\(golden.prompt)]==])
                local weights = {}
                for i, part in ipairs(parts) do weights[i] = string.format("%.17g", part.weight) end
                print(table.concat(weights, " "))
                for step = 1, \(golden.texts.count) do
                    local texts = {}
                    for i, part in ipairs(parts) do texts[i] = prompt.text_at(part, step, \(golden.texts.count)) end
                    print(table.concat(texts, "AND"))
                end
                """)
            let lines = printed.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
            XCTAssertEqual(lines.first.map { $0.split(separator: " ").compactMap { Double($0) } }, golden.weights,
                           "weights of \(golden.prompt)")
            XCTAssertEqual(Array(lines.dropFirst()), golden.texts, "texts of \(golden.prompt)")
        }
    }

    /// changes() is A1111's collect_steps: the last step of each stretch of text. The prompt and its
    /// schedule at 100 steps are the example at the top of prompt_parser.py.
    func testChangesAreA1111sCollectSteps() {
        let landscape = "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
            + "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
        let printed = runLua("""
            local prompt = require "lib.prompt"
            local parsed = prompt.parse("\(landscape)")
            for _, step in ipairs(prompt.changes(parsed, 100)) do print(step, prompt.text_at(parsed.parts[1], step, 100)) end
            print(table.concat(prompt.changes("a[b:[c:d:2]:1]e", 10), ","))
            print(table.concat(prompt.changes("[a:b:0.5] AND [c:d:2]", 10), ","))
            print(table.concat(prompt.changes("[a:b:0] AND [c:d:-3] AND [e:f:9]", 5), ","))
            print(table.concat(prompt.changes("x AND [a|b]", 3), ","))
            """)
        XCTAssertEqual(printed, """
            25\tfantasy landscape with a mountain and an oak in foreground shoddy
            50\tfantasy landscape with a lake and an oak in foreground in background shoddy
            60\tfantasy landscape with a lake and an oak in foreground in background masterful
            75\tfantasy landscape with a lake and an oak in background masterful
            100\tfantasy landscape with a lake and a christmas tree in background masterful
            1,2,10
            2,5,10
            5
            1,2,3

            """)
    }

    func testGoldenErrorsNameTheColumn() {
        let cases: [(String, String)] = [
            ("[sneaker", "column 9: '[' at column 1 is never closed"),
            (String(repeating: "[a|", count: 65) + "b" + String(repeating: "]", count: 65),
             "column 193: brackets nested more than 64 deep"),
            ("[a:[b|c]:3", "column 11: '[' at column 1 is never closed"),
            ("[a AND b:c:3]", "column 4: '[' at column 1 is never closed before AND"),
            ("靴 [a", "column 5: '[' at column 3 is never closed"),
            ("abcd]", "column 5: unexpected ']'"),
            ("a | b", #"column 3: '|' outside [...]; write \| for a literal '|'"#),
            ("[sneaker:b:x]", "column 12: the step or fraction in [from:to:when] must be a number, got 'x'"),
            ("[a:b:]", "column 6: the step or fraction in [from:to:when] must be a number, got ''"),
            ("[a:b:1.2.3]", "column 6: the step or fraction in [from:to:when] must be a number, got '1.2.3'"),
            ("[a:b:c:3]", "column 7: too many ':' in [from:to:when]"),
            ("[a|b:3]", "column 5: ':' in a [...] that has '|'; nest brackets to combine editing and alternation"),
            ("[a:[b|c:3]", "column 8: ':' in a [...] that has '|'; nest brackets to combine editing and alternation"),
            ("a (b c", "column 7: '(' at column 3 is never closed"),
            (#"a \(b) c"#, "column 6: unexpected ')'"),
            ("(a:x)", "column 4: the weight in (text:weight) must be a number followed by ')', got 'x'"),
            ("[a)]", "column 3: unexpected ')'"),
            ("a AND", "column 6: AND part 2 is empty"),
            ("AND b", "column 1: AND part 1 is empty"),
            ("a AND  AND b", "column 6: AND part 2 is empty"),
            ("sneaker :heavy", #"column 10: the weight after ':' must be a number, got 'heavy' (write \: for a literal ':')"#),
            ("a:0.5 b", #"column 3: the weight after ':' must be a number, got '0.5 b' (write \: for a literal ':')"#),
            (#"a\"#, #"column 2: '\' at the end escapes nothing"#),
        ]
        for (text, expected) in cases {
            let failure = luaError("require('lib.prompt').parse([==[\(text)]==])")
            XCTAssertEqual(failure?.message.split(separator: "\n").first.map(String.init), "prompt: " + expected, text)
        }
    }

    func testScheduleChecksTheStepAndItsArguments() {
        let cond = "local cond = require('lib.prompt').schedule('[a:b:2]', 10, function(text) return {text = text} end)\n"
        let cases: [(String, String)] = [
            ("cond()", "prompt schedule: no step given (a guider knows it only from its sigmas: kiri.guidance.cfg{sigmas = ...})"),
            ("cond(0, 10)", "prompt schedule: the step must be an integer in 1..10, got 0"),
            ("cond(11, 10)", "prompt schedule: the step must be an integer in 1..10, got 11"),
            ("cond(2.5)", "prompt schedule: the step must be an integer in 1..10, got 2.5"),
            ("cond(1, 20)", "prompt schedule: made for 10 steps, called for 20"),
            ("require('lib.prompt').schedule('a', 0, print)", "bad argument #2 to 'schedule' (positive integer expected, got 0)"),
            ("require('lib.prompt').schedule(nil, 3, print)", "bad argument #1 to 'schedule' (string expected, got nil)"),
            ("require('lib.prompt').schedule('a', 3)", "bad argument #3 to 'schedule' (function expected, got nil)"),
            ("local p = require('lib.prompt'); p.text_at(p.parts('a')[1], 4, 3)",
             "bad argument #2 to 'text_at' (step in 1..3 expected, got 4)"),
            ("require('lib.prompt').changes('a')", "bad argument #2 to 'changes' (positive integer expected, got nil)"),
        ]
        for (call, expected) in cases {
            let failure = luaError(cond + call)
            XCTAssertEqual(failure?.message.split(separator: "\n").first.map(String.init), "test.lua:2: " + expected, call)
        }
        let printed = runLua(cond + """
            print(cond(2)[1].extra.text, cond(3, 10)[1].extra.text, cond(3)[1].weight, cond(2) == cond(2))
            """)
        XCTAssertEqual(printed, "a\tb\t1.0\ttrue\n")
    }
}
