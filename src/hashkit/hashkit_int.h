/* hashkit internals: one function per hash family, shared by hash.c (the
 * dispatch), ring.c (ketama uses the MD5 digest) and the unit tests. */
#ifndef STRATA_HASHKIT_INT_H
#define STRATA_HASHKIT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "strata/hashkit.h"

#define HASHKIT_MD5_DIGEST_LEN 16

/*
 * A key byte widened the way nutcracker widens it in the hashes that read
 * the key through plain `char`: sign-extended, because `char` is signed on
 * the amd64 build we must match. Bytes >= 0x80 (UTF-8 keys) therefore enter
 * one_at_a_time, the four fnv variants and hsieh's tail as 0xFFFFFFxx.
 * Doing it explicitly keeps Strata's routing identical on every platform,
 * including those where `char` is unsigned.
 */
static inline uint32_t hashkit_sbyte(char c)
{
    return (uint32_t)(int32_t)(signed char)c;
}

/* Byte b of a key, as an unsigned value. */
static inline uint32_t hashkit_ubyte(const char *key, size_t i)
{
    return (uint32_t)(unsigned char)key[i];
}

/* Fills digest with the RFC 1321 MD5 of key[0..len). */
void hashkit_md5_digest(const char *key, size_t len,
                        unsigned char digest[HASHKIT_MD5_DIGEST_LEN]);

/* Word w (0..3) of a digest, read little-endian. */
static inline uint32_t hashkit_md5_word(const unsigned char *digest, int w)
{
    const unsigned char *p = digest + 4 * w;

    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* MurmurHash2 (Austin Appleby) with an explicit seed. */
uint32_t hashkit_murmur2(const char *key, size_t len, uint32_t seed);

/* Bob Jenkins' lookup3 hashlittle() with an explicit initval. */
uint32_t hashkit_lookup3(const char *key, size_t len, uint32_t initval);

/* A live node as the distributions see it, in nutcracker's server order. */
struct hashkit_member {
    uint32_t index;       /* into the caller's node array */
    uint32_t weight;      /* > 0 */
    size_t   len;         /* of name */
    char    *name;        /* what nutcracker sorts servers by and ketama
                             hashes: see ring_member_name() in ring.c */
};

/* Fills ring->points and ring->npoints with the ketama continuum of the
 * members (sorted, at least one), whose weights add up to total_weight.
 * Returns 0, or -1 when out of memory. */
int hashkit_ketama_build(struct hashkit_ring *ring,
                         const struct hashkit_member *members,
                         uint32_t nmembers, uint32_t total_weight);

/* The twelve key hashes; the names follow HASHKIT_HASH_LIST. */
uint32_t hashkit_one_at_a_time(const char *key, size_t len);
uint32_t hashkit_md5(const char *key, size_t len);
uint32_t hashkit_crc16(const char *key, size_t len);
uint32_t hashkit_crc32(const char *key, size_t len);
uint32_t hashkit_crc32a(const char *key, size_t len);
uint32_t hashkit_fnv1_64(const char *key, size_t len);
uint32_t hashkit_fnv1a_64(const char *key, size_t len);
uint32_t hashkit_fnv1_32(const char *key, size_t len);
uint32_t hashkit_fnv1a_32(const char *key, size_t len);
uint32_t hashkit_hsieh(const char *key, size_t len);
uint32_t hashkit_murmur(const char *key, size_t len);
uint32_t hashkit_jenkins(const char *key, size_t len);

#endif
