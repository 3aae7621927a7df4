/* pgarray.c - PostgreSQL array literals */
#include "pgarray.h"
#include "mem.h"
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct pgarray_t {
    mem_buf_t buf;              /* always a whole literal: "{", the elements, "}" */
    size_t count;
    int failed;                 /* an append would have passed the cap */
};

pgarray_t *
pgarray_new (size_t max)
{
    assert (max >= 2);
    pgarray_t *self = mem_alloc (sizeof *self);
    mem_buf_init (&self->buf, max);
    if (mem_buf_append (&self->buf, "{}", 2) != 0)
        self->failed = 1;
    return self;
}

void
pgarray_destroy (pgarray_t **self_p)
{
    if (self_p && *self_p) {
        mem_buf_free (&(*self_p)->buf);
        mem_free (*self_p);
        *self_p = NULL;
    }
}

/* Opens room for one more element: the closing brace goes, and a comma comes after the last
 * element. 0, or -1 when the cap is reached. */
static int
pgarray_open (pgarray_t *self)
{
    if (self->failed)
        return -1;
    self->buf.len--;                                    /* the "}" */
    if (self->count && mem_buf_append (&self->buf, ",", 1) != 0) {
        self->failed = 1;
        return -1;
    }
    return 0;
}

/* Puts the closing brace back after an element. */
static void
pgarray_close (pgarray_t *self, int bad)
{
    if (bad || mem_buf_append (&self->buf, "}", 1) != 0)
        self->failed = 1;
    else
        self->count++;
}

void
pgarray_add_text (pgarray_t *self, const char *s)
{
    if (!s) {
        pgarray_add_null (self);
        return;
    }
    if (pgarray_open (self) != 0)
        return;
    int bad = mem_buf_append (&self->buf, "\"", 1);
    /* runs without a character to escape go in one append */
    while (!bad && *s) {
        size_t run = strcspn (s, "\"\\");
        bad = (run && mem_buf_append (&self->buf, s, run) != 0);
        s += run;
        if (!bad && *s) {
            char esc [2] = { '\\', *s++ };
            bad = mem_buf_append (&self->buf, esc, 2) != 0;
        }
    }
    bad = bad || mem_buf_append (&self->buf, "\"", 1) != 0;
    pgarray_close (self, bad);
}

void
pgarray_add_int (pgarray_t *self, int64_t value)
{
    char digits [24];
    if (pgarray_open (self) != 0)
        return;
    int n = snprintf (digits, sizeof digits, "%" PRId64, value);
    pgarray_close (self, mem_buf_append (&self->buf, digits, (size_t) n) != 0);
}

void
pgarray_add_null (pgarray_t *self)
{
    if (pgarray_open (self) != 0)
        return;
    pgarray_close (self, mem_buf_append (&self->buf, "NULL", 4) != 0);
}

void
pgarray_add_bytea (pgarray_t *self, const unsigned char *bytes, size_t len)
{
    if (!bytes) {
        pgarray_add_null (self);
        return;
    }
    if (pgarray_open (self) != 0)
        return;
    /* quoted, its backslash escaped: the element reads as \x and the hex digits */
    int bad = mem_buf_append (&self->buf, "\"\\\\x", 4) != 0;
    char hex [128];
    for (size_t i = 0; !bad && i < len; ) {
        size_t k = 0;
        for (; i < len && k + 2 <= sizeof hex; i++, k += 2) {
            hex [k] = "0123456789abcdef" [bytes [i] >> 4];
            hex [k + 1] = "0123456789abcdef" [bytes [i] & 15];
        }
        bad = mem_buf_append (&self->buf, hex, k) != 0;
    }
    bad = bad || mem_buf_append (&self->buf, "\"", 1) != 0;
    pgarray_close (self, bad);
}

const char *
pgarray_text (const pgarray_t *self)
{
    return self->failed ? NULL : self->buf.data;
}

size_t
pgarray_count (const pgarray_t *self)
{
    return self->count;
}
