/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Events the kernel programs write into their ring buffers. Mirrored in Rust by
 * cluster-agent/src/node/events.rs; a unit test there compiles this header with the host C
 * compiler and compares sizes and offsets, so change both together.
 *
 * Every field is naturally aligned and padding is explicit, so the layout is the same for the
 * BPF target and the host. Integers are in host byte order, addresses in network byte order.
 */
#ifndef NODE_EVENTS_H
#define NODE_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define EVENT_COMM_LEN 16
#define EVENT_ADDR_LEN 16
#define DNS_MAX_PAYLOAD 512

enum tcp_event_kind {
	TCP_EVENT_CONNECT = 1,
	TCP_EVENT_ACCEPT = 2,
	TCP_EVENT_CLOSE = 3,
};

/*
 * One TCP connection seen from one end: connect (the client's process) or accept (the
 * server's process), and later the close of a socket reported by one of those. saddr/sport is
 * always the connecting side and daddr/dport the accepting side, so every event of one
 * connection carries the same 4-tuple. IPv4 addresses fill the first four bytes of saddr/daddr.
 *
 * A close repeats its socket's connect or accept event (process, cgroup, namespace, 4-tuple as
 * they were then), with side saying which, and the kernel's byte counters from the client's
 * view: bytes_sent went from the connecting side to the accepting side.
 */
struct tcp_event {
	__u64 timestamp_ns; /* CLOCK_BOOTTIME */
	__u64 cgroup_id;    /* cgroup v2 id of the process */
	__u64 netns_cookie; /* the socket's network namespace */
	__u32 netns_ino;    /* the same namespace as /proc/<pid>/ns/net shows it */
	__u32 pid;          /* thread group id: the process */
	__u32 tid;
	__u8 kind;          /* enum tcp_event_kind */
	__u8 side;          /* close: TCP_EVENT_CONNECT or TCP_EVENT_ACCEPT, the closed socket's end; else 0 */
	__u16 family;       /* AF_INET or AF_INET6 */
	__u16 sport;
	__u16 dport;
	__u8 saddr[EVENT_ADDR_LEN];
	__u8 daddr[EVENT_ADDR_LEN];
	char comm[EVENT_COMM_LEN];
	__u32 _pad1;
	__u64 bytes_sent;     /* close only: connecting side -> accepting side, acknowledged */
	__u64 bytes_received; /* close only: accepting side -> connecting side */
};

/*
 * A packet from a DNS server (source port 53, UDP or TCP) delivered to a socket on this node.
 * payload holds the start of the transport payload: the DNS message for UDP, the 2-byte length
 * prefix and the message for TCP. payload_len is the payload length in the packet and
 * captured_len how much of it was copied.
 */
struct dns_event {
	__u64 timestamp_ns; /* CLOCK_BOOTTIME */
	__u64 cgroup_id;    /* cgroup v2 id of the receiving socket */
	__u64 netns_cookie; /* the receiving socket's network namespace */
	__u32 netns_ino;
	__u32 ifindex;      /* interface the packet arrived on */
	__u16 family;       /* AF_INET or AF_INET6 */
	__u8 protocol;      /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 _pad0;
	__u16 sport;        /* the server's port */
	__u16 dport;        /* the client's port */
	__u8 saddr[EVENT_ADDR_LEN]; /* the server */
	__u8 daddr[EVENT_ADDR_LEN]; /* the client */
	__u16 payload_len;
	__u16 captured_len;
	__u32 _pad1;
	__u8 payload[DNS_MAX_PAYLOAD];
};

#endif /* NODE_EVENTS_H */
