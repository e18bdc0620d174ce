/* Unit tests of hashkit: the twelve hashes against published vectors and
 * against vectors observed on Debian's nutcracker 0.5.0, and the ketama,
 * modula and random rings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strata/hashkit.h"

#include "../../src/hashkit/hashkit_int.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct hash_vector {
    enum hashkit_hash hash;
    const char       *key;
    uint32_t          expect;
};

static void check_vectors(const struct hash_vector *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t got = hashkit_hash(v[i].hash, v[i].key, strlen(v[i].key));

        if (got != v[i].expect) {
            fail_msg("%s(\"%s\") = 0x%08x, expected 0x%08x",
                     hashkit_hash_name(v[i].hash), v[i].key, got,
                     v[i].expect);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Hashes: published vectors                                           */

/*
 * Sources: RFC 1321 (md5); the CRC catalogue check value of "123456789"
 * (CRC-32 0xcbf43926, CRC-16/XMODEM 0x31c3); the FNV reference test suite
 * (the 64-bit ones reduced to their low word, as nutcracker returns it);
 * Wikipedia's one-at-a-time examples; libmemcached's tests/hash_results.h
 * for "apple", which twemproxy's own test_all.c repeats.
 */
static const struct hash_vector published[] = {
    { HASHKIT_HASH_ONE_AT_A_TIME, "a", 0xca2e9442 },
    { HASHKIT_HASH_ONE_AT_A_TIME,
      "The quick brown fox jumps over the lazy dog", 0x519e91f5 },
    { HASHKIT_HASH_ONE_AT_A_TIME, "apple", 2297466611U },
    { HASHKIT_HASH_MD5, "", 0xd98c1dd4 },          /* d41d8cd9... */
    { HASHKIT_HASH_MD5, "abc", 0x98500190 },       /* 90015098... */
    { HASHKIT_HASH_MD5, "apple", 3195025439U },
    { HASHKIT_HASH_CRC16, "apple", 3662830516U },
    { HASHKIT_HASH_CRC32, "123456789", 0x4bf4 },   /* bits 16..30 */
    { HASHKIT_HASH_CRC32, "apple", 10542 },
    { HASHKIT_HASH_CRC32A, "123456789", 0xcbf43926 },
    { HASHKIT_HASH_CRC32A, "", 0 },
    { HASHKIT_HASH_CRC32A, "apple", 2838417488U },
    { HASHKIT_HASH_FNV1_32, "", 0x811c9dc5 },
    { HASHKIT_HASH_FNV1_32, "a", 0x050c5d7e },
    { HASHKIT_HASH_FNV1_32, "foobar", 0x31f0b262 },
    { HASHKIT_HASH_FNV1_32, "apple", 67176023 },
    { HASHKIT_HASH_FNV1A_32, "a", 0xe40c292c },
    { HASHKIT_HASH_FNV1A_32, "foobar", 0xbf9cf968 },
    { HASHKIT_HASH_FNV1A_32, "apple", 280767167 },
    { HASHKIT_HASH_FNV1_64, "", 0x84222325 },
    { HASHKIT_HASH_FNV1_64, "a", 0x8601b7be },     /* af63bd4c8601b7be */
    { HASHKIT_HASH_FNV1_64, "foobar", 0xa4dda9c2 },/* 340d8765a4dda9c2 */
    { HASHKIT_HASH_FNV1_64, "apple", 473199127 },
    { HASHKIT_HASH_FNV1A_64, "a", 0x8601ec8c },    /* af63dc4c8601ec8c */
    { HASHKIT_HASH_FNV1A_64, "foobar", 0xf73967e8 },/* 85944171f73967e8 */
    { HASHKIT_HASH_FNV1A_64, "apple", 1488911807 },
    { HASHKIT_HASH_HSIEH, "", 0 },
    { HASHKIT_HASH_HSIEH, "apple", 3738850110U },
    { HASHKIT_HASH_MURMUR, "apple", 4142305122U },
    { HASHKIT_HASH_JENKINS, "", 0xdeadbefc },      /* 0xdeadbeef + 13 */
    { HASHKIT_HASH_JENKINS, "apple", 1442444624 },
};

