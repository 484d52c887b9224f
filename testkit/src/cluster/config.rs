//! The configuration files of a test cluster's components, as plain text from plain values.

use std::path::Path;

use base64::Engine as _;

/// The node's own address, on a link of ours (`imk8s0`, a bridge with no ports: the kernel has no dummy links): the API server advertises it,
/// the kubelet serves on it, and pods reach the API server's Service through it.
pub const NODE_IP: &str = "10.213.0.1";
/// The node's IPv6 address, beside [`NODE_IP`] on the same link.
pub const NODE_IP6: &str = "fd00:10:213::1";
/// The link that holds [`NODE_IP`].
pub const NODE_LINK: &str = "imk8s0";
/// The CNI bridge the pods hang off (its address is the pods' gateway, `10.213.1.1`).
pub const BRIDGE: &str = "imk8s-br0";
/// The CNI network's name (also the prefix of its cached results in /var/lib/cni).
pub const CNI_NETWORK: &str = "imk8s";
/// Pod addresses: each pod gets one of each family (dual-stack).
pub const POD_CIDR: &str = "10.213.1.0/24";
pub const POD_CIDR6: &str = "fd00:10:213:1::/64";
/// ClusterIPs. Services are IPv4 unless they ask for IPv6 (`ipFamilyPolicy`).
pub const SERVICE_CIDR: &str = "10.213.16.0/24";
pub const SERVICE_CIDR6: &str = "fd00:10:213:16::/112";
/// The `kubernetes` Service's ClusterIP (the first of [`SERVICE_CIDR`]).
pub const API_SERVICE_IP: &str = "10.213.16.1";
/// The `kube-dns` Service's ClusterIP, which the kubelet gives pods as their nameserver.
pub const DNS_SERVICE_IP: &str = "10.213.16.10";
/// The one node's name.
pub const NODE_NAME: &str = "intentmap-node";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The service-account token issuer (and so the default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The local ports the components listen on, picked free at start.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
    pub kubelet: u16,
    pub kubelet_healthz: u16,
    pub proxy_healthz: u16,
    pub proxy_metrics: u16,
}

/// Where a run's files go, all under its run directory.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub dir: &'a Path,
}

impl Layout<'_> {
    pub fn path(&self, relative: &str) -> String {
        self.dir.join(relative).display().to_string()
    }
    pub fn containerd_socket(&self) -> String {
        self.path("containerd.sock")
    }
}

/// containerd 1.6's configuration (version 2): its own root, state and socket, the CRI plugin
/// with runc on the cgroupfs driver, our pause image, CNI from Debian's plugins and our
/// configuration folder, network namespaces under the state folder (so cleanup finds them).
/// OOM score adjustments are kept at or above containerd's own: this machine's root lacks
/// CAP_SYS_RESOURCE, and runc fails a pod sandbox's `-998` with "failed to update
/// /proc/self/oom_score_adj: Permission denied" (seen as "can't get final child's PID from
/// pipe: EOF").
pub fn containerd_toml(layout: &Layout, pause_image: &str, cni_bin_dir: &str) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"#,
        root = layout.path("containerd/root"),
        state = layout.path("containerd/state"),
        socket = layout.containerd_socket(),
        opt = layout.path("containerd/opt"),
        cni_conf = layout.path("cni/net.d"),
    )
}

/// The pods' network: a bridge with host-local addresses from [`POD_CIDR`] and [`POD_CIDR6`]
/// (the bridge is their gateway and masquerades what leaves the ranges), and portmap for
/// `hostPort`s.
pub fn cni_conflist(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}], [{"subnet": POD_CIDR6}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    "dataDir": layout.path("cni/ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// The kubelet: cgroupfs (PID 1 is not systemd), cgroup v1 allowed (`failCgroupV1: false`:
/// this kernel's controllers are v1 with cgroup2 beside them), x509 + webhook authentication
/// and webhook authorization like a kubeadm node, its logs, pods and certificates under the run
/// directory, no image garbage collection (the images are imported, not pullable) and eviction
/// thresholds low enough for a shared test machine.
pub fn kubelet_yaml(layout: &Layout, ports: &Ports) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {kubelet}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
clusterDomain: {CLUSTER_DOMAIN}
clusterDNS:
- {DNS_SERVICE_IP}
resolvConf: "{resolv}"
podLogsDir: {pod_logs}
rotateCertificates: false
serverTLSBootstrap: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
hairpinMode: hairpin-veth
maxPods: 50
serializeImagePulls: false
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
"#,
        kubelet = ports.kubelet,
        healthz = ports.kubelet_healthz,
        socket = layout.containerd_socket(),
        ca = layout.path("pki/ca.crt"),
        cert = layout.path("pki/kubelet.crt"),
        key = layout.path("pki/kubelet.key"),
        resolv = layout.path("resolv.conf"),
        pod_logs = layout.path("pod-logs"),
    )
}

