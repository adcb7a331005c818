import Hummingbird

/// The web page at `/`: plain HTML, CSS and JavaScript embedded in the binary (no build step, nothing from a CDN),
/// and the OpenAPI document that describes the API it uses.
enum WebPage {
    static let files: [String: (bytes: [UInt8], type: String)] = [
        "/": (PackageResources.index_html, "text/html; charset=utf-8"),
        "/app.js": (PackageResources.app_js, "text/javascript; charset=utf-8"),
        "/style.css": (PackageResources.style_css, "text/css; charset=utf-8"),
        "/openapi.json": (PackageResources.openapi_json, "application/json"),
    ]

    /// Paths served without a token: the page and its assets hold no data.
    static func isPublic(_ path: String) -> Bool { files[path] != nil }

    static func addRoutes(to router: Router<BasicRequestContext>) {
        for (path, file) in files {
            router.get(RouterPath(path)) { _, _ in
                ApiResponse.bytes(file.bytes, type: file.type, headers: [.cacheControl: "no-cache"])
            }
        }
    }
}