static void test_hash_published(void **state)
{
    (void)state;
    check_vectors(published, ARRAY_LEN(published));
}

/*
 * nutcracker-specific behaviour, established against the real binary (the
 * key placements of test_nutcracker_routes and of thousands of keys more,
 * many with bytes >= 0x80, agree):
 *  - crc16 keeps the bits above 16 (low half 0x31c3 = CRC-16/XMODEM);
 *  - bytes >= 0x80 are sign-extended in one_at_a_time, the fnv variants
 *    and hsieh's tail; "\xff\xfe\xfd" ends in hsieh's 3-byte tail.
 */
static const struct hash_vector nutcracker_specific[] = {
    { HASHKIT_HASH_CRC16, "123456789", 0x869031c3 },
    { HASHKIT_HASH_ONE_AT_A_TIME, "caf\xc3\xa9", 0xd99c709e },
    { HASHKIT_HASH_MD5, "caf\xc3\xa9", 0xe47f1107 },
    { HASHKIT_HASH_CRC16, "caf\xc3\xa9", 0xf6269667 },
    { HASHKIT_HASH_CRC32, "caf\xc3\xa9", 0x000018ad },
    { HASHKIT_HASH_CRC32A, "caf\xc3\xa9", 0x98ad42b5 },
    { HASHKIT_HASH_FNV1_64, "caf\xc3\xa9", 0x8a06fef1 },
    { HASHKIT_HASH_FNV1A_64, "caf\xc3\xa9", 0xcef6bb89 },
    { HASHKIT_HASH_FNV1_32, "caf\xc3\xa9", 0xd682f171 },
    { HASHKIT_HASH_FNV1A_32, "caf\xc3\xa9", 0x7572c049 },
    { HASHKIT_HASH_HSIEH, "caf\xc3\xa9", 0xde3f8855 },
    { HASHKIT_HASH_MURMUR, "caf\xc3\xa9", 0xda11981f },
    { HASHKIT_HASH_JENKINS, "caf\xc3\xa9", 0xcb6225ad },
    { HASHKIT_HASH_ONE_AT_A_TIME, "\xff\xfe\xfd", 0x475549b8 },
    { HASHKIT_HASH_FNV1_64, "\xff\xfe\xfd", 0x93edf087 },
    { HASHKIT_HASH_FNV1A_64, "\xff\xfe\xfd", 0x8f0e92d7 },
    { HASHKIT_HASH_FNV1_32, "\xff\xfe\xfd", 0x914c9107 },
    { HASHKIT_HASH_FNV1A_32, "\xff\xfe\xfd", 0xbf6d4517 },
    { HASHKIT_HASH_HSIEH, "\xff\xfe\xfd", 0xd989515e },
};

static void test_hash_nutcracker_specific(void **state)
{
    (void)state;
    check_vectors(nutcracker_specific, ARRAY_LEN(nutcracker_specific));
}

/* A high byte enters fnv1a_32 as 0xffffff80, not 0x80. */
static void test_hash_sign_extension(void **state)
{
    uint32_t textbook = (UINT32_C(0x811c9dc5) ^ 0x80) * UINT32_C(0x01000193);
    uint32_t widened = (UINT32_C(0x811c9dc5) ^ 0xffffff80) *
                       UINT32_C(0x01000193);

    (void)state;
    assert_int_equal(hashkit_hash(HASHKIT_HASH_FNV1A_32, "\x80", 1), widened);
    assert_int_not_equal(widened, textbook);
}

static void test_md5_rfc1321(void **state)
{
    static const char *const suite[][2] = {
        { "", "d41d8cd98f00b204e9800998ecf8427e" },
        { "a", "0cc175b9c0f1b6a831c399e269772661" },
        { "abc", "900150983cd24fb0d6963f7d28e17f72" },
        { "message digest", "f96b697d7cb7938d525a2f31aaf161d0" },
        { "abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b" },
        { "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
          "d174ab98d277d9f5a5611c2c9f419d9f" },
        { "1234567890123456789012345678901234567890"
          "1234567890123456789012345678901234567890",
          "57edf4a22be3c955ac49da2e2107b67a" },
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(suite); i++) {
        unsigned char d[HASHKIT_MD5_DIGEST_LEN];
        char hex[2 * HASHKIT_MD5_DIGEST_LEN + 1];

        hashkit_md5_digest(suite[i][0], strlen(suite[i][0]), d);
        for (int j = 0; j < HASHKIT_MD5_DIGEST_LEN; j++) {
            snprintf(hex + 2 * j, 3, "%02x", d[j]);
        }
        assert_string_equal(hex, suite[i][1]);
    }
}

