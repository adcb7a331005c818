public enum KiriVersion {
    public static let string = "0.1.0"
}
