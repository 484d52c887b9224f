// SPDX-License-Identifier: GPL-2.0
/*
 * TCP connections with the process on each end.
 *
 * Connect: the process that calls connect() is current when the socket goes CLOSE -> SYN_SENT
 * (but the source port is not chosen yet), so the owner is remembered by socket address and the
 * event is sent when the handshake completes (SYN_SENT -> ESTABLISHED).
 *
 * Accept: the server side of inet_sock_set_state runs in softirq, where current is whoever was
 * interrupted, so accepts come from the exit of accept()/accept4(): the returned fd is looked
 * up in the calling task's file table to find the new socket and its 4-tuple.
 *
 * Close: every socket reported by a connect or accept event is remembered (by its address)
 * with that event; when it reaches TCP_CLOSE (from any state, possibly in softirq, so nothing
 * is read from current) the event is sent again as a close with the kernel's byte counters.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* 1 MiB: ~10,900 events, ~130 ms at 40,000 connections/s; the kernel maps it twice */
} tcp_events SEC(".maps");

DEFINE_LOST_COUNTER(tcp_lost);

struct connect_owner {
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	char comm[EVENT_COMM_LEN];
};

/* Sockets in SYN_SENT and who connected them. LRU, so entries whose end we miss age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct connect_owner);
} connecting SEC(".maps");

/* Sockets reported by a connect or accept event, with that event, until they close. LRU, so
 * sockets whose close we miss (closed before accept() returned, a lost close) age out; a socket
 * pushed out while open closes unmeasured. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_event);
} reported SEC(".maps");

/* The record of syscalls/sys_exit_* (see its format file in tracefs). */
struct sys_exit_ctx {
	__u64 common;
	int syscall_nr;
	int _pad;
	long ret;
};

static __always_inline void remember_owner(__u64 sk)
{
	struct connect_owner owner = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	owner.pid = pid_tgid >> 32;
	owner.tid = (__u32)pid_tgid;
	owner.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(owner.comm, sizeof(owner.comm));
	bpf_map_update_elem(&connecting, &sk, &owner, BPF_ANY);
}

/* Remembers a reported socket with its event, for its close. Through the stack: older kernels
 * take no ring buffer memory as a map value. */
static __always_inline void remember(__u64 sk, struct tcp_event *e)
{
	struct tcp_event copy;

	__builtin_memcpy(&copy, e, sizeof(copy));
	bpf_map_update_elem(&reported, &sk, &copy, BPF_ANY);
}

/* A reported socket reached TCP_CLOSE: its event again, as a close with the byte counters. */
static __always_inline int try_close(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr;
	struct tcp_sock *tp = (struct tcp_sock *)ctx->skaddr;
	struct tcp_event *seen, *e;
	__u64 sent, retrans, received, flags;
	int err = 0;

	seen = bpf_map_lookup_elem(&reported, &sk);
	if (!seen)
		return E_SKIP;
	/* Payload only. bytes_acked and bytes_received count sequence space, so SYN and FIN are in
	 * them: what this socket sent is its transmitted payload less retransmissions, and what it
	 * received is bytes_received less the peer's FIN (tcp_fin() sets SOCK_DONE). */
	sent = BPF_CORE_READ(tp, bytes_sent);
	retrans = BPF_CORE_READ(tp, bytes_retrans);
	sent = sent > retrans ? sent - retrans : 0;
	received = BPF_CORE_READ(tp, bytes_received);
	flags = BPF_CORE_READ((struct sock *)ctx->skaddr, __sk_common.skc_flags);
	if (received && (flags & (1UL << SOCK_DONE)))
		received -= 1;
	e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&tcp_lost);
		err = E_FULL;
		goto forget;
	}
	__builtin_memcpy(e, seen, sizeof(*e));
	e->timestamp_ns = bpf_ktime_get_boot_ns();
	e->side = seen->kind;
	e->kind = TCP_EVENT_CLOSE;
	/* From the client's view: the accepting socket's received bytes are what the client sent. */
	if (seen->kind == TCP_EVENT_CONNECT) {
		e->bytes_sent = sent;
		e->bytes_received = received;
	} else {
		e->bytes_sent = received;
		e->bytes_received = sent;
	}
	bpf_ringbuf_submit(e, 0);
forget:
	bpf_map_delete_elem(&reported, &sk);
	return err;
}

static __always_inline int try_connect_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr;
	struct connect_owner *owner;
	struct tcp_event *e;
	__u16 family;
	int err = 0;

	if (ctx->protocol != IPPROTO_TCP)
		return E_SKIP;
	if (ctx->oldstate == TCP_CLOSE && ctx->newstate == TCP_SYN_SENT) {
		remember_owner(sk);
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return E_SKIP;
	owner = bpf_map_lookup_elem(&connecting, &sk);
	if (!owner)
		return E_SKIP;
	if (ctx->newstate != TCP_ESTABLISHED)
		goto forget;

	family = ctx->family;
	if (family != AF_INET && family != AF_INET6) {
		err = E_SKIP;
		goto forget;
	}
	e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&tcp_lost);
		err = E_FULL;
		goto forget;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->timestamp_ns = bpf_ktime_get_boot_ns();
	e->kind = TCP_EVENT_CONNECT;
	e->family = family;
	e->pid = owner->pid;
	e->tid = owner->tid;
	e->cgroup_id = owner->cgroup_id;
	__builtin_memcpy(e->comm, owner->comm, sizeof(e->comm));
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	}
	read_netns((struct sock *)ctx->skaddr, &e->netns_ino, &e->netns_cookie);
	remember(sk, e);
	bpf_ringbuf_submit(e, 0);
forget:
	bpf_map_delete_elem(&connecting, &sk);
	return err;
}

/* The socket behind file descriptor fd of the current task, or NULL. */
static __always_inline struct sock *socket_of_fd(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	struct file *file = NULL;
	struct socket *sock;

	if (fd < 0 || fd >= max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	/* A socket's file points back at it: this guards against a file that is no socket (the fd
	 * was closed and reused by another thread since accept returned). */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline int try_accept(struct sys_exit_ctx *ctx)
{
	struct sock *sk = socket_of_fd(ctx->ret);
	struct tcp_event *e;
	__u64 pid_tgid;
	__u16 family;

	if (!sk)
		return E_SKIP;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return E_SKIP;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return E_SKIP;

	e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&tcp_lost);
		return E_FULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	pid_tgid = bpf_get_current_pid_tgid();
	e->timestamp_ns = bpf_ktime_get_boot_ns();
	e->kind = TCP_EVENT_ACCEPT;
	e->family = family;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* The peer connected to us: it is the source. */
	e->sport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->dport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_daddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_rcv_saddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_daddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	}
	read_netns(sk, &e->netns_ino, &e->netns_cookie);
	remember((__u64)sk, e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate == TCP_CLOSE && ctx->protocol == IPPROTO_TCP)
		try_close(ctx);
	try_connect_state(ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tcp_accept4(struct sys_exit_ctx *ctx)
{
	try_accept(ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tcp_accept(struct sys_exit_ctx *ctx)
{
	try_accept(ctx);
	return 0;
}
