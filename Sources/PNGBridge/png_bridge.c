// Every libpng call is made here, in a function that has called setjmp first: libpng's error function
// copies the message and longjmps back to that setjmp, so no longjmp ever crosses a Swift frame. State
// that must survive a longjmp lives on the heap (a reader or writer), never in locals set after setjmp.
// Text chunks are read by a walk of our own over the file, with zlib, so that every byte they take is counted
// against the caller's limit; libpng only decodes pixels. See PNGBridge.h.
#include "PNGBridge.h"

#include <png.h>
#include <zlib.h>

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
/// PNG keywords are 1 to 79 Latin-1 bytes (PNG specification, 11.3.4.3).
enum { KEYWORD_MAX = 79 };

typedef struct {
    jmp_buf jump;
    char message[256];      // libpng's, copied by on_error
} Failure;

static void on_error(png_structp png, png_const_charp message) {
    Failure *failure = png_get_error_ptr(png);
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

// MARK: - Text chunks

/// Text chunks as UTF-8, and what they hold of the caller's byte limit.
struct KiriPNGTextList {
    KiriPNGText *chunks;    // each chunk's key and value share one block, which starts at its key
    size_t capacity;        // bytes allocated for `chunks`
    size_t count;
    size_t limit, held;     // held: bytes allocated for text now (chunk data as read, values as inflated, this list)
    int outOfMemory;        // set when malloc failed below the limit, for the message
};

/// Grows `*block` to at least `wanted` bytes, doubling as far as the limit allows; 0 if `wanted` would pass the
/// limit or memory runs out.
static int grow(KiriPNGTextList *list, void **block, size_t *capacity, size_t wanted) {
    if (wanted <= *capacity) return 1;
    size_t room = list->limit - list->held, step = wanted - *capacity;
    if (step > room) return 0;
    if (step < *capacity) step = *capacity < room ? *capacity : room;
    void *grown = realloc(*block, *capacity + step);
    if (!grown) {
        list->outOfMemory = 1;
        return 0;
    }
    list->held += step;
    *block = grown;
    *capacity += step;
    return 1;
}

/// One chunk's key and value while they are read: the key, then the value as it is copied or inflated.
typedef struct {
    char *bytes;
    size_t size, capacity;
} Text;

/// Appends `count` bytes to `text` as UTF-8, converted from Latin-1 when `latin1`; 0 if they would pass the limit.
static int append(KiriPNGTextList *list, Text *text, const unsigned char *bytes, size_t count, int latin1) {
    size_t needed = count;
    if (latin1) {
        for (size_t i = 0; i < count; i++) needed += bytes[i] >> 7;
    }
    if (!grow(list, (void **)&text->bytes, &text->capacity, text->size + needed)) return 0;
    if (latin1) {
        text->size += latin1_to_utf8((const char *)bytes, count, text->bytes + text->size);
    } else {
        memcpy(text->bytes + text->size, bytes, count);
        text->size += count;
    }
    return 1;
}

/// Inflates the zlib stream `data` onto `text` a window at a time, so a zip bomb stops at the limit having
/// allocated no more than it. 1 when the stream is complete, 0 when it is corrupt or cut short, -1 when its
/// output would pass the limit.
static int inflate_onto(KiriPNGTextList *list, Text *text, const unsigned char *data, size_t length, int latin1) {
    z_stream stream = {0};
    if (inflateInit(&stream) != Z_OK) {
        list->outOfMemory = 1;
        return -1;
    }
    stream.next_in = (Bytef *)data;
    stream.avail_in = (uInt)length;     // below 2^31, as every chunk length
    unsigned char window[1 << 14];
    int status, fits;
    do {
        stream.next_out = window;
        stream.avail_out = sizeof window;
        status = inflate(&stream, Z_NO_FLUSH);
        fits = append(list, text, window, sizeof window - stream.avail_out, latin1);
    } while (status == Z_OK && fits);
    inflateEnd(&stream);
    return !fits ? -1 : status == Z_STREAM_END;
}

/// Adds a tEXt, zTXt or iTXt chunk's key and value (`length` > 0 bytes of `data`) to `list`, as PNG specification
/// 11.3.4 lays them out. A malformed chunk is dropped, as libpng drops it (with a warning, which a library does
/// not print). 0 if the text would pass the limit.
static int add_text(KiriPNGTextList *list, const char *type, const unsigned char *data, size_t length) {
    const unsigned char *nul = memchr(data, 0, length < KEYWORD_MAX + 1 ? length : KEYWORD_MAX + 1);
    if (!nul || nul == data) return 1;
    size_t at = (size_t)(nul - data) + 1;
    int compressed = 0, latin1 = 1;
    if (strcmp(type, "zTXt") == 0) {
        if (at >= length || data[at] != 0) return 1;    // compression method 0 (deflate) is the only one
        compressed = 1;
        at++;
    } else if (strcmp(type, "iTXt") == 0) {
        if (at + 2 > length || data[at] > 1 || (data[at] == 1 && data[at + 1] != 0)) return 1;
        compressed = data[at];
        latin1 = 0;
        at += 2;
        for (int field = 0; field < 2; field++) {       // the language tag, then the translated key
            const unsigned char *end = memchr(data + at, 0, length - at);
            if (!end) return 1;
            at = (size_t)(end - data) + 1;
        }
    }
    Text text = {0};
    int fits = append(list, &text, data, (size_t)(nul - data), 1), complete = 1;
    size_t keyLength = text.size;
    if (fits && compressed) {
        complete = inflate_onto(list, &text, data + at, length - at, latin1);
        fits = complete >= 0;
    } else if (fits) {
        fits = append(list, &text, data + at, length - at, latin1);
    }
    fits = fits && grow(list, (void **)&list->chunks, &list->capacity, (list->count + 1) * sizeof *list->chunks);
    if (!fits || !complete) {
        list->held -= text.capacity;
        free(text.bytes);
        return fits;
    }
    char *fitted = realloc(text.bytes, text.size);     // gives back what doubling left unused
    if (fitted) {
        list->held -= text.capacity - text.size;
        text.bytes = fitted;
    }
    list->chunks[list->count++] = (KiriPNGText){text.bytes, keyLength, text.bytes + keyLength, text.size - keyLength};
    return 1;
}

static void free_text(KiriPNGTextList *list) {
    for (size_t i = 0; i < list->count; i++) free((void *)list->chunks[i].key);
    free(list->chunks);
}

static uint32_t big_endian(const unsigned char *bytes) {
    return (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
}

/// Walks `file` from its signature to IEND and collects its text chunks into `list`. Each chunk's length is
/// checked against the bytes left in the file before the chunk is read, and only text chunks are held: the
/// others, IDAT included, are read a buffer at a time for their CRC and never inflated. So the walk takes time
/// in proportion to the file's size, and memory within the limit.
static int walk(FILE *file, const char *name, KiriPNGTextList *list, char *error, size_t errorSize) {
    unsigned char head[8];
    size_t got = fread(head, 1, sizeof head, file);
    struct stat status;
    if ((got < sizeof head && ferror(file)) || fstat(fileno(file), &status) != 0) {
        say(error, errorSize, name, "cannot read: %s", strerror(errno));
        return 0;
    }
    if (got < sizeof head || png_sig_cmp(head, 0, 8) != 0) {
        say(error, errorSize, name, "not a PNG file");
        return 0;
    }
    for (long long offset = 8;;) {
        if (fread(head, 1, sizeof head, file) != sizeof head) {
            say(error, errorSize, name, "truncated or corrupt: it ends without an IEND chunk");
            return 0;
        }
        uint32_t length = big_endian(head);
        char type[5] = {0};
        memcpy(type, head + 4, 4);
        int letters = 1;
        for (int i = 0; i < 4; i++) letters &= (head[4 + i] | 0x20) >= 'a' && (head[4 + i] | 0x20) <= 'z';
        if (!letters || (offset == 8 && (strcmp(type, "IHDR") != 0 || length != 13))) {
            say(error, errorSize, name, "truncated or corrupt: %s at byte %lld",
                letters ? "it does not start with a 13-byte IHDR chunk" : "an invalid chunk type", offset);
            return 0;
        }
        long long left = (long long)status.st_size - offset - 12;     // after this chunk's length, type and CRC
        if (length > PNG_UINT_31_MAX || length > left) {
            say(error, errorSize, name, "truncated or corrupt: its %s chunk at byte %lld declares %u bytes, but only "
                "%lld are left in the file", type, offset, length, left < 0 ? 0 : left);
            return 0;
        }
        int isText = strcmp(type, "tEXt") == 0 || strcmp(type, "zTXt") == 0 || strcmp(type, "iTXt") == 0;
        void *data = NULL;
        size_t held = 0;
        int fits = !isText || grow(list, &data, &held, length), read = fits;
        uLong crc = crc32(0, head + 4, 4);
        if (data) {
            read = fread(data, 1, length, file) == length;
            crc = crc32(crc, data, length);
        } else {
            unsigned char buffer[1 << 14];
            size_t part;
            for (size_t rest = length; read && rest > 0; rest -= part) {
                part = rest < sizeof buffer ? rest : sizeof buffer;
                read = fread(buffer, 1, part, file) == part;
                crc = crc32(crc, buffer, (uInt)part);
            }
        }
        unsigned char stored[4];
        read = read && fread(stored, 1, sizeof stored, file) == sizeof stored;
        int intact = read && big_endian(stored) == crc, critical = !(head[4] & 0x20);
        if (fits && intact && data) fits = add_text(list, type, data, length);
        free(data);
        list->held -= held;
        if (!fits) {
            if (list->outOfMemory) say(error, errorSize, name, "not enough memory for its text chunks");
            else say(error, errorSize, name, "its text chunks take more than the limit of %zu bytes (as read and as "
                     "inflated), at the %s chunk at byte %lld", list->limit, type, offset);
            return 0;
        }
        if (!read) {
            say(error, errorSize, name, "cannot read its %s chunk at byte %lld: %s", type, offset,
                ferror(file) ? strerror(errno) : "the file is shorter than it was");
            return 0;
        }
        // libpng drops an ancillary chunk with a bad CRC and fails on a critical one.
        if (!intact && critical) {
            say(error, errorSize, name, "truncated or corrupt: its %s chunk at byte %lld has a CRC error", type, offset);
            return 0;
        }
        if (strcmp(type, "IEND") == 0) return 1;
        offset += 12 + (long long)length;
    }
}

KiriPNGStatus kiri_png_read_text(const char *path, const char *name, size_t byteLimit, KiriPNGTextList **out,
                                 const KiriPNGText **text, size_t *textCount, char *error, size_t errorSize) {
    *out = NULL;
    *text = NULL;
    *textCount = 0;
    FILE *file = fopen(path, "rb");
    if (!file) {
        say(error, errorSize, name, "cannot open: %s", strerror(errno));
        return KIRI_PNG_ERROR;
    }
    KiriPNGTextList *list = calloc(1, sizeof *list);
    if (!list) say(error, errorSize, name, "not enough memory");
    else list->limit = byteLimit;
    int walked = list && walk(file, name, list, error, errorSize);
    fclose(file);
    if (!walked) {
        kiri_png_free_text(list);
        return KIRI_PNG_ERROR;
    }
    *out = list;
    *text = list->chunks;
    *textCount = list->count;
    return KIRI_PNG_OK;
}

void kiri_png_free_text(KiriPNGTextList *list) {
    if (!list) return;
    free_text(list);
    free(list);
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
    KiriPNGTextList text;
};

KiriPNGStatus kiri_png_open(const char *path, const char *name, size_t byteLimit, KiriPNGReader **out,
                            KiriPNGHeader *header, char *error, size_t errorSize) {
    *out = NULL;
    memset(header, 0, sizeof *header);
    FILE *file = fopen(path, "rb");
    if (!file) {
        say(error, errorSize, name, "cannot open: %s", strerror(errno));
        return KIRI_PNG_ERROR;
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
    reader->text.limit = byteLimit;
    if (!walk(file, name, &reader->text, error, errorSize)) {
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    // IHDR's width and height (the walk found IHDR first): the side limit is checked here, before libpng, so the
    // message can give the size (png_set_user_limits below would only say "Invalid IHDR").
    unsigned char size[8];
    if (fseek(file, 16, SEEK_SET) != 0 || fread(size, 1, sizeof size, file) != sizeof size || fseek(file, 8, SEEK_SET) != 0) {
        say(error, errorSize, name, "cannot read: %s", strerror(errno));
        kiri_png_close(reader);
        return KIRI_PNG_ERROR;
    }
    uint32_t width = big_endian(size), height = big_endian(size + 4);
    if (width > KIRI_PNG_MAX_SIDE || height > KIRI_PNG_MAX_SIDE) {
        say(error, errorSize, name, "%ux%u exceeds the %d-pixel side limit", width, height, KIRI_PNG_MAX_SIDE);
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
    // The walk has read the text within the limit: libpng skips every ancillary chunk but tRNS, which the pixels
    // need, so it neither copies the text again nor keeps chunks (sPLT, unknown ones) that the limit never saw.
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    // Nor does libpng's own 8 MB cap on a chunk's length apply: it would refuse a long text chunk that libpng only
    // skips, and the walk has checked every length against the file.
    png_set_chunk_malloc_max(png, 0);
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
    size_t textBytes = reader->text.held;
    if (decoded->byteCount > byteLimit - textBytes) {
        if (textBytes == 0) {
            say(error, errorSize, name, "%ux%u with %d channels needs %zu bytes, over the limit of %zu", decoded->width,
                decoded->height, decoded->channels, decoded->byteCount, byteLimit);
        } else {
            say(error, errorSize, name, "%ux%u with %d channels needs %zu bytes, over the %zu its %zu bytes of text "
                "leave of the limit of %zu", decoded->width, decoded->height, decoded->channels, decoded->byteCount,
                byteLimit - textBytes, textBytes, byteLimit);
        }
        kiri_png_close(reader);
        return KIRI_PNG_TOO_LARGE;
    }
    *out = reader;
    return KIRI_PNG_OK;
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
    png_read_end(reader->png, NULL);    // checks the rest of the image data
    *text = reader->text.chunks;
    *textCount = reader->text.count;
    return KIRI_PNG_OK;
}

void kiri_png_close(KiriPNGReader *reader) {
    if (!reader) return;
    if (reader->png) png_destroy_read_struct(&reader->png, reader->info ? &reader->info : NULL, NULL);
    if (reader->file) fclose(reader->file);
    free(reader->name);
    free_text(&reader->text);
    free(reader);
}

// MARK: - Writing

typedef struct {
    Failure failure;
    png_text *chunks;
    size_t chunkCount;
    char *chunkBytes;       // NUL-terminated keys and values `chunks` points into
    png_structp png;
    png_infop info;
    uint8_t *bytes;         // the encoded file so far
    size_t size, capacity;
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
static int prepare_text(Writer *writer, const KiriPNGText *text, size_t count, char *error, size_t errorSize) {
    if (count == 0) return 1;
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++) bytes += text[i].keyLength + text[i].valueLength + 2;
    writer->chunks = calloc(count, sizeof *writer->chunks);
    writer->chunkBytes = malloc(bytes);
    if (!writer->chunks || !writer->chunkBytes) {
        snprintf(error, errorSize, "not enough memory for its text chunks");
        return 0;
    }
    char *cursor = writer->chunkBytes;
    for (size_t i = 0; i < count; i++) {
        const KiriPNGText *item = &text[i];
        png_text *chunk = &writer->chunks[i];
        if (kiri_png_text_problem(item, error, errorSize)) return 0;
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

/// libpng's output, appended to the writer's buffer.
static void on_write(png_structp png, png_bytep data, size_t length) {
    Writer *writer = png_get_io_ptr(png);
    if (length > writer->capacity - writer->size) {
        size_t capacity = writer->size + length > 2 * writer->capacity ? writer->size + length : 2 * writer->capacity;
        uint8_t *grown = realloc(writer->bytes, capacity);
        if (!grown) png_error(png, "not enough memory");
        writer->bytes = grown;
        writer->capacity = capacity;
    }
    memcpy(writer->bytes + writer->size, data, length);
    writer->size += length;
}

/// Memory needs no flushing; libpng's default flush would take the writer for a FILE.
static void on_flush(png_structp png) {
    (void)png;
}

/// Frees what the writer holds.
static void finish(Writer *writer) {
    if (writer->png) png_destroy_write_struct(&writer->png, writer->info ? &writer->info : NULL);
    free(writer->chunks);
    free(writer->chunkBytes);
    free(writer->bytes);
    free(writer);
}

KiriPNGStatus kiri_png_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                              const KiriPNGText *text, size_t textCount, uint8_t **bytes, size_t *size, char *error,
                              size_t errorSize) {
    static const int colorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                     PNG_COLOR_TYPE_RGB_ALPHA};
    *bytes = NULL;
    *size = 0;
    if (channels < 1 || channels > 4) {
        snprintf(error, errorSize, "cannot write %d channels (1 grey, 2 grey+alpha, 3 RGB or 4 RGBA)", channels);
        return KIRI_PNG_ERROR;
    }
    if (width < 1 || height < 1 || width > KIRI_PNG_MAX_SIDE || height > KIRI_PNG_MAX_SIDE) {
        snprintf(error, errorSize, "cannot write a %ux%u image (each side must be 1 to %d pixels)", width, height,
                 KIRI_PNG_MAX_SIDE);
        return KIRI_PNG_ERROR;
    }
    Writer *writer = calloc(1, sizeof *writer);
    if (!writer) {
        snprintf(error, errorSize, "not enough memory");
        return KIRI_PNG_ERROR;
    }
    if (!prepare_text(writer, text, textCount, error, errorSize)) {
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    if (setjmp(writer->failure.jump)) {
        snprintf(error, errorSize, "cannot write (libpng: %s)", writer->failure.message);
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    writer->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &writer->failure, on_error, on_warning);
    if (writer->png) writer->info = png_create_info_struct(writer->png);
    if (!writer->info) {
        snprintf(error, errorSize, "not enough memory");
        finish(writer);
        return KIRI_PNG_ERROR;
    }
    png_structp png = writer->png;
    png_infop info = writer->info;
    png_set_write_fn(png, writer, on_write, on_flush);
    png_set_user_limits(png, KIRI_PNG_MAX_SIDE, KIRI_PNG_MAX_SIDE);
    png_set_IHDR(png, info, width, height, 8, colorTypes[channels - 1], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (writer->chunkCount > 0) png_set_text(png, info, writer->chunks, (int)writer->chunkCount);
    png_write_info(png, info);
    size_t rowBytes = (size_t)width * (size_t)channels;
    for (uint32_t row = 0; row < height; row++) png_write_row(png, pixels + row * rowBytes);
    png_write_end(png, NULL);
    *bytes = writer->bytes;
    *size = writer->size;
    writer->bytes = NULL;
    finish(writer);
    return KIRI_PNG_OK;
}

void kiri_png_free(uint8_t *bytes) {
    free(bytes);
}

