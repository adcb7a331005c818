// Every libpng call is made here, in a function that has called setjmp first: libpng's error function
// copies the message and longjmps back to that setjmp, so no longjmp ever crosses a Swift frame. State
// that must survive a longjmp lives on the heap (a reader or writer), never in locals set after setjmp.
// See PNGBridge.h.
#include "PNGBridge.h"

#include <png.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/// Text values longer than this are compressed (zTXt, or compressed iTXt).
enum { COMPRESS_ABOVE = 1024 };
/// The most libpng may allocate for one ancillary chunk, decompressed text included: a zTXt bomb stops here.
enum { CHUNK_MALLOC_MAX = 8 << 20 };
/// PNG keywords are 1 to 79 Latin-1 bytes (PNG specification, 11.3.4.3).
enum { KEYWORD_MAX = 79 };

typedef struct {
    jmp_buf jump;
    char message[256];      // libpng's, copied by on_error
    int savedErrno;         // errno when libpng failed, for write errors
} Failure;

static void on_error(png_structp png, png_const_charp message) {
    Failure *failure = png_get_error_ptr(png);
    failure->savedErrno = errno;
    snprintf(failure->message, sizeof failure->message, "%s", message);
    longjmp(failure->jump, 1);
}

/// libpng warns about recoverable damage (a bad CRC in an ancillary chunk, which it then drops); a library
/// never prints to stderr, so warnings are ignored.
static void on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

/// "'name': " and the formatted text, into `error`.
static void say(char *error, size_t errorSize, const char *name, const char *format, ...) {
    int prefix = snprintf(error, errorSize, "'%s': ", name);
    if (prefix < 0 || (size_t)prefix >= errorSize) return;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error + prefix, errorSize - (size_t)prefix, format, arguments);
    va_end(arguments);
}

// MARK: - Text encodings

/// Latin-1 bytes as UTF-8 into `out` (room for 2 * length); returns the bytes written.
static size_t latin1_to_utf8(const char *text, size_t length, char *out) {
    size_t written = 0;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x80) {
            out[written++] = (char)c;
        } else {
            out[written++] = (char)(0xC0 | (c >> 6));
            out[written++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return written;
}

/// UTF-8 as Latin-1 into `out` (room for length), or -1 if a character is above U+00FF.
static long utf8_to_latin1(const char *text, size_t length, char *out) {
    size_t written = 0;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x80) {
            out[written++] = (char)c;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < length && ((unsigned char)text[i + 1] & 0xC0) == 0x80) {
            out[written++] = (char)(((c & 0x03) << 6) | ((unsigned char)text[++i] & 0x3F));
        } else {
            return -1;
        }
    }
    return (long)written;
}

/// Whether Latin-1 `key` is a PNG keyword: 1 to 79 printable characters (32-126, 161-255), no leading,
/// trailing or consecutive spaces.
static int is_keyword(const char *key, size_t length) {
    if (length < 1 || length > KEYWORD_MAX || key[0] == ' ' || key[length - 1] == ' ') return 0;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 32 || (c > 126 && c < 161)) return 0;
        if (c == ' ' && key[i + 1] == ' ') return 0;
    }
    return 1;
}

// MARK: - Reading

struct KiriPNGReader {
    Failure failure;
    char *name;             // how messages call the file
    FILE *file;
    png_structp png;
    png_infop info;
    KiriPNGHeader header;
    int passes;
    KiriPNGText *text;
    char *textBytes;        // the UTF-8 keys and values `text` points into
    size_t textCount;
};

