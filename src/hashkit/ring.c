/*
 * hashkit ring: the continuum nutcracker builds for each distribution, over
 * the live nodes, and the lookup of a key hash on it.
 *
 *   ketama  every live node owns points (value = 32-bit position) spread
 *           over the circle in proportion to its weight (ketama.c); the
 *           points are sorted, and a hash belongs to the first point at or
 *           after it, wrapping past the top to the first point.
 *   modula  one point per live node, value = the running total of the
 *           weights up to and including it; hash % total weight falls in
 *           exactly one node's range (nutcracker lays out `weight` slots
 *           per node and indexes them; the answer is the same).
 *   random  one point per live node; the caller's random number modulo
 *           the number of live nodes picks one, weights ignored.
 *
 * Node order matters to modula (which range is whose), to random, and to
 * ketama when two points collide. nutcracker does not keep the pool file's
 * order: when it loads the file it sorts each pool's servers by name
 * (shorter name first, then byte by byte) to reject duplicates, and keeps
 * that order. We do the same here, while still reporting indices into the
 * caller's array.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashkit_int.h"

#define KETAMA_DEFAULT_PORT 11211

/*
 * The name nutcracker gives a server, as a new string (NULL when out of
 * memory):
 *   named node                 "<name>"
 *   unnamed, port 11211        "<host>"        (libmemcached's habit)
 *   unnamed, unix socket       "<path>:"       (the colon is nutcracker's)
 *   unnamed, any other port    "<host>:<port>"
 * nutcracker takes the unnamed form verbatim from the pool file; a port
 * written unusually there (leading zeros) can only be matched by passing
 * the verbatim "host:port" text as the node's name.
 */
static char *ring_member_name(const struct hashkit_node *node)
{
    char port[8] = "";
    size_t len;
    char *name;

    if (node->name != NULL) {
        return strdup(node->name);
    }
    if (node->port == 0) {
        strcpy(port, ":");
    } else if (node->port != KETAMA_DEFAULT_PORT) {
        snprintf(port, sizeof(port), ":%u", (unsigned)node->port);
    }
    len = strlen(node->host) + strlen(port);
    name = malloc(len + 1);
    if (name != NULL) {
        snprintf(name, len + 1, "%s%s", node->host, port);
    }
    return name;
}

/* nutcracker's server order: by name length, then bytes (unsigned). Node
 * index breaks ties, which only a pool nutcracker refuses can have. */
static int ring_member_cmp(const void *l, const void *r)
{
    const struct hashkit_member *a = l, *b = r;
    int c;

    if (a->len != b->len) {
        return a->len < b->len ? -1 : 1;
    }
    c = memcmp(a->name, b->name, a->len);
    if (c != 0) {
        return c;
    }
    return (a->index > b->index) - (a->index < b->index);
}

static void ring_members_destroy(struct hashkit_member **members, uint32_t n)
{
    if (*members == NULL) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        free((*members)[i].name);
    }
    free(*members);
    *members = NULL;
}

/* The live nodes, named and in nutcracker's order, as a new array of nlive
 * members (never NULL on success, even when nlive is 0). Returns NULL
 * when out of memory. */
static struct hashkit_member *
ring_members_create(const struct hashkit_node *nodes, uint32_t nnodes,
                    uint32_t nlive)
{
    struct hashkit_member *members = calloc(nlive > 0 ? nlive : 1,
                                            sizeof(*members));
    uint32_t at = 0;

    if (members == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < nnodes; i++) {
        if (!nodes[i].live) {
            continue;
        }
        members[at].index = i;
        members[at].weight = nodes[i].weight;
        members[at].name = ring_member_name(&nodes[i]);
        if (members[at].name == NULL) {
            ring_members_destroy(&members, at);
            return NULL;
        }
        members[at].len = strlen(members[at].name);
        at++;
    }
    qsort(members, nlive, sizeof(*members), ring_member_cmp);
    return members;
}

/* Counts the live nodes into *nlive and their weight into *weight.
 * Returns -1 if a live node has weight 0 or the weights add up past
 * UINT32_MAX, else 0. */
