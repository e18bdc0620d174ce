/*
 * hashkit ketama: the points each live server puts on the ketama circle,
 * computed as nutcracker (after libmemcached) computes them.
 *
 * A server of mean weight gets 160 points. Its points come from MD5
 * digests of the labels "<name>-0", "<name>-1", ...: each 16-byte digest
 * is read as four little-endian 32-bit words, one point each.
 */
#include <stdio.h>
#include <stdlib.h>

#include "hashkit_int.h"

#define KETAMA_POINTS_PER_SERVER 160   /* points of a server of mean weight */
#define KETAMA_POINTS_PER_HASH   4     /* one MD5 digest gives four points */
#define KETAMA_LABEL_MAX         273   /* nutcracker's label buffer, with NUL */

/*
 * The number of points of a member: its share of the live weight, times 40
 * digests per live server, rounded down, times 4 points per digest. The
 * arithmetic is nutcracker's, operation for operation, in float: rounding
 * decides the count (weights 1,2,3,1 give 88,180,272,88 points where exact
 * shares would be 91.4,182.9,274.3,91.4), so it must not be "improved".
 * nutcracker adds 1e-10 in double and rounds back to float; kept for the
 * same reason. The final cast truncates, which is floor for these
 * non-negative values.
 */
static uint32_t ketama_npoints(uint32_t weight, uint32_t total_weight,
                               uint32_t nlive)
{
    float pct = (float)weight / (float)total_weight;
    float digests = pct * (float)KETAMA_POINTS_PER_SERVER /
                    (float)KETAMA_POINTS_PER_HASH * (float)nlive;
    float nudged = (float)((double)digests + 0.0000000001);

    return (uint32_t)nudged * KETAMA_POINTS_PER_HASH;
}

/*
 * Writes label "<name>-<group>" into out[KETAMA_LABEL_MAX] and returns how
 * many bytes of it to hash. nutcracker 0.5.0 formats into a 273-byte
 * buffer and, when the label does not fit, logs "forced to truncate" and
 * hashes the 272 characters that did fit; so do we. (The 86-byte buffer of
 * older twemproxy sources is not what Debian's 0.5.0 binary does.)
 */
static size_t ketama_label(const struct hashkit_member *m, uint32_t group,
                           char *out)
{
    int n = snprintf(out, KETAMA_LABEL_MAX, "%s-%u", m->name, group);

    if (n < 0) {
        return 0;
    }
    return (size_t)n < KETAMA_LABEL_MAX ? (size_t)n : KETAMA_LABEL_MAX - 1;
}

/* Appends npoints points of member `rank` at pts[at]; returns the new end.
 * The points carry the rank for now, for ketama_point_cmp. */
static uint32_t ketama_add_member(struct hashkit_point *pts, uint32_t at,
                                  const struct hashkit_member *m,
                                  uint32_t rank, uint32_t npoints)
{
    char label[KETAMA_LABEL_MAX];
    unsigned char digest[HASHKIT_MD5_DIGEST_LEN];

    for (uint32_t g = 0; g < npoints / KETAMA_POINTS_PER_HASH; g++) {
        hashkit_md5_digest(label, ketama_label(m, g, label), digest);
        for (int w = 0; w < KETAMA_POINTS_PER_HASH; w++) {
            pts[at].value = hashkit_md5_word(digest, w);
            pts[at].index = rank;
            at++;
        }
    }
    return at;
}

/*
 * Orders points by value. nutcracker sorts by value alone with glibc's
 * qsort, a stable merge sort, so of two equal values the one added first
 * (the server first in nutcracker's order) comes first and wins the
 * lookup; breaking ties by rank gives that order with any sort.
 */
static int ketama_point_cmp(const void *l, const void *r)
{
    const struct hashkit_point *a = l, *b = r;

    if (a->value != b->value) {
        return a->value < b->value ? -1 : 1;
    }
    return (a->index > b->index) - (a->index < b->index);
}

int hashkit_ketama_build(struct hashkit_ring *ring,
                         const struct hashkit_member *members,
                         uint32_t nmembers, uint32_t total_weight)
{
    uint32_t total = 0, at = 0;

    for (uint32_t r = 0; r < nmembers; r++) {
        total += ketama_npoints(members[r].weight, total_weight, nmembers);
    }
    ring->points = calloc(total > 0 ? total : 1, sizeof(*ring->points));
    if (ring->points == NULL) {
        return -1;
    }
    for (uint32_t r = 0; r < nmembers; r++) {
        at = ketama_add_member(ring->points, at, &members[r], r,
                               ketama_npoints(members[r].weight, total_weight,
                                              nmembers));
    }
    qsort(ring->points, total, sizeof(*ring->points), ketama_point_cmp);
    for (uint32_t i = 0; i < total; i++) {
        ring->points[i].index = members[ring->points[i].index].index;
    }
    ring->npoints = total;
    return 0;
}