/* twemproxy's test_all.c: ketama_hash("server1-8", alignment 0 and 3). */
static void test_md5_ketama_words(void **state)
{
    unsigned char d[HASHKIT_MD5_DIGEST_LEN];

    (void)state;
    hashkit_md5_digest("server1-8", 9, d);
    assert_int_equal(hashkit_md5_word(d, 0), 3853726576U);
    assert_int_equal(hashkit_md5_word(d, 3), 2667054752U);
}

/* SMHasher's verification value of MurmurHash2: hash keys {0}, {0,1},
 * ... of length 0..255 with seed 256 - length, then hash those hashes. */
static void test_murmur2_smhasher(void **state)
{
    unsigned char key[256], all[256 * 4];

    (void)state;
    for (int i = 0; i < 256; i++) {
        uint32_t h;

        key[i] = (unsigned char)i;
        h = hashkit_murmur2((const char *)key, (size_t)i, 256u - (unsigned)i);
        for (int b = 0; b < 4; b++) {
            all[4 * i + b] = (unsigned char)(h >> (8 * b));
        }
    }
    assert_int_equal(hashkit_murmur2((const char *)all, sizeof(all), 0),
                     0x27864c1e);
}

/* lookup3.c's own driver output. */
static void test_lookup3_published(void **state)
{
    const char *s = "Four score and seven years ago";

    (void)state;
    assert_int_equal(hashkit_lookup3("", 0, 0), 0xdeadbeef);
    assert_int_equal(hashkit_lookup3("", 0, 0xdeadbeef), 0xbd5b7dde);
    assert_int_equal(hashkit_lookup3(s, 30, 0), 0x17770551);
    assert_int_equal(hashkit_lookup3(s, 30, 1), 0xcd628161);
}

/* Bit-at-a-time CRCs, to check the nibble tables over many inputs. */
static uint32_t ref_crc32(const unsigned char *p, size_t n)
{
    uint32_t crc = UINT32_MAX;

    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) {
            crc = (crc >> 1) ^ ((crc & 1) ? 0xedb88320 : 0);
        }
    }
    return ~crc;
}

static uint32_t ref_crc16_xmodem(const unsigned char *p, size_t n)
{
    uint32_t crc = 0;

    for (size_t i = 0; i < n; i++) {
        crc ^= (uint32_t)p[i] << 8;
        for (int b = 0; b < 8; b++) {
            crc = ((crc << 1) ^ ((crc & 0x8000) ? 0x1021 : 0)) & 0xffff;
        }
    }
    return crc;
}

static void test_crc_tables(void **state)
{
    unsigned char buf[64];
    unsigned int seed = 12345;

    (void)state;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof(buf));

        for (size_t i = 0; i < n; i++) {
            buf[i] = (unsigned char)rand_r(&seed);
        }
        assert_int_equal(hashkit_crc32a((const char *)buf, n),
                         ref_crc32(buf, n));
        assert_int_equal(hashkit_crc16((const char *)buf, n) & 0xffff,
                         ref_crc16_xmodem(buf, n));
    }
}

static void test_hash_dispatch(void **state)
{
    (void)state;
    for (int h = 0; h < HASHKIT_HASH_COUNT; h++) {
        enum hashkit_hash parsed;

        assert_true(hashkit_hash_parse(hashkit_hash_name(h), &parsed));
        assert_int_equal(parsed, h);
    }
    assert_int_equal(hashkit_hash(HASHKIT_HASH_COUNT, "foo", 3), 0);
    assert_int_equal(hashkit_hash(HASHKIT_HASH_CRC32A, NULL, 0), 0);
    assert_int_equal(hashkit_hash(HASHKIT_HASH_MD5, NULL, 0), 0xd98c1dd4);
}

/* ------------------------------------------------------------------ */
/* Rings                                                               */