/// kube-proxy in iptables mode. It leaves the conntrack sysctls alone (0 = keep the kernel's),
/// which a shared machine should not have changed by a test.
pub fn kube_proxy_yaml(layout: &Layout, ports: &Ports) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR},{POD_CIDR6}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nodePortAddresses: ["{NODE_IP}/32", "{NODE_IP6}/128"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = layout.path("kube-proxy.kubeconfig"),
        healthz = ports.proxy_healthz,
        metrics = ports.proxy_metrics,
    )
}

/// A kubeconfig with everything inline (it can be copied elsewhere and still work).
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: intentmap-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {user}@intentmap-test
  context:
    cluster: intentmap-test
    user: {user}
    namespace: default
current-context: {user}@intentmap-test
"#,
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// CoreDNS as the cluster DNS, the way kubeadm installs it (ServiceAccount, RBAC, Corefile,
/// Deployment, the `kube-dns` Service on [`DNS_SERVICE_IP`]), with our image. It answers for
/// the cluster's names only: nothing is forwarded, since this machine has no outside DNS to
/// forward to.
pub fn coredns_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health {{
            lameduck 1s
        }}
        ready
        kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
            pods insecure
            ttl 30
        }}
        cache 30
        loadbalance
        reload
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: coredns
          items: [{{key: Corefile, path: Corefile}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_name_the_run_directory_and_the_ports() {
        let dir = Path::new("/var/lib/intentmap-test/k8s/c42");
        let layout = Layout { dir };
        let ports = Ports {
            etcd_client: 1,
            etcd_peer: 2,
            apiserver: 3,
            controller_manager: 4,
            scheduler: 5,
            kubelet: 10250,
            kubelet_healthz: 10248,
            proxy_healthz: 7,
            proxy_metrics: 8,
        };
        let containerd = containerd_toml(&layout, "intentmap.test/pause:1", "/usr/lib/cni");
        assert!(
            containerd.contains(r#"address = "/var/lib/intentmap-test/k8s/c42/containerd.sock""#),
            "{containerd}"
        );
        assert!(
            containerd.contains("SystemdCgroup = false")
                && containerd.contains("netns_mounts_under_state_dir = true")
        );
        let cni: serde_json::Value = serde_json::from_str(&cni_conflist(&layout)).unwrap();
        assert_eq!(cni["plugins"][0]["bridge"], BRIDGE);
        assert_eq!(
            cni["plugins"][0]["ipam"]["dataDir"],
            "/var/lib/intentmap-test/k8s/c42/cni/ipam"
        );
        let kubelet: serde_yaml::Value =
            serde_yaml::from_str(&kubelet_yaml(&layout, &ports)).unwrap();
        assert_eq!(kubelet["failCgroupV1"], serde_yaml::Value::Bool(false));
        assert_eq!(kubelet["port"].as_u64(), Some(10250));
        assert_eq!(
            kubelet["containerRuntimeEndpoint"].as_str(),
            Some("unix:///var/lib/intentmap-test/k8s/c42/containerd.sock")
        );
        let proxy: serde_yaml::Value =
            serde_yaml::from_str(&kube_proxy_yaml(&layout, &ports)).unwrap();
        assert_eq!(proxy["mode"].as_str(), Some("iptables"));
        for doc in coredns_manifest("intentmap.test/coredns:1").split("\n---\n") {
            let doc: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            assert!(doc["kind"].as_str().is_some(), "{doc:?}");
        }
    }

    #[test]
    fn kubeconfigs_carry_their_credentials_inline() {
        let text = kubeconfig("https://10.213.0.1:6443", "CA", "admin", "CERT", "KEY");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
        assert_eq!(doc["users"][0]["user"]["client-key-data"].as_str(), Some("S0VZ"));
        assert_eq!(doc["current-context"].as_str(), Some("admin@intentmap-test"));
    }
}
