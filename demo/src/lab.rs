//! Pods as network namespaces: one bridge (the machine's network), a veth per pod, each pod its
//! own IP. Programs run inside a pod with `ip netns exec`. Needs root. Every name is written to
//! the run's ledger before it is made and every program runs in the run's process group (see
//! [`crate::cleanup`]); the lab stops its programs and removes its network on drop.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
use testkit::netns::Bridge;

use crate::cleanup::Tracker;

pub struct Lab {
    // Dropped after the programs (fields drop in order): a namespace lives as long as a
    // process in it.
    children: Vec<Child>,
    bridge: Bridge,
    tag: String,
    tracker: Arc<Tracker>,
}

impl Lab {
    /// A bridge `<tag>-br`; pods are namespaces `<tag>-<n>` with a veth `<tag>-<n>v` on it
    /// ([`Bridge`]). `tag` is at most 11 characters and unique on the machine: whatever already
    /// carries its names is removed.
    pub fn new(tag: &str, tracker: Arc<Tracker>) -> anyhow::Result<Lab> {
        anyhow::ensure!(tag.len() <= Bridge::MAX_TAG, "lab tag {tag} is longer than 11 characters");
        tracker.note_link(&Bridge::bridge_name(tag))?;
        let bridge =
            Bridge::new(tag).context("creating the lab bridge (needs root and iproute2)")?;
        Ok(Lab { children: Vec::new(), bridge, tag: tag.to_owned(), tracker })
    }

    /// A pod namespace with `ip`/16 on the bridge.
    pub fn add_pod(&mut self, ip: &str) -> anyhow::Result<String> {
        let (ns, veth) = Bridge::pod_names(&self.tag, self.bridge.next_pod());
        self.tracker.note_namespace(&ns)?;
        self.tracker.note_link(&veth)?;
        self.bridge.add_pod(&format!("{ip}/16"))
    }

    /// Runs `program args` inside pod `ns` until the lab is dropped.
    pub fn run(&mut self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = self.tracker.spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, program])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            &format!("{program} in {ns}"),
        )?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The programs first; the bridge removes the network when it drops after this.
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP server on `ip:port` that accepts and holds connections.
pub const PY_SERVER: &str = "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)\nc=[]\nwhile True: c.append(s.accept())";
/// `argv[3]` short TCP connections to `argv[1]:argv[2]`, one every 100 ms.
pub const PY_CLIENT: &str = "import socket,sys,time\nfor _ in range(int(sys.argv[3])):\n  s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); time.sleep(0.1); s.close()";
/// Resolves `argv[2]` at the DNS server `argv[1]` (one A query), then connects to the answer's
/// first address on port `argv[3]`, `argv[4]` times.
pub const PY_RESOLVE_AND_CONNECT: &str = "import socket,struct,sys,time
q=struct.pack('>HHHHHH',0x4242,0x0100,1,0,0,0)+b''.join(bytes([len(l)])+l.encode() for l in sys.argv[2].split('.'))+b'\\x00'+struct.pack('>HH',1,1)
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(3); u.sendto(q,(sys.argv[1],53)); r=u.recv(512)
ip='.'.join(str(b) for b in r[-4:])
for _ in range(int(sys.argv[4])):
  s=socket.create_connection((ip, int(sys.argv[3])), timeout=5); time.sleep(0.1); s.close()";