/* How many ketama points each node got. */
static void count_points(const struct hashkit_ring *r, uint32_t *counts,
                         uint32_t n)
{
    memset(counts, 0, n * sizeof(*counts));
    for (uint32_t i = 0; i < r->npoints; i++) {
        assert_true(r->points[i].index < n);
        counts[r->points[i].index]++;
    }
}

static void build(struct hashkit_ring *r, enum hashkit_dist dist,
                  const struct hashkit_node *nodes, uint32_t n)
{
    assert_int_equal(hashkit_ring_build(r, dist, nodes, n), 0);
}

static void test_ketama_point_counts(void **state)
{
    struct hashkit_node n[4] = {
        { "a", "10.0.0.1", 11211, 1, true }, { "b", "10.0.0.2", 11211, 2, true },
        { "c", "10.0.0.3", 11211, 3, true }, { "d", "10.0.0.4", 11211, 1, true },
    };
    struct hashkit_ring r = { 0 };
    uint32_t c[4];

    (void)state;
    build(&r, HASHKIT_DIST_KETAMA, n, 4);
    count_points(&r, c, 4);
    /* floor(w / 7 * 40 * 4) * 4, in nutcracker's float arithmetic */
    assert_int_equal(c[0], 88);
    assert_int_equal(c[1], 180);
    assert_int_equal(c[2], 272);
    assert_int_equal(c[3], 88);
    assert_int_equal(r.npoints, 628);
    assert_int_equal(r.nlive, 4);

    for (int i = 0; i < 4; i++) {
        n[i].weight = 5;
    }
    build(&r, HASHKIT_DIST_KETAMA, n, 4);
    count_points(&r, c, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c[i], 160);
    }
    for (uint32_t i = 1; i < r.npoints; i++) {
        assert_true(r.points[i - 1].value <= r.points[i].value);
    }
    hashkit_ring_deinit(&r);
}

/* A key lands on the first point at or after its hash, wrapping. */
static void test_ketama_lookup_edges(void **state)
{
    struct hashkit_node n[3] = {
        { "x", "h", 1, 1, true }, { "y", "h", 2, 1, true },
        { "z", "h", 3, 1, true },
    };
    struct hashkit_ring r = { 0 };
    const struct hashkit_point *p;

    (void)state;
    build(&r, HASHKIT_DIST_KETAMA, n, 3);
    p = r.points;
    assert_int_equal(hashkit_ring_pick(&r, p[0].value), p[0].index);
    assert_int_equal(hashkit_ring_pick(&r, p[5].value + 1), p[6].index);
    assert_int_equal(hashkit_ring_pick(&r, 0), p[0].index);
    assert_int_equal(hashkit_ring_pick(&r, p[r.npoints - 1].value),
                     p[r.npoints - 1].index);
    if (p[r.npoints - 1].value < UINT32_MAX) {
        assert_int_equal(hashkit_ring_pick(&r, UINT32_MAX), p[0].index);
    }
    hashkit_ring_deinit(&r);
}

static void test_ketama_distribution(void **state)
{
    struct hashkit_node n[4] = {
        { NULL, "10.0.0.1", 11211, 1, true }, { NULL, "10.0.0.2", 11211, 1, true },
        { NULL, "10.0.0.3", 11211, 1, true }, { NULL, "10.0.0.4", 11211, 1, true },
    };
    struct hashkit_ring r = { 0 };
    uint32_t hits[4] = { 0 };
    char key[32];

    (void)state;
    build(&r, HASHKIT_DIST_KETAMA, n, 4);
    for (int i = 0; i < 40000; i++) {
        int len = snprintf(key, sizeof(key), "user:%d", i);
        uint32_t h = hashkit_hash(HASHKIT_HASH_FNV1A_64, key, (size_t)len);

        hits[hashkit_ring_pick(&r, h)]++;
    }
    for (int i = 0; i < 4; i++) {
        assert_in_range(hits[i], 6000, 14000);     /* 25% +- 10% */
    }
    hashkit_ring_deinit(&r);
}

/* With equal weights every live node keeps its 160 points when one is
 * ejected, so only the ejected node's keys move. */