static uint32_t big_endian(const unsigned char *bytes) {
    return (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
}

KiriPNGStatus kiri_png_open(const char *path, const char *name, size_t byteLimit, KiriPNGReader **out,
                            KiriPNGHeader *header, char *error, size_t errorSize) {
    *out = NULL;
    memset(header, 0, sizeof *header);
    FILE *file = fopen(path, "rb");
    if (!file) {
        say(error, errorSize, name, "cannot open: %s", strerror(errno));
        return KIRI_PNG_ERROR;
    }
    // The signature, then IHDR's length, type, width and height: the side limit is checked here, before
    // libpng, so the message can give the size (png_set_user_limits below would only say "Invalid IHDR").
    unsigned char start[24];
    size_t got = fread(start, 1, sizeof start, file);
    if (got < 8 && ferror(file)) {
        say(error, errorSize, name, "cannot read: %s", strerror(errno));
        fclose(file);
        return KIRI_PNG_ERROR;
    }
    if (got < 8 || png_sig_cmp(start, 0, 8) != 0) {
        say(error, errorSize, name, "not a PNG file");
        fclose(file);
        return KIRI_PNG_ERROR;
    }
    if (got == sizeof start && memcmp(start + 12, "IHDR", 4) == 0) {
        uint32_t width = big_endian(start + 16), height = big_endian(start + 20);
        if (width > KIRI_PNG_MAX_SIDE || height > KIRI_PNG_MAX_SIDE) {
            say(error, errorSize, name, "%ux%u exceeds the %d-pixel side limit", width, height, KIRI_PNG_MAX_SIDE);
            fclose(file);
            return KIRI_PNG_ERROR;
        }
    }
    KiriPNGReader *reader = calloc(1, sizeof *reader);
    if (reader) reader->name = strdup(name);
    if (!reader || !reader->name) {
        say(error, errorSize, name, "not enough memory");
        kiri_png_close(reader);
        fclose(file);
        return KIRI_PNG_ERROR;
    }
    reader->file = file;
    if (fseek(file, 8, SEEK_SET) != 0) {
        say(error, errorSize, name, "cannot read: %s", strerror(errno));
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    if (setjmp(reader->failure.jump)) {
        say(error, errorSize, name, "truncated or corrupt (libpng: %s)", reader->failure.message);
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    reader->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader->failure, on_error, on_warning);
    if (reader->png) reader->info = png_create_info_struct(reader->png);
    if (!reader->info) {
        say(error, errorSize, name, "not enough memory");
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    png_structp png = reader->png;
    png_infop info = reader->info;
    png_init_io(png, file);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, KIRI_PNG_MAX_SIDE, KIRI_PNG_MAX_SIDE);
    png_set_chunk_malloc_max(png, CHUNK_MALLOC_MAX);
    png_read_info(png, info);
    png_set_expand(png);        // palette to RGB, grey below 8 bits to 8, tRNS to an alpha channel
    png_set_scale_16(png);      // 16 bits to 8 as round(v * 255 / 65535), not just the high byte
    png_set_packing(png);
    reader->passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    KiriPNGHeader *decoded = &reader->header;
    decoded->width = png_get_image_width(png, info);
    decoded->height = png_get_image_height(png, info);
    decoded->channels = png_get_channels(png, info);
    decoded->byteCount = (size_t)decoded->width * decoded->height * (size_t)decoded->channels;
    if (png_get_bit_depth(png, info) != 8 || png_get_rowbytes(png, info) != (size_t)decoded->width * decoded->channels) {
        say(error, errorSize, name, "unexpected pixel layout after conversion to 8 bits");
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    *header = *decoded;
    if (decoded->byteCount > byteLimit) {
        say(error, errorSize, name, "%ux%u with %d channels needs %zu bytes, over the limit of %zu", decoded->width,
            decoded->height, decoded->channels, decoded->byteCount, byteLimit);
        kiri_png_close(reader);
        return KIRI_PNG_TOO_LARGE;
    }
    *out = reader;
    return KIRI_PNG_OK;
}

/// The text chunks libpng has read so far, converted to UTF-8 into one block the reader owns.
static int collect_text(KiriPNGReader *reader) {
    png_textp chunks = NULL;
    int count = png_get_text(reader->png, reader->info, &chunks, NULL);
    if (count <= 0 || !chunks) return 1;
    size_t bytes = 0;
    for (int i = 0; i < count; i++) {
        bytes += 2 * strlen(chunks[i].key) + 1;
        bytes += chunks[i].compression > 0 ? chunks[i].itxt_length : 2 * chunks[i].text_length;
    }
    reader->text = calloc((size_t)count, sizeof *reader->text);
    reader->textBytes = malloc(bytes + 1);
    if (!reader->text || !reader->textBytes) return 0;
    char *cursor = reader->textBytes;
    for (int i = 0; i < count; i++) {
        const png_text *chunk = &chunks[i];
        KiriPNGText *text = &reader->text[i];
        text->key = cursor;
        text->keyLength = latin1_to_utf8(chunk->key, strlen(chunk->key), cursor);
        cursor += text->keyLength;
        text->value = cursor;
        if (!chunk->text) {
            text->valueLength = 0;
        } else if (chunk->compression > 0) {    // iTXt, compressed or not: UTF-8 already
            memcpy(cursor, chunk->text, chunk->itxt_length);
            text->valueLength = chunk->itxt_length;
        } else {                                // tEXt or zTXt: Latin-1
            text->valueLength = latin1_to_utf8(chunk->text, chunk->text_length, cursor);
        }
        cursor += text->valueLength;
    }
    reader->textCount = (size_t)count;
    return 1;
}

KiriPNGStatus kiri_png_decode(KiriPNGReader *reader, uint8_t *pixels, size_t size, const KiriPNGText **text,
                              size_t *textCount, char *error, size_t errorSize) {
    *text = NULL;
    *textCount = 0;
    if (size < reader->header.byteCount) {
        say(error, errorSize, reader->name, "internal error: a %zu-byte buffer for %zu bytes of pixels", size,
            reader->header.byteCount);
        return KIRI_PNG_ERROR;
    }
    if (setjmp(reader->failure.jump)) {
        say(error, errorSize, reader->name, "truncated or corrupt (libpng: %s)", reader->failure.message);
        return KIRI_PNG_ERROR;
    }
    size_t rowBytes = (size_t)reader->header.width * (size_t)reader->header.channels;
    // Interlaced images take one sweep over every row per pass; each pass fills in more of each row.
    for (int pass = 0; pass < reader->passes; pass++) {
        for (uint32_t row = 0; row < reader->header.height; row++) png_read_row(reader->png, pixels + row * rowBytes, NULL);
    }
    png_read_end(reader->png, reader->info);    // text chunks after the pixels join those before
    if (!collect_text(reader)) {
        say(error, errorSize, reader->name, "not enough memory for its text chunks");
        return KIRI_PNG_ERROR;
    }
    *text = reader->text;
    *textCount = reader->textCount;
    return KIRI_PNG_OK;
}

void kiri_png_close(KiriPNGReader *reader) {
    if (!reader) return;
    if (reader->png) png_destroy_read_struct(&reader->png, reader->info ? &reader->info : NULL, NULL);
    if (reader->file) fclose(reader->file);
    free(reader->name);
    free(reader->text);
    free(reader->textBytes);
    free(reader);
}

// MARK: - Writing

typedef struct {
    Failure failure;
    png_text *chunks;
    size_t chunkCount;
    char *chunkBytes;       // NUL-terminated keys and values `chunks` points into
    char *temporary;        // the temporary file's path, while it exists
    FILE *file;
    png_structp png;
    png_infop info;
} Writer;

int kiri_png_text_problem(const KiriPNGText *text, char *error, size_t errorSize) {
    char key[2 * KEYWORD_MAX];     // UTF-8 is never shorter than its Latin-1
    long keyLength = text->keyLength <= 2 * KEYWORD_MAX ? utf8_to_latin1(text->key, text->keyLength, key) : -1;
    if (keyLength < 0 || !is_keyword(key, (size_t)keyLength)) {
        snprintf(error, errorSize, "text key '%.*s' is not a PNG keyword (1 to %d printable Latin-1 characters, "
                 "without leading, trailing or double spaces)", (int)text->keyLength, text->key, KEYWORD_MAX);
        return 1;
    }
    if (text->valueLength > 0 && memchr(text->value, 0, text->valueLength)) {
        snprintf(error, errorSize, "the value of text key '%.*s' contains a NUL byte", (int)text->keyLength, text->key);
        return 1;
    }
    return 0;
}

/// Checks and converts the text chunks into `writer->chunks`; 0 with a message if one is unusable.
static int prepare_text(Writer *writer, const KiriPNGText *text, size_t count, const char *name, char *error,
                        size_t errorSize) {
    if (count == 0) return 1;
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++) bytes += text[i].keyLength + text[i].valueLength + 2;
    writer->chunks = calloc(count, sizeof *writer->chunks);
    writer->chunkBytes = malloc(bytes);
    if (!writer->chunks || !writer->chunkBytes) {
        say(error, errorSize, name, "not enough memory for its text chunks");
        return 0;
    }
    char *cursor = writer->chunkBytes;
    for (size_t i = 0; i < count; i++) {
        const KiriPNGText *item = &text[i];
        png_text *chunk = &writer->chunks[i];
        char reason[256];
        if (kiri_png_text_problem(item, reason, sizeof reason)) {
            say(error, errorSize, name, "%s", reason);
            return 0;
        }
        chunk->key = cursor;
        cursor += utf8_to_latin1(item->key, item->keyLength, cursor);
        *cursor++ = 0;
        int compress = item->valueLength > COMPRESS_ABOVE;
        long valueLength = utf8_to_latin1(item->value, item->valueLength, cursor);
        if (valueLength >= 0) {
            chunk->compression = compress ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE;
            chunk->text_length = (size_t)valueLength;
        } else {
            memcpy(cursor, item->value, item->valueLength);
            valueLength = (long)item->valueLength;
            chunk->compression = compress ? PNG_ITXT_COMPRESSION_zTXt : PNG_ITXT_COMPRESSION_NONE;
            chunk->itxt_length = item->valueLength;
        }
        chunk->text = cursor;
        cursor += valueLength;
        *cursor++ = 0;
    }
    writer->chunkCount = count;
    return 1;
}

/// Frees what the writer holds and removes its temporary file if it is still there.
static void finish(Writer *writer) {
    if (writer->png) png_destroy_write_struct(&writer->png, writer->info ? &writer->info : NULL);
    if (writer->file) fclose(writer->file);
    if (writer->temporary) unlink(writer->temporary);
    free(writer->temporary);
    free(writer->chunks);
    free(writer->chunkBytes);
    free(writer);
}

/// Opens a new temporary file in `path`'s folder (so the final rename stays on one file system).
static int open_temporary(Writer *writer, const char *path, const char *name, char *error, size_t errorSize) {
    const char *slash = strrchr(path, '/');
    size_t folderLength = slash ? (size_t)(slash - path) + 1 : 0;
    static const char pattern[] = ".kiri-png-XXXXXX";
    writer->temporary = malloc(folderLength + sizeof pattern);
    if (!writer->temporary) {
        say(error, errorSize, name, "not enough memory");
        return 0;
    }
    memcpy(writer->temporary, path, folderLength);
    memcpy(writer->temporary + folderLength, pattern, sizeof pattern);
    int descriptor = mkstemp(writer->temporary);
    if (descriptor < 0) {
        say(error, errorSize, name, "cannot create a file in its folder: %s", strerror(errno));
        free(writer->temporary);
        writer->temporary = NULL;
        return 0;
    }
    fchmod(descriptor, 0644);
    writer->file = fdopen(descriptor, "wb");
    if (!writer->file) {
        say(error, errorSize, name, "cannot write: %s", strerror(errno));
        close(descriptor);
        return 0;
    }
    return 1;
}

KiriPNGStatus kiri_png_write(const char *path, const char *name, const uint8_t *pixels, uint32_t width,
                             uint32_t height, int channels, const KiriPNGText *text, size_t textCount, char *error,
                             size_t errorSize) {
    static const int colorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                     PNG_COLOR_TYPE_RGB_ALPHA};
    if (channels < 1 || channels > 4) {
        say(error, errorSize, name, "cannot write %d channels (1 grey, 2 grey+alpha, 3 RGB or 4 RGBA)", channels);
        return KIRI_PNG_ERROR;
    }
    if (width < 1 || height < 1 || width > KIRI_PNG_MAX_SIDE || height > KIRI_PNG_MAX_SIDE) {
        say(error, errorSize, name, "cannot write a %ux%u image (each side must be 1 to %d pixels)", width, height,
            KIRI_PNG_MAX_SIDE);
        return KIRI_PNG_ERROR;
    }
    Writer *writer = calloc(1, sizeof *writer);
    if (!writer) {
        say(error, errorSize, name, "not enough memory");
        return KIRI_PNG_ERROR;
    }
    if (!prepare_text(writer, text, textCount, name, error, errorSize) ||
        !open_temporary(writer, path, name, error, errorSize)) {
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    if (setjmp(writer->failure.jump)) {
        // libpng's own fwrite failure says only "Write Error"; errno says why (no space, ...).
        int saved = strcmp(writer->failure.message, "Write Error") == 0 ? writer->failure.savedErrno : 0;
        say(error, errorSize, name, "cannot write (libpng: %s%s%s)", writer->failure.message, saved ? ": " : "",
            saved ? strerror(saved) : "");
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    errno = 0;
    writer->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &writer->failure, on_error, on_warning);
    if (writer->png) writer->info = png_create_info_struct(writer->png);
    if (!writer->info) {
        say(error, errorSize, name, "not enough memory");
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    png_structp png = writer->png;
    png_infop info = writer->info;
    png_init_io(png, writer->file);
    png_set_user_limits(png, KIRI_PNG_MAX_SIDE, KIRI_PNG_MAX_SIDE);
    png_set_IHDR(png, info, width, height, 8, colorTypes[channels - 1], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (writer->chunkCount > 0) png_set_text(png, info, writer->chunks, (int)writer->chunkCount);
    png_write_info(png, info);
    size_t rowBytes = (size_t)width * (size_t)channels;
    for (uint32_t row = 0; row < height; row++) png_write_row(png, pixels + row * rowBytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&writer->png, &writer->info);

    // Flushed and synced before the rename, so the name never points at a partly written file.
    FILE *file = writer->file;
    writer->file = NULL;
    int failed = fflush(file) != 0 || fsync(fileno(file)) != 0;
    int savedErrno = errno;
    failed |= fclose(file) != 0;
    if (failed || rename(writer->temporary, path) != 0) {
        say(error, errorSize, name, "cannot write: %s", strerror(failed && savedErrno ? savedErrno : errno));
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    free(writer->temporary);
    writer->temporary = NULL;
    finish(writer);
    return KIRI_PNG_OK;
}
