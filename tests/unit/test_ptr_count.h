/* test_ptr_count: counts the walks over an evbuffer from its first chain
 * (evbuffer_ptr_set with EVBUFFER_PTR_SET), for the framers' tests that
 * assert one per call, not one per unit. The test program links with
 * -Wl,--wrap=evbuffer_ptr_set. Include after <event2/buffer.h>. */
#ifndef STRATA_TEST_PTR_COUNT_H
#define STRATA_TEST_PTR_COUNT_H

static unsigned long ptr_lookups;

int __real_evbuffer_ptr_set(struct evbuffer *buf, struct evbuffer_ptr *pos,
                            size_t position, enum evbuffer_ptr_how how);
int __wrap_evbuffer_ptr_set(struct evbuffer *buf, struct evbuffer_ptr *pos,
                            size_t position, enum evbuffer_ptr_how how);

int __wrap_evbuffer_ptr_set(struct evbuffer *buf, struct evbuffer_ptr *pos,
                            size_t position, enum evbuffer_ptr_how how)
{
    if (how == EVBUFFER_PTR_SET)
        ptr_lookups++;
    return __real_evbuffer_ptr_set(buf, pos, position, how);
}

#endif