static void test_ketama_eject_moves_only_its_keys(void **state)
{
    struct hashkit_node n[4] = {
        { NULL, "10.0.0.1", 11211, 1, true }, { NULL, "10.0.0.2", 11211, 1, true },
        { NULL, "10.0.0.3", 11211, 1, true }, { NULL, "10.0.0.4", 11211, 1, true },
    };
    struct hashkit_ring before = { 0 }, after = { 0 };
    char key[32];
    int moved = 0;

    (void)state;
    build(&before, HASHKIT_DIST_KETAMA, n, 4);
    n[1].live = false;
    build(&after, HASHKIT_DIST_KETAMA, n, 4);
    assert_int_equal(after.nlive, 3);
    for (int i = 0; i < 20000; i++) {
        int len = snprintf(key, sizeof(key), "k%d", i);
        uint32_t h = hashkit_hash(HASHKIT_HASH_MD5, key, (size_t)len);
        uint32_t was = hashkit_ring_pick(&before, h);
        uint32_t now = hashkit_ring_pick(&after, h);

        assert_int_not_equal(now, 1);
        if (was != 1) {
            assert_int_equal(now, was);
        } else {
            moved++;
        }
    }
    assert_true(moved > 0);
    hashkit_ring_deinit(&before);
    hashkit_ring_deinit(&after);
}

/*
 * The name hashed per point: "<name>-N"; unnamed, "<host>" on port 11211,
 * "<host>:<port>" otherwise, "<path>:" for a unix socket. A ring of
 * unnamed nodes equals the ring of nodes named that way.
 */
static void test_ketama_unnamed_labels(void **state)
{
    struct hashkit_node unnamed[3] = {
        { NULL, "10.0.0.1", 11211, 1, true },
        { NULL, "10.0.0.2", 11212, 2, true },
        { NULL, "/run/mc.sock", 0, 1, true },
    };
    struct hashkit_node named[3] = {
        { "10.0.0.1", "elsewhere", 1, 1, true },
        { "10.0.0.2:11212", "elsewhere", 2, 2, true },
        { "/run/mc.sock:", "elsewhere", 3, 1, true },
    };
    struct hashkit_ring a = { 0 }, b = { 0 };

    (void)state;
    build(&a, HASHKIT_DIST_KETAMA, unnamed, 3);
    build(&b, HASHKIT_DIST_KETAMA, named, 3);
    assert_int_equal(a.npoints, b.npoints);
    assert_memory_equal(a.points, b.points, a.npoints * sizeof(*a.points));
    hashkit_ring_deinit(&a);
    hashkit_ring_deinit(&b);
}

/* nutcracker 0.5.0 hashes at most 272 bytes of a label: past that the
 * "-N" suffix is cut, so every digest of the node is the same. */
static void test_ketama_long_name(void **state)
{
    char name[301];
    struct hashkit_node n[2] = {
        { name, "h", 1, 1, true }, { "short", "h", 2, 1, true },
    };
    struct hashkit_ring r = { 0 };
    uint32_t distinct = 0;

    (void)state;
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    build(&r, HASHKIT_DIST_KETAMA, n, 2);
    assert_int_equal(r.npoints, 320);
    for (uint32_t i = 0; i < r.npoints; i++) {
        bool first = i == 0 || r.points[i].value != r.points[i - 1].value;

        distinct += r.points[i].index == 0 && first;
    }
    assert_int_equal(distinct, 4);
    hashkit_ring_deinit(&r);
}

static void test_modula(void **state)
{
    /* nutcracker orders servers by name, shorter first: beta, alpha,
     * delta, gamma; slots by weight: beta beta alpha delta gamma x3 */
    struct hashkit_node n[4] = {
        { "alpha", "h", 1, 1, true }, { "beta", "h", 2, 2, true },
        { "gamma", "h", 3, 3, true }, { "delta", "h", 4, 1, true },
    };
    static const uint32_t slots[7] = { 1, 1, 0, 3, 2, 2, 2 };
    struct hashkit_ring r = { 0 };

    (void)state;
    build(&r, HASHKIT_DIST_MODULA, n, 4);
    for (uint32_t h = 0; h < 70; h++) {
        assert_int_equal(hashkit_ring_pick(&r, h), slots[h % 7]);
    }
    assert_int_equal(hashkit_ring_pick(&r, UINT32_MAX),
                     slots[UINT32_MAX % 7]);
    n[1].live = false;      /* beta gone: alpha delta gamma x3 */
    build(&r, HASHKIT_DIST_MODULA, n, 4);
    assert_int_equal(hashkit_ring_pick(&r, 0), 0);
    assert_int_equal(hashkit_ring_pick(&r, 1), 3);
    assert_int_equal(hashkit_ring_pick(&r, 4), 2);
    assert_int_equal(hashkit_ring_pick(&r, 5), 0);
    hashkit_ring_deinit(&r);
}

