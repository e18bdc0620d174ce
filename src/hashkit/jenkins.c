/* hashkit jenkins: Bob Jenkins' lookup3 hashlittle(), with the initval
 * nutcracker and libmemcached use. */
#include "hashkit_int.h"

#define JENKINS_INITVAL 13
#define LOOKUP3_GOLDEN  UINT32_C(0xdeadbeef)

struct lookup3 {
    uint32_t a, b, c;
};

static uint32_t lookup3_rot(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32 - k));
}

/* Reversible mixing of the three words after each full 12-byte block. */
static void lookup3_mix(struct lookup3 *s)
{
    s->a -= s->c; s->a ^= lookup3_rot(s->c, 4);  s->c += s->b;
    s->b -= s->a; s->b ^= lookup3_rot(s->a, 6);  s->a += s->c;
    s->c -= s->b; s->c ^= lookup3_rot(s->b, 8);  s->b += s->a;
    s->a -= s->c; s->a ^= lookup3_rot(s->c, 16); s->c += s->b;
    s->b -= s->a; s->b ^= lookup3_rot(s->a, 19); s->a += s->c;
    s->c -= s->b; s->c ^= lookup3_rot(s->b, 4);  s->b += s->a;
}

/* Final mixing of the last block into c. */
static void lookup3_final(struct lookup3 *s)
{
    s->c ^= s->b; s->c -= lookup3_rot(s->b, 14);
    s->a ^= s->c; s->a -= lookup3_rot(s->c, 11);
    s->b ^= s->a; s->b -= lookup3_rot(s->a, 25);
    s->c ^= s->b; s->c -= lookup3_rot(s->b, 16);
    s->a ^= s->c; s->a -= lookup3_rot(s->c, 4);
    s->b ^= s->a; s->b -= lookup3_rot(s->a, 14);
    s->c ^= s->b; s->c -= lookup3_rot(s->b, 24);
}

/* Up to 4 bytes from p as a little-endian word, missing bytes as zero. */
static uint32_t lookup3_word(const char *p, size_t n)
{
    uint32_t w = 0;

    for (size_t i = 0; i < n && i < 4; i++) {
        w |= hashkit_ubyte(p, i) << (8 * i);
    }
    return w;
}

/* Adds the 1..12 bytes of a (last) block to a, b and c. */
static void lookup3_add(struct lookup3 *s, const char *p, size_t n)
{
    s->a += lookup3_word(p, n);
    if (n > 4) {
        s->b += lookup3_word(p + 4, n - 4);
    }
    if (n > 8) {
        s->c += lookup3_word(p + 8, n - 8);
    }
}

/*
 * Byte-wise little-endian reads: the same value hashlittle() gets from its
 * aligned, half-aligned or byte paths on a little-endian machine. The last
 * block (1 to 12 bytes) is handled apart from the others, and an empty key
 * returns the initial c without final mixing, as hashlittle() does.
 */
uint32_t hashkit_lookup3(const char *key, size_t len, uint32_t initval)
{
    uint32_t init = LOOKUP3_GOLDEN + (uint32_t)len + initval;
    struct lookup3 s = { init, init, init };
    size_t i = 0;

    if (len == 0) {
        return s.c;
    }
    for (; len - i > 12; i += 12) {
        lookup3_add(&s, key + i, 12);
        lookup3_mix(&s);
    }
    lookup3_add(&s, key + i, len - i);
    lookup3_final(&s);
    return s.c;
}

uint32_t hashkit_jenkins(const char *key, size_t len)
{
    return hashkit_lookup3(key, len, JENKINS_INITVAL);
}
