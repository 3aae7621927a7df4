/* text.h - text that came from outside, made safe to quote in a message or a log line; bounded
 * copies; UTF-8 checks; bytes as hex: the one place each is done */
#ifndef FERRULE_TEXT_H
#define FERRULE_TEXT_H
#include <stddef.h>

/* Copies at most max bytes of s (len bytes, or up to its NUL when len is (size_t) -1) into dst:
 * printable ASCII kept, every other byte as '?', and "..." appended when s was cut. Always
 * NUL-terminates (dstlen > 0). Returns dst. */
char *text_printable (char *dst, size_t dstlen, const char *s, size_t len, size_t max);
/* Copies src into dst, cut to dstlen - 1 bytes, always NUL-terminated (dstlen > 0): snprintf's
 * "%s" without the formatting, for the hot paths. Returns the bytes copied. */
size_t text_copy (char *dst, size_t dstlen, const char *src);
/* n bytes as 2n lower-case hex digits and a NUL into out (2n+1 bytes). */
void text_hex (const unsigned char *in, size_t n, char *out);
/* The 2n hex digits (either case) at in as n bytes into out: 0, or -1 when any of them is not a
 * hex digit (a sign, a space, "0x" and the end of the string included). */
int text_unhex (const char *in, size_t n, unsigned char *out);
/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when the bytes there are not one (p is
 * NUL-terminated: a sequence cut by the NUL is not one). */
size_t text_utf8_len (const unsigned char *p);
/* 1 when the NUL-terminated s is valid UTF-8 (no overlong form, no surrogate), else 0. */
int text_utf8_valid (const char *s);
/* 1 when the len bytes of s are UTF-8 text on one line: valid UTF-8 with no control character
 * (no NUL, nothing below a space, no DEL, none of the C1 controls U+0080 to U+009F, which some
 * terminals act on as ESC does), else 0. What a peer may choose and have echoed back. */
int text_line (const char *s, size_t len);
/* 1 when the len bytes of s are all of the base64url alphabet (A-Z a-z 0-9 - _), else 0. */
int text_base64url (const char *s, size_t len);
#endif