static void test_random_stays_live(void **state)
{
    struct hashkit_node n[4] = {
        { NULL, "10.0.0.1", 11211, 1, true }, { NULL, "10.0.0.2", 11211, 9, false },
        { NULL, "10.0.0.3", 11211, 1, true }, { NULL, "10.0.0.4", 11211, 1, true },
    };
    struct hashkit_ring r = { 0 };
    uint32_t seen[4] = { 0 };

    (void)state;
    build(&r, HASHKIT_DIST_RANDOM, n, 4);
    assert_int_equal(r.nlive, 3);
    for (uint32_t i = 0; i < 3000; i++) {
        seen[hashkit_ring_pick(&r, i * 2654435761u)]++;
    }
    assert_int_equal(seen[1], 0);
    assert_int_equal(seen[0] + seen[2] + seen[3], 3000);
    assert_true(seen[0] > 0 && seen[2] > 0 && seen[3] > 0);
    hashkit_ring_deinit(&r);
}

static void test_no_live_node(void **state)
{
    struct hashkit_node n[2] = {
        { NULL, "10.0.0.1", 11211, 1, false }, { NULL, "10.0.0.2", 11211, 1, false },
    };

    (void)state;
    for (int d = 0; d < HASHKIT_DIST_COUNT; d++) {
        struct hashkit_ring r = { 0 };

        build(&r, d, n, 2);
        assert_int_equal(r.nlive, 0);
        assert_int_equal(hashkit_ring_pick(&r, 12345), UINT32_MAX);
        build(&r, d, NULL, 0);
        assert_int_equal(hashkit_ring_pick(&r, 0), UINT32_MAX);
        hashkit_ring_deinit(&r);
    }
}

/* A refused build (weight 0, unknown dist) leaves the ring as it was. */
static void test_build_failure_keeps_ring(void **state)
{
    struct hashkit_node n[2] = {
        { NULL, "10.0.0.1", 11211, 1, true }, { NULL, "10.0.0.2", 11211, 1, true },
    };
    struct hashkit_ring r = { 0 };
    uint32_t npoints;

    (void)state;
    build(&r, HASHKIT_DIST_KETAMA, n, 2);
    npoints = r.npoints;
    n[1].weight = 0;
    assert_int_equal(hashkit_ring_build(&r, HASHKIT_DIST_KETAMA, n, 2), -1);
    assert_int_equal(hashkit_ring_build(&r, HASHKIT_DIST_COUNT, n, 1), -1);
    n[0].weight = n[1].weight = UINT32_MAX;
    assert_int_equal(hashkit_ring_build(&r, HASHKIT_DIST_MODULA, n, 2), -1);
    assert_int_equal(r.npoints, npoints);
    assert_int_equal(r.dist, HASHKIT_DIST_KETAMA);
    hashkit_ring_deinit(&r);
    hashkit_ring_deinit(&r);
}

/* ------------------------------------------------------------------ */
/* Routes observed on Debian's nutcracker 0.5.0                        */

/*
 * Pool: 127.0.0.1:11211:1, 127.0.0.1:41212:2, 127.0.0.1:41213:3,
 * 127.0.0.1:41214:1, unnamed or named alpha, beta, gamma, delta. Each
 * key was set through nutcracker and then found on one memcached; the
 * digit is that server's position in the pool file. (crc32 under ketama
 * really sends everything to one server: its hashes are below 0x8000.)
 */
static const char *const route_keys[] = {
    "foo", "bar", "apple", "key:1", "user/42/profile",
    "session:9f8e7d6c5b4a", "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87",
    "caf\xc3\xa9-1", "\xff\xfe\xfd", "a", NULL /* 250 x 'k' */,
    "memcached", "0", "{tag}rest", "abcdefghijkl", "abcdefghijklm",
};

