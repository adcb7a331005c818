import XCTest
@testable import KiriModels

/// The header and config parser against RFC 8259's grammar.
final class StrictJSONTests: XCTestCase {
    func parse(_ text: String) throws -> JSONValue { try StrictJSONParser.parse(Array(text.utf8)) }

    func assertInvalid(_ text: String, _ fragment: String, line: UInt = #line) {
        XCTAssertThrowsError(try parse(text), line: line) { error in
            XCTAssertTrue("\(error)".contains(fragment), "'\(error)' lacks '\(fragment)'", line: line)
        }
    }

    func testValuesAndOrder() throws {
        let value = try parse(" {\"b\": [1, -2.5e3, true, false, null], \"a\": {\"\": \"\"}} ")
        guard case .object(let members) = value else { return XCTFail("\(value)") }
        XCTAssertEqual(members.map(\.key), ["b", "a"])
        XCTAssertEqual(value["b"], .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        XCTAssertEqual(value["a"]?[""], .string(""))
        XCTAssertEqual(JSONValue.number("-2.5e3").double, -2500)
    }

    func testIntegersKeepEveryDigit() throws {
        XCTAssertEqual(try parse("9223372036854775807").integer, Int.max)
        XCTAssertNil(try parse("9223372036854775808").integer)
        XCTAssertTrue(try parse("9223372036854775808").isIntegerLiteral)
        XCTAssertNil(try parse("1.0").integer)
        XCTAssertEqual(try parse("-0").integer, 0)
    }

    func testStringEscapes() throws {
        XCTAssertEqual(try parse(#""a\"b\\c\/d\b\f\n\r\t""#), .string("a\"b\\c/d\u{8}\u{c}\n\r\t"))
        XCTAssertEqual(try parse(#""\u00e9\u4e2d\ud83d\ude00\u0000""#), .string("é中😀\u{0}"))
        XCTAssertEqual(try parse("\"é中😀\""), .string("é中😀"))
    }

    func testInvalidSyntax() {
        assertInvalid("", "unexpected end of JSON")
        assertInvalid("01", "leading zero")
        assertInvalid("-", "invalid number")
        assertInvalid("1.", "no digits after '.'")
        assertInvalid("1e", "no digits in exponent")
        assertInvalid("+1", "unexpected character '+'")
        assertInvalid("tru", "invalid literal (expected true)")
        assertInvalid("[1,]", "unexpected character ']'")
        assertInvalid("{\"a\" 1}", "expected ':' after key 'a'")
        assertInvalid("{1: 2}", "expected a string key")
        assertInvalid("\"a\nb\"", "control character 0xa in string")
        assertInvalid("\"\\x\"", "invalid escape '\\x'")
        assertInvalid("\"\\ud83d\"", "lone UTF-16 surrogate")
        assertInvalid("\"\\ude00\"", "lone UTF-16 surrogate")
        assertInvalid("\"\\u12zz\"", "invalid hex digit")
        assertInvalid("\"\\u12", "truncated \\u escape")
        assertInvalid("{\"a\": 1,", "unexpected end of JSON (expected a string key)")
        assertInvalid("\"abc", "unterminated string")
        assertInvalid("[1] x", "unexpected content after the JSON value at byte 4")
        assertInvalid("{\"a\": 1, \"a\": 2}", "duplicate key 'a' at byte 9")
    }

    func testNestingIsBounded() throws {
        XCTAssertNoThrow(try parse(String(repeating: "[", count: 128) + String(repeating: "]", count: 128)))
        assertInvalid(String(repeating: "[", count: 129) + String(repeating: "]", count: 129), "nesting deeper than 128 levels")
    }

    func testUTF8Validation() {
        func valid(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { StrictJSONParser.isValidUTF8($0) } }
        XCTAssertTrue(valid(Array("é中😀".utf8)))
        XCTAssertFalse(valid([0xC0, 0xAF]), "overlong")
        XCTAssertFalse(valid([0xED, 0xA0, 0x80]), "UTF-16 surrogate encoded in UTF-8")
        XCTAssertFalse(valid([0xE4, 0xB8]), "truncated")
        XCTAssertFalse(valid([0xFF]))
    }
}
