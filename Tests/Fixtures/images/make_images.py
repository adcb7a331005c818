#!/usr/bin/env python3
"""PNG fixtures for Tests/KiriImageTests, written by a PNG encoder of its own (zlib + struct only: no PIL,
no libpng), so the decoder under test is checked against an independent reference.

    python3 Tests/Fixtures/images/make_images.py     # rewrites the .png files and expected.json here

expected.json gives, for each good file, the 8-bit pixels libpng's documented conversions produce:
palette -> RGB, tRNS -> an alpha channel (255 where the tRNS list ends or the grey value differs), grey below
8 bits scaled to 0..255 (1 bit: 0/255, 2 bits: v*85, 4 bits: v*17), and 16 bits -> 8 as png_set_scale_16
does it: round(v * 255 / 65535), i.e. (v * 255 + 32767) // 65535 (not png_set_strip_16's high byte). Pixels
are interleaved, rows top to bottom. For each broken file it gives a fragment the error message must contain.
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
SAMPLES = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def ihdr(width, height, depth, color, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace))


def pack_row(samples, depth):
    """Samples (ints) of one row as bytes: big-endian at 16 bits, packed high bits first below 8."""
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    per_byte = 8 // depth
    out = bytearray()
    for start in range(0, len(samples), per_byte):
        group = samples[start:start + per_byte]
        byte = 0
        for i, s in enumerate(group):
            byte |= s << (8 - depth * (i + 1))
        out.append(byte)
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(kind, row, previous, bpp):
    """PNG filter `kind` (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) applied to one packed row."""
    out = bytearray([kind])
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = previous[i] if previous else 0
        c = previous[i - bpp] if previous and i >= bpp else 0
        predictor = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
        out.append((x - predictor) & 0xFF)
    return bytes(out)


def image_data(rows, depth, channels, filters=True):
    """Rows of samples -> the zlib stream of filtered scanlines; row i uses filter i % 5 when `filters`."""
    bpp = max(1, depth * channels // 8)
    raw, previous = bytearray(), None
    for index, samples in enumerate(rows):
        packed = pack_row(samples, depth)
        raw += filter_row(index % 5 if filters else 0, packed, previous, bpp)
        previous = packed
    return zlib.compress(bytes(raw), 9)


def png(width, height, depth, color, rows, extra_before=b"", extra_after=b"", interlace=0, idat=None):
    channels = SAMPLES[color]
    data = idat if idat is not None else image_data(rows, depth, channels)
    return (SIGNATURE + ihdr(width, height, depth, color, interlace) + extra_before + chunk(b"IDAT", data)
            + extra_after + chunk(b"IEND", b""))


def adam7(width, height, color, pixels):
    """An Adam7-interlaced 8-bit image: each pass's sub-image filtered and stored in order, one zlib stream."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    channels = SAMPLES[color]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        xs, ys = range(x0, width, dx), range(y0, height, dy)
        if not xs or not ys:
            continue
        previous = None
        for index, y in enumerate(ys):
            row = bytes(v for x in xs for v in pixels[y][x])
            raw += filter_row(index % 5, row, previous, channels)
            previous = row
    return png(width, height, 8, color, None, interlace=1, idat=zlib.compress(bytes(raw), 9))


def text_chunks():
    """tEXt and zTXt (Latin-1) before IDAT, iTXt (UTF-8) plain and compressed, and one tEXt after IDAT."""
    def itxt(key, value, compressed):
        body = value.encode("utf-8")
        return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([1 if compressed else 0, 0]) + b"ja\0"
                     + "題".encode("utf-8") + b"\0" + (zlib.compress(body) if compressed else body))

    long_latin1 = "Crème brûlée, " * 20
    before = (chunk(b"tEXt", b"Title\0" + "café au lait".encode("latin-1"))
              + chunk(b"tEXt", "Größe".encode("latin-1") + b"\0" + b"2x2")
              + chunk(b"zTXt", b"Comment\0\0" + zlib.compress(long_latin1.encode("latin-1")))
              + itxt("Description", "ＴＥＳＴ 雪", False)
              + itxt("Software", "雪だるま ☃ " * 10, True))
    after = chunk(b"tEXt", b"Author\0after the pixels")
    text = [["Title", "café au lait"], ["Größe", "2x2"], ["Comment", long_latin1], ["Description", "ＴＥＳＴ 雪"],
            ["Software", "雪だるま ☃ " * 10], ["Author", "after the pixels"]]
    return before, after, text


