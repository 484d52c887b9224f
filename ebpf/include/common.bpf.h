/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Shared by the kernel programs only (needs vmlinux.h). */
#ifndef NODE_COMMON_BPF_H
#define NODE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "events.h"

/* uapi constants: macros, so not in vmlinux.h */
#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* Error codes of the try_* functions; the program entries ignore them (a tracepoint's or
 * cgroup_skb's return value is no place for them) but they keep each early exit explicit. */
#define E_SKIP 1    /* not an event we want */
#define E_READ 2    /* a kernel or packet read failed */
#define E_FULL 3    /* the ring buffer was full: counted in the lost map */

/* A one-slot per-CPU counter of events dropped because the ring buffer was full. */
#define DEFINE_LOST_COUNTER(name)                                                                  \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                           \
		__uint(max_entries, 1);                                                            \
		__type(key, __u32);                                                                \
		__type(value, __u64);                                                              \
	} name SEC(".maps")

static __always_inline void count_lost(void *lost_map)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(lost_map, &zero);

	if (lost)
		*lost += 1;
}

static __always_inline void read_netns(struct sock *sk, __u32 *ino, __u64 *cookie)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	*ino = BPF_CORE_READ(net, ns.inum);
	*cookie = BPF_CORE_READ(net, net_cookie);
}

#endif /* NODE_COMMON_BPF_H */