struct route_vector {
    enum hashkit_hash hash;
    enum hashkit_dist dist;
    bool              named;
    const char       *nodes;     /* one digit per key of route_keys */
};

#define K HASHKIT_DIST_KETAMA
#define M HASHKIT_DIST_MODULA
static const struct route_vector routes[] = {
    { HASHKIT_HASH_ONE_AT_A_TIME, K, false, "3120230221212122" },
    { HASHKIT_HASH_ONE_AT_A_TIME, K, true,  "0212111332112000" },
    { HASHKIT_HASH_ONE_AT_A_TIME, M, false, "2231022220202221" },
    { HASHKIT_HASH_ONE_AT_A_TIME, M, true,  "3220132331312220" },
    { HASHKIT_HASH_MD5,      K, false, "2323222221121032" },
    { HASHKIT_HASH_MD5,      K, true,  "2220223210232223" },
    { HASHKIT_HASH_MD5,      M, false, "2121221123122221" },
    { HASHKIT_HASH_MD5,      M, true,  "2120220032122221" },
    { HASHKIT_HASH_CRC16,    K, false, "2022113320120021" },
    { HASHKIT_HASH_CRC16,    K, true,  "3012020313113222" },
    { HASHKIT_HASH_CRC16,    M, false, "1311211221202132" },
    { HASHKIT_HASH_CRC16,    M, true,  "0200310321212122" },
    { HASHKIT_HASH_CRC32,    K, false, "0000000000000000" },
    { HASHKIT_HASH_CRC32,    K, true,  "3333333333333333" },
    { HASHKIT_HASH_CRC32,    M, false, "1301223002322120" },
    { HASHKIT_HASH_CRC32,    M, true,  "0211222112232021" },
    { HASHKIT_HASH_CRC32A,   K, false, "0122221211111122" },
    { HASHKIT_HASH_CRC32A,   K, true,  "0102232213211121" },
    { HASHKIT_HASH_CRC32A,   M, false, "1022221222202101" },
    { HASHKIT_HASH_CRC32A,   M, true,  "0122231322212110" },
    { HASHKIT_HASH_FNV1_64,  K, false, "2213102103213222" },
    { HASHKIT_HASH_FNV1_64,  K, true,  "0021032222222013" },
    { HASHKIT_HASH_FNV1_64,  M, false, "3012221211121221" },
    { HASHKIT_HASH_FNV1_64,  M, true,  "2103230211021321" },
    { HASHKIT_HASH_FNV1A_64, K, false, "0223211213023212" },
    { HASHKIT_HASH_FNV1A_64, K, true,  "2322212322022200" },
    { HASHKIT_HASH_FNV1A_64, M, false, "0220232121122312" },
    { HASHKIT_HASH_FNV1A_64, M, true,  "1221222020022213" },
    { HASHKIT_HASH_FNV1_32,  K, false, "1312102231101202" },
    { HASHKIT_HASH_FNV1_32,  K, true,  "1311132011211120" },
    { HASHKIT_HASH_FNV1_32,  M, false, "2223221311110211" },
    { HASHKIT_HASH_FNV1_32,  M, true,  "3222320200111311" },
    { HASHKIT_HASH_FNV1A_32, K, false, "1210122222102223" },
    { HASHKIT_HASH_FNV1A_32, K, true,  "2223221220012311" },
    { HASHKIT_HASH_FNV1A_32, M, false, "1110202012120111" },
    { HASHKIT_HASH_FNV1A_32, M, true,  "0001213112121001" },
    { HASHKIT_HASH_HSIEH,    K, false, "2012121012112203" },
    { HASHKIT_HASH_HSIEH,    K, true,  "1123102213012200" },
    { HASHKIT_HASH_HSIEH,    M, false, "1210221031122012" },
    { HASHKIT_HASH_HSIEH,    M, true,  "1201320121123102" },
    { HASHKIT_HASH_MURMUR,   K, false, "1321103010202321" },
    { HASHKIT_HASH_MURMUR,   K, true,  "0000121303222130" },
    { HASHKIT_HASH_MURMUR,   M, false, "2022322333012212" },
    { HASHKIT_HASH_MURMUR,   M, true,  "2122222222113212" },
    { HASHKIT_HASH_JENKINS,  K, false, "2010020111012101" },
    { HASHKIT_HASH_JENKINS,  K, true,  "2222012203212313" },
    { HASHKIT_HASH_JENKINS,  M, false, "2321311002131022" },
    { HASHKIT_HASH_JENKINS,  M, true,  "2220211112120122" },
};
#undef K
#undef M

