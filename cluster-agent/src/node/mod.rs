//! `cluster-agent node`: the per-node half.

pub mod agent;
pub mod attribution;
pub mod capture;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod proc_scan;
/// Shipping to the mapper lives in its own crate, shared with `aws-proxy`.
pub use observation_ship as ship;

/// How the node agent captures, as `/healthz` names it: `ebpf`, or `fallback` (/proc scans and a
/// raw-socket DNS capture) when eBPF does not load or `--no-ebpf` says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    Ebpf,
    Fallback,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Ebpf => "ebpf",
            CaptureMode::Fallback => "fallback",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CaptureMode;

    #[test]
    fn capture_modes_keep_their_health_names() {
        assert_eq!(CaptureMode::Ebpf.as_str(), "ebpf");
        assert_eq!(CaptureMode::Fallback.as_str(), "fallback");
    }
}