static int ring_count(const struct hashkit_node *nodes, uint32_t nnodes,
                      uint32_t *nlive, uint32_t *weight)
{
    uint64_t sum = 0;

    *nlive = 0;
    for (uint32_t i = 0; i < nnodes; i++) {
        if (!nodes[i].live) {
            continue;
        }
        if (nodes[i].weight == 0) {
            return -1;
        }
        (*nlive)++;
        sum += nodes[i].weight;
    }
    if (sum > UINT32_MAX) {
        return -1;
    }
    *weight = (uint32_t)sum;
    return 0;
}

/* One point per member, in order; for modula the value is the running
 * weight total, for random it is unused. Returns 0, or -1 out of memory. */
static int ring_build_linear(struct hashkit_ring *ring,
                             const struct hashkit_member *members,
                             uint32_t nmembers)
{
    uint32_t cumulative = 0;

    ring->points = calloc(nmembers, sizeof(*ring->points));
    if (ring->points == NULL) {
        return -1;
    }
    for (uint32_t r = 0; r < nmembers; r++) {
        cumulative += members[r].weight;
        ring->points[r].value =
            ring->dist == HASHKIT_DIST_MODULA ? cumulative : 0;
        ring->points[r].index = members[r].index;
    }
    ring->npoints = nmembers;
    return 0;
}

/* Fills an empty ring of a known dist over the given members. */
static int ring_fill(struct hashkit_ring *ring,
                     const struct hashkit_member *members, uint32_t nlive,
                     uint32_t weight)
{
    if (nlive == 0) {
        return 0;
    }
    if (ring->dist == HASHKIT_DIST_KETAMA) {
        return hashkit_ketama_build(ring, members, nlive, weight);
    }
    return ring_build_linear(ring, members, nlive);
}

/* Builds into a fresh ring, so that on failure the caller's ring is left
 * as it was. */
int hashkit_ring_build(struct hashkit_ring *ring, enum hashkit_dist dist,
                       const struct hashkit_node *nodes, uint32_t nnodes)
{
    struct hashkit_ring fresh = { .dist = dist };
    struct hashkit_member *members;
    uint32_t weight;
    int rc;

    if ((unsigned)dist >= HASHKIT_DIST_COUNT ||
        ring_count(nodes, nnodes, &fresh.nlive, &weight) != 0) {
        return -1;
    }
    members = ring_members_create(nodes, nnodes, fresh.nlive);
    if (members == NULL) {
        return -1;
    }
    rc = ring_fill(&fresh, members, fresh.nlive, weight);
    ring_members_destroy(&members, fresh.nlive);
    if (rc != 0) {
        hashkit_ring_deinit(&fresh);
        return -1;
    }
    hashkit_ring_deinit(ring);
    *ring = fresh;
    return 0;
}

void hashkit_ring_deinit(struct hashkit_ring *ring)
{
    free(ring->points);
    ring->points = NULL;
    ring->npoints = 0;
    ring->nlive = 0;
}

/* Index of the first point whose value is >= key, or n if there is none. */
static uint32_t ring_lower_bound(const struct hashkit_point *pts, uint32_t n,
                                 uint32_t key)
{
    uint32_t lo = 0, hi = n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (pts[mid].value < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* The first point at or after hash; past the last point, the first. */
static uint32_t ring_pick_ketama(const struct hashkit_ring *ring,
                                 uint32_t hash)
{
    uint32_t at = ring_lower_bound(ring->points, ring->npoints, hash);

    return ring->points[at < ring->npoints ? at : 0].index;
}

/* The node whose weight range holds hash % total weight: the first point
 * whose running total exceeds it. */
static uint32_t ring_pick_modula(const struct hashkit_ring *ring,
                                 uint32_t hash)
{
    uint32_t total = ring->points[ring->npoints - 1].value;
    uint32_t slot = hash % total;

    return ring->points[ring_lower_bound(ring->points, ring->npoints,
                                         slot + 1)].index;
}

uint32_t hashkit_ring_pick(const struct hashkit_ring *ring, uint32_t hash)
{
    if (ring->npoints == 0) {
        return UINT32_MAX;
    }
    switch (ring->dist) {
    case HASHKIT_DIST_KETAMA:
        return ring_pick_ketama(ring, hash);
    case HASHKIT_DIST_MODULA:
        return ring_pick_modula(ring, hash);
    case HASHKIT_DIST_RANDOM:
        return ring->points[hash % ring->npoints].index;
    default:
        return UINT32_MAX;
    }
}
