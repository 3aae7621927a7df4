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

size_t
text_copy (char *dst, size_t dstlen, const char *src)
{
    size_t n = strnlen (src, dstlen - 1);
    memcpy (dst, src, n);
    dst [n] = '\0';
    return n;
}
