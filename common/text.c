/* text.c - safe quoting of outside text, bounded copies, and hex */
#include "text.h"
#include <string.h>

char *
text_printable (char *dst, size_t dstlen, const char *s, size_t len, size_t max)
{
    size_t n = 0;
    if (!s)
        s = "";
    if (len == (size_t) -1)
        len = strlen (s);
    for (size_t i = 0; i < len && i < max && n + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char) s [i];
        dst [n++] = (ch >= 0x20 && ch < 0x7f) ? (char) ch : '?';
    }
    if (len > max && n + 4 < dstlen) {
        memcpy (dst + n, "...", 3);
        n += 3;
    }
    dst [n] = '\0';
    return dst;
}

void
text_hex (const unsigned char *in, size_t n, char *out)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out [2 * i] = hex [in [i] >> 4];
        out [2 * i + 1] = hex [in [i] & 15];
    }
    out [2 * n] = '\0';
}

static int
hex_value (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
text_unhex (const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value (in [2 * i]), lo = hi < 0 ? -1 : hex_value (in [2 * i + 1]);
        if (lo < 0)
            return -1;
        out [i] = (unsigned char) (hi << 4 | lo);
    }
    return 0;
}

size_t
text_copy (char *dst, size_t dstlen, const char *src)
{
    size_t n = strnlen (src, dstlen - 1);
    memcpy (dst, src, n);
    dst [n] = '\0';
    return n;
}

size_t
text_utf8_len (const unsigned char *p)
{
    if (p [0] < 0x80)
        return 1;
    if (p [0] >= 0xc2 && p [0] <= 0xdf)
        return (p [1] & 0xc0) == 0x80 ? 2 : 0;
    if (p [0] >= 0xe0 && p [0] <= 0xef) {
        if ((p [1] & 0xc0) != 0x80 || (p [2] & 0xc0) != 0x80)
            return 0;
        if ((p [0] == 0xe0 && p [1] < 0xa0) || (p [0] == 0xed && p [1] > 0x9f))
            return 0;                   /* overlong, or a UTF-16 surrogate */
        return 3;
    }
    if (p [0] >= 0xf0 && p [0] <= 0xf4) {
        if ((p [1] & 0xc0) != 0x80 || (p [2] & 0xc0) != 0x80 || (p [3] & 0xc0) != 0x80)
            return 0;
        if ((p [0] == 0xf0 && p [1] < 0x90) || (p [0] == 0xf4 && p [1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

int
text_base64url (const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int
text_utf8_valid (const char *s)
{
    for (const unsigned char *p = (const unsigned char *) s; *p; ) {
        size_t n = text_utf8_len (p);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

int
text_line (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t i = 0;
    while (i < len) {
        if (p [i] < 0x80) {
            if (p [i] < 0x20 || p [i] == 0x7f)
                return 0;
            i++;
            continue;
        }
        /* text_utf8_len reads up to four bytes and stops at a zero: a sequence the end cuts fails */
        unsigned char seq [4] = { 0 };
        memcpy (seq, p + i, len - i < 4 ? len - i : 4);
        size_t n = text_utf8_len (seq);
        if (!n || (seq [0] == 0xc2 && seq [1] < 0xa0))
            return 0;                       /* not UTF-8, or a C1 control (U+0080 to U+009F) */
        i += n;
    }
    return 1;
}
