// SPDX-License-Identifier: GPL-2.0
/*
 * DNS answers delivered on this node: every packet from source port 53 (UDP or TCP, IPv4 or
 * IPv6) that reaches a socket. Attached as cgroup_skb/ingress to the cgroup v2 root, so it sees
 * the sockets of every process (pods included) whatever their network namespace. At this hook
 * the packet starts at the IP header and is already reassembled.
 *
 * It only observes: the program always returns 1 (let the packet through).
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 << 10); /* 512 KiB: ~880 answers of 592 bytes */
} dns_events SEC(".maps");

DEFINE_LOST_COUNTER(dns_lost);

#define DNS_PORT 53
#define IPV6_HDR_LEN 40
#define UDP_HDR_LEN 8
#define TCP_HDR_MIN_LEN 20

/* Where the transport header and payload are, read from the IP and transport headers. */
struct dns_packet {
	__u16 family;
	__u8 protocol;
	__u16 sport;
	__u16 dport;
	__u32 payload_off;
	__u8 saddr[EVENT_ADDR_LEN];
	__u8 daddr[EVENT_ADDR_LEN];
};

static __always_inline int read_ip(struct __sk_buff *skb, struct dns_packet *p, __u32 *l4_off)
{
	__u8 hdr[IPV6_HDR_LEN];

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, hdr, 20))
			return E_READ;
		if (hdr[0] >> 4 != 4)
			return E_SKIP;
		p->family = AF_INET;
		p->protocol = hdr[9];
		__builtin_memcpy(p->saddr, &hdr[12], 4);
		__builtin_memcpy(p->daddr, &hdr[16], 4);
		*l4_off = (hdr[0] & 0x0f) * 4;
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 0, hdr, IPV6_HDR_LEN))
			return E_READ;
		if (hdr[0] >> 4 != 6)
			return E_SKIP;
		/* DNS answers with extension headers are rare enough to miss. */
		p->family = AF_INET6;
		p->protocol = hdr[6];
		__builtin_memcpy(p->saddr, &hdr[8], 16);
		__builtin_memcpy(p->daddr, &hdr[24], 16);
		*l4_off = IPV6_HDR_LEN;
		return 0;
	}
	return E_SKIP;
}

static __always_inline int read_transport(struct __sk_buff *skb, struct dns_packet *p, __u32 l4_off)
{
	__u8 hdr[TCP_HDR_MIN_LEN];

	if (p->protocol == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_off, hdr, UDP_HDR_LEN))
			return E_READ;
		p->payload_off = l4_off + UDP_HDR_LEN;
	} else if (p->protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4_off, hdr, TCP_HDR_MIN_LEN))
			return E_READ;
		p->payload_off = l4_off + (hdr[12] >> 4) * 4;
	} else {
		return E_SKIP;
	}
	p->sport = ((__u16)hdr[0] << 8) | hdr[1];
	p->dport = ((__u16)hdr[2] << 8) | hdr[3];
	return p->sport == DNS_PORT ? 0 : E_SKIP;
}

static __always_inline int try_capture_dns(struct __sk_buff *skb)
{
	/* The program context is the kernel's sk_buff, whatever the uapi view says. */
	struct sk_buff *kskb = (struct sk_buff *)skb;
	struct dns_packet p = {};
	struct dns_event *e;
	__u32 l4_off = 0, payload_len;
	__u64 n;
	int err;

	err = read_ip(skb, &p, &l4_off);
	if (err)
		return err;
	err = read_transport(skb, &p, l4_off);
	if (err)
		return err;
	if (skb->len <= p.payload_off)
		return E_SKIP; /* a bare ACK, SYN or FIN from a DNS server */
	payload_len = skb->len - p.payload_off;

	e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&dns_lost);
		return E_FULL;
	}
	e->timestamp_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->netns_ino = 0;
	e->netns_cookie = 0;
	read_netns(BPF_CORE_READ(kskb, sk), &e->netns_ino, &e->netns_cookie);
	e->ifindex = skb->ifindex;
	e->family = p.family;
	e->protocol = p.protocol;
	e->_pad0 = 0;
	e->sport = p.sport;
	e->dport = p.dport;
	__builtin_memcpy(e->saddr, p.saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, p.daddr, sizeof(e->daddr));
	e->_pad1 = 0;

	e->payload_len = payload_len > 0xffff ? 0xffff : payload_len;
	n = payload_len < DNS_MAX_PAYLOAD ? payload_len : DNS_MAX_PAYLOAD;
	/* Clang knows n <= DNS_MAX_PAYLOAD already and would drop the check below, or do it on a
	 * copy of the register; the verifier needs it on the register passed to the helper. */
	asm volatile("" : "+r"(n));
	if (n == 0 || n > DNS_MAX_PAYLOAD || bpf_skb_load_bytes(skb, p.payload_off, e->payload, n)) {
		bpf_ringbuf_discard(e, 0);
		return E_READ;
	}
	e->captured_len = n;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	try_capture_dns(skb);
	return 1;
}