def main():
    files, expected = {}, {}

    def good(name, data, width, height, channels, pixels, text=()):
        files[name] = data
        expected[name] = {"width": width, "height": height, "channels": channels, "pixels": pixels,
                          "text": [list(pair) for pair in text]}

    # Grey, 8 bits: 4x3.
    grey = [[0, 1, 127, 255], [10, 20, 30, 40], [250, 128, 64, 5]]
    good("grey8.png", png(4, 3, 8, GREY, grey), 4, 3, 1, [v for row in grey for v in row])

    # Grey, 1, 2 and 4 bits, widths that leave padding bits in each row's last byte.
    bits1 = [[(x + y) % 2 for x in range(10)] for y in range(3)]
    good("grey1.png", png(10, 3, 1, GREY, bits1), 10, 3, 1, [v * 255 for row in bits1 for v in row])
    bits2 = [[(x * 3 + y) % 4 for x in range(5)] for y in range(2)]
    good("grey2.png", png(5, 2, 2, GREY, bits2), 5, 2, 1, [v * 85 for row in bits2 for v in row])
    bits4 = [[(x * 7 + y * 5) % 16 for x in range(3)] for y in range(3)]
    good("grey4.png", png(3, 3, 4, GREY, bits4), 3, 3, 1, [v * 17 for row in bits4 for v in row])

    # Grey with tRNS: the one transparent grey value becomes alpha 0, every other alpha 255.
    greyt = [[7, 8, 9], [9, 7, 200]]
    good("grey_trns.png", png(3, 2, 8, GREY, greyt, extra_before=chunk(b"tRNS", struct.pack(">H", 7))), 3, 2, 2,
         [c for row in greyt for v in row for c in (v, 0 if v == 7 else 255)])

    # Grey + alpha, RGB (every filter type), RGBA.
    ga = [[(10, 255), (20, 128)], [(30, 0), (40, 1)], [(0, 0), (255, 255)]]
    good("grey_alpha.png", png(2, 3, 8, GREY_ALPHA, [[c for p in row for c in p] for row in ga]), 2, 3, 2,
         [c for row in ga for p in row for c in p])
    rgb = [[((x * 40 + y * 13) % 256, (x * 7 + 200) % 256, (y * 60 + x) % 256) for x in range(5)] for y in range(6)]
    good("rgb.png", png(5, 6, 8, RGB, [[c for p in row for c in p] for row in rgb]), 5, 6, 3,
         [c for row in rgb for p in row for c in p])
    rgba = [[(x * 60, y * 60, 255 - x * 30, (x * y * 40) % 256) for x in range(4)] for y in range(4)]
    good("rgba.png", png(4, 4, 8, RGBA, [[c for p in row for c in p] for row in rgba]), 4, 4, 4,
         [c for row in rgba for p in row for c in p])

    # Palette, 4 bits, 5 entries, tRNS for the first 3: expands to RGBA.
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 100, 50)]
    alphas = [0, 128, 255]
    indices = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    plte = chunk(b"PLTE", bytes(c for entry in palette for c in entry)) + chunk(b"tRNS", bytes(alphas))
    good("palette_trns.png", png(5, 2, 4, PALETTE, indices, extra_before=plte), 5, 2, 4,
         [c for row in indices for i in row for c in palette[i] + (alphas[i] if i < len(alphas) else 255,)])

    # RGB, 16 bits: scaled as png_set_scale_16 does.
    wide = [[(0, 65535, 32767), (32768, 128, 127), (257, 65280, 1000)], [(65534, 1, 40000), (12345, 54321, 255), (256, 383, 384)]]
    good("rgb16.png", png(3, 2, 16, RGB, [[c for p in row for c in p] for row in wide]), 3, 2, 3,
         [(c * 255 + 32767) // 65535 for row in wide for p in row for c in p])

    # Adam7-interlaced RGB, 8 bits: 9x7 so every pass has pixels and some rows are partial.
    inter = [[((x * 29 + y * 3) % 256, (x * y * 11) % 256, (255 - x * 17 - y) % 256) for x in range(9)] for y in range(7)]
    good("interlaced.png", adam7(9, 7, RGB, inter), 9, 7, 3, [c for row in inter for p in row for c in p])

    # Text chunks of every kind, one after the pixels.
    before, after, text = text_chunks()
    good("text.png", png(2, 2, 8, GREY, [[1, 2], [3, 4]], extra_before=before, extra_after=after), 2, 2, 1,
         [1, 2, 3, 4], text)

    # Broken files, each with a fragment of the message it must give.
    broken = {}
    whole = files["rgb.png"]
    files["truncated.png"] = whole[: len(whole) - 30]
    broken["truncated.png"] = "truncated or corrupt"
    idat = whole.index(b"IDAT")
    length = struct.unpack(">I", whole[idat - 4: idat])[0]
    crc = idat + 4 + length
    files["bad_crc.png"] = whole[:crc] + bytes([whole[crc] ^ 0xFF]) + whole[crc + 1:]
    broken["bad_crc.png"] = "CRC error"
    files["not_png.png"] = b"GIF89a, or anything else that is not a PNG\n"
    broken["not_png.png"] = "not a PNG file"
    files["empty.png"] = b""
    broken["empty.png"] = "not a PNG file"
    files["huge_header.png"] = png(100000, 100000, 8, RGB, None, idat=zlib.compress(b"\0" * 16))
    broken["huge_header.png"] = "100000x100000 exceeds the 65536-pixel side limit"
    # Within the side limit, but 60000 x 60000 x 4 bytes is over the default 1 GiB byte limit: refused before
    # any pixel is decoded (its IDAT holds almost nothing).
    files["too_many_bytes.png"] = png(60000, 60000, 8, RGBA, None, idat=zlib.compress(b"\0" * 16))
    broken["too_many_bytes.png"] = "60000x60000 with 4 channels needs 14400000000 bytes"
    # A valid header then a zlib stream that ends early: libpng notices while decoding rows.
    files["short_data.png"] = png(5, 6, 8, RGB, None, idat=zlib.compress(bytes(16)))
    broken["short_data.png"] = "truncated or corrupt"

    for name, data in files.items():
        with open(os.path.join(HERE, name), "wb") as handle:
            handle.write(data)
    # One file per line, so a change to one fixture is a one-line diff.
    def lines(table):
        return ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in sorted(table.items()))
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as handle:
        handle.write('{"good": {\n' + lines(expected) + '\n},\n"broken": {\n' + lines(broken) + "\n}}\n")


if __name__ == "__main__":
    main()
