import Foundation
import KiriImage

/// What a PNG carries so that `kiri run --from image.png` can make it again: the recipe's name, its
/// whole source and its arguments, beside the A1111 `parameters` text the recipe writes itself.
public struct RecipeProvenance: Equatable, Sendable {
    public static let recipeKey = "kiri-recipe"
    public static let sourceKey = "kiri-recipe-source"
    public static let argumentsKey = "kiri-arguments"
    public static let versionKey = "kiri-version"

    public var recipe: String
    public var source: String
    public var arguments: [String]

    public init(recipe: String, source: String, arguments: [String]) {
        self.recipe = recipe
        self.source = source
        self.arguments = arguments
    }

    /// The text chunks, in the order they are written.
    public var text: [(key: String, value: String)] {
        let encoded = (try? JSONEncoder().encode(arguments)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        return [(Self.recipeKey, recipe), (Self.argumentsKey, encoded), (Self.versionKey, KiriVersion.string),
                (Self.sourceKey, source)]
    }

    /// Reads them back from a PNG Kiri wrote.
    public init(image path: String) throws {
        let image: PNGImage
        do {
            image = try PNGImage.read(path: path)
        } catch {
            throw ProvenanceError(message: "\(error)")
        }
        try self.init(text: image.text.map { ($0.key, $0.value) }, file: path)
    }

    /// Reads them back from a PNG's text chunks; `file` names the image in errors.
    public init(text: [(key: String, value: String)], file: String) throws(ProvenanceError) {
        func value(_ key: String) throws(ProvenanceError) -> String {
            guard let found = text.first(where: { $0.key == key }) else {
                throw ProvenanceError(message: "'\(file)' has no '\(key)' text chunk, so it does not say which recipe made it "
                    + "(only PNGs written by Kiri recipes do)")
            }
            return found.value
        }
        recipe = try value(Self.recipeKey)
        source = try value(Self.sourceKey)
        guard let arguments = try? JSONDecoder().decode([String].self, from: Data(try value(Self.argumentsKey).utf8)) else {
            throw ProvenanceError(message: "'\(file)': its '\(Self.argumentsKey)' text chunk is not a JSON list of strings")
        }
        self.arguments = arguments
    }
}

public struct ProvenanceError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
