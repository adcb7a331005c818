import Foundation
import Kiri
import XCTest

/// The default model's prompts: which class each names, and what an unknown one says.
final class DefaultModelTests: XCTestCase {
    func testPromptsNameClassesByNamePluralOrSynonym() throws {
        // Fashion-MNIST's label numbers (its README), written out here independently of the plugin.
        let expected: [(String, Int)] = [
            ("t-shirt", 0), ("T-Shirts", 0), ("a tee", 0), ("trouser", 1), ("a pair of trousers", 1), ("jeans", 1),
            ("pullover", 2), ("Sweaters", 2), ("hoodie", 2), ("dress", 3), ("dresses", 3), ("coat", 4), ("jacket", 4),
            ("sandal", 5), ("sandals.", 5), ("shirt", 6), ("blouses", 6), ("sneaker", 7), ("Sneakers", 7),
            ("running shoes", 7), ("bag", 8), ("handbags", 8), ("ankle boot", 9), ("ankle boots", 9), ("boots", 9),
            ("", 10), ("   ", 10),
        ]
        let prompts = expected.map { "\"\($0.0)\"" }.joined(separator: ", ")
        let printed = try runRecipe("""
            local m <close> = kiri.models.default()
            for _, prompt in ipairs({\(prompts)}) do print(m:encode(prompt).class) end
            print(table.concat(m.classes, ","), table.concat(m.sample_shape, ","))
            """)
        let lines = printed.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.dropLast().map { Int($0) }, expected.map { $0.1 }, "\(zip(expected.map(\.0), lines).map { "\($0)=\($1)" })")
        XCTAssertEqual(lines.last, "t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot\t1,28,28")
    }

    func testUnknownPromptIsAnErrorListingTheClasses() throws {
        XCTAssertThrowsError(try runRecipe("local m = kiri.models.default()\nm:encode('giraffes')")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains(".lua:2: the default model knows no 'giraffes'; prompts name one of its classes: "
                + "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"), message)
        }
        XCTAssertThrowsError(try runRecipe("kiri.models.bundled('nope')")) { error in
            XCTAssertTrue("\(error)".contains("no bundled model 'nope' (bundled: fashion-mnist)"), "\(error)")
        }
    }
}
