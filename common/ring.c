/* ring.c - partition hashing and rendezvous (highest random weight) assignment */
#include "ring.h"
#include <string.h>

uint64_t
ring_hash (const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p [i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint32_t
ring_partition (const char *integration, uint32_t partitions)
{
    return (uint32_t) (ring_hash (integration, strlen (integration)) % partitions);
}

/* FNV-1a mixes its last bytes poorly; the splitmix64 finalizer spreads them over all bits,
 * which rendezvous hashing needs to balance partitions across workers. */
static uint64_t
mix64 (uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t
ring_score (const char *worker, uint32_t partition)
{
    unsigned char tail [5] = { 0, (unsigned char) (partition >> 24), (unsigned char) (partition >> 16),
                               (unsigned char) (partition >> 8), (unsigned char) partition };
    uint64_t h = ring_hash (worker, strlen (worker));
    /* continue the same FNV-1a state over the separator and partition bytes */
    for (size_t i = 0; i < sizeof tail; i++) {
        h ^= tail [i];
        h *= 0x100000001b3ULL;
    }
    return mix64 (h);
}

int
ring_owner (uint32_t partition, const char *const *workers, size_t n)
{
    int best = -1;
    uint64_t best_score = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = ring_score (workers [i], partition);
        if (best < 0 || s > best_score
        || (s == best_score && strcmp (workers [i], workers [best]) < 0)) {
            best = (int) i;
            best_score = s;
        }
    }
    return best;
}