static void route_pool(struct hashkit_node *n, bool named, bool live2)
{
    static const char *const names[4] = { "alpha", "beta", "gamma", "delta" };
    static const uint16_t ports[4] = { 11211, 41212, 41213, 41214 };
    static const uint32_t weights[4] = { 1, 2, 3, 1 };

    for (int i = 0; i < 4; i++) {
        n[i] = (struct hashkit_node){ named ? names[i] : NULL, "127.0.0.1",
                                      ports[i], weights[i], true };
    }
    n[2].live = live2;
}

/* Checks where each key of route_keys goes on ring r under hash h. */
static void check_routes(const struct hashkit_ring *r, enum hashkit_hash h,
                         const char *expect, const char *what)
{
    char big[251];

    memset(big, 'k', 250);
    big[250] = '\0';
    for (size_t k = 0; k < ARRAY_LEN(route_keys); k++) {
        const char *key = route_keys[k] != NULL ? route_keys[k] : big;
        uint32_t got = hashkit_ring_pick(r, hashkit_hash(h, key, strlen(key)));

        if (got != (uint32_t)(expect[k] - '0')) {
            fail_msg("%s %s key #%zu: node %u, nutcracker %c", what,
                     hashkit_hash_name(h), k, got, expect[k]);
        }
    }
}

static void test_nutcracker_routes(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(routes); i++) {
        struct hashkit_node n[4];
        struct hashkit_ring r = { 0 };

        route_pool(n, routes[i].named, true);
        build(&r, routes[i].dist, n, 4);
        check_routes(&r, routes[i].hash, routes[i].nodes,
                     hashkit_dist_name(routes[i].dist));
        hashkit_ring_deinit(&r);
    }
}

/*
 * The same unnamed pool with server 2 ejected (auto_eject_hosts, after a
 * failed request). With unequal weights nutcracker recomputes every live
 * server's share of points, so under ketama some keys move between live
 * servers too ("foo", "key:1", "a" and "0" here); modula reshuffles.
 */
static void test_nutcracker_routes_ejected(void **state)
{
    struct hashkit_node n[4];
    struct hashkit_ring r = { 0 };

    (void)state;
    route_pool(n, false, false);
    build(&r, HASHKIT_DIST_KETAMA, n, 4);
    check_routes(&r, HASHKIT_HASH_FNV1A_64, "1111011010030010", "ejected");
    build(&r, HASHKIT_DIST_MODULA, n, 4);
    check_routes(&r, HASHKIT_HASH_MURMUR, "3313133130301113", "ejected");
    hashkit_ring_deinit(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_published),
        cmocka_unit_test(test_hash_nutcracker_specific),
        cmocka_unit_test(test_hash_sign_extension),
        cmocka_unit_test(test_md5_rfc1321),
        cmocka_unit_test(test_md5_ketama_words),
        cmocka_unit_test(test_murmur2_smhasher),
        cmocka_unit_test(test_lookup3_published),
        cmocka_unit_test(test_crc_tables),
        cmocka_unit_test(test_hash_dispatch),
        cmocka_unit_test(test_ketama_point_counts),
        cmocka_unit_test(test_ketama_lookup_edges),
        cmocka_unit_test(test_ketama_distribution),
        cmocka_unit_test(test_ketama_eject_moves_only_its_keys),
        cmocka_unit_test(test_ketama_unnamed_labels),
        cmocka_unit_test(test_ketama_long_name),
        cmocka_unit_test(test_modula),
        cmocka_unit_test(test_random_stays_live),
        cmocka_unit_test(test_no_live_node),
        cmocka_unit_test(test_build_failure_keeps_ring),
        cmocka_unit_test(test_nutcracker_routes),
        cmocka_unit_test(test_nutcracker_routes_ejected),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
