//! Manifests of the small workloads that tests and the demo run on a real cluster: one pod of the
//! busybox traffic image running a shell script, and the Service in front of it.

use std::fmt::Write as _;

/// A workload of one pod: `name` in `namespace`, its pod labelled `app: <name>`, one container
/// `main` running `script` with `/bin/sh -c` in `image` (imported into the node, never pulled),
/// given a second to stop. [`Workload::yaml`] is the manifest, a YAML document starting `---`.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    image: &'a str,
    script: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    annotations: Vec<(&'a str, &'a str)>,
    env_from_fields: Vec<(&'a str, &'a str)>,
    port: Option<u16>,
}

impl<'a> Workload<'a> {
    /// A Deployment of one replica.
    pub fn deployment(namespace: &'a str, name: &'a str, image: &'a str, script: &'a str) -> Self {
        Workload {
            kind: "Deployment",
            namespace,
            name,
            image,
            script,
            labels: Vec::new(),
            annotations: Vec::new(),
            env_from_fields: Vec::new(),
            port: None,
        }
    }

    /// A StatefulSet of one replica instead, governed by the Service of its own name.
    pub fn stateful_set(mut self) -> Self {
        self.kind = "StatefulSet";
        self
    }

    /// One more label on the pod (besides `app`).
    pub fn label(mut self, key: &'a str, value: &'a str) -> Self {
        self.labels.push((key, value));
        self
    }

    /// An annotation on the pod.
    pub fn annotation(mut self, key: &'a str, value: &'a str) -> Self {
        self.annotations.push((key, value));
        self
    }

    /// The environment variable `name` set from the pod's field `path` (`status.hostIP`).
    pub fn env_from_field(mut self, name: &'a str, path: &'a str) -> Self {
        self.env_from_fields.push((name, path));
        self
    }

    /// The container port the script serves on.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The manifest: a YAML document starting with `---`.
    pub fn yaml(&self) -> String {
        let Workload { kind, namespace, name, image, .. } = self;
        let service_name =
            if *kind == "StatefulSet" { format!("\n  serviceName: {name}") } else { String::new() };
        let labels: String =
            self.labels.iter().map(|(key, value)| format!(", {key}: {value}")).collect();
        let mut yaml = format!(
            "---
apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
  namespace: {namespace}
spec:{service_name}
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}{labels}}}
"
        );
        if !self.annotations.is_empty() {
            let annotations: Vec<String> =
                self.annotations.iter().map(|(key, value)| format!("{key}: {value}")).collect();
            let _ = writeln!(yaml, "      annotations: {{{}}}", annotations.join(", "));
        }
        let _ = write!(
            yaml,
            "    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
"
        );
        if !self.env_from_fields.is_empty() {
            yaml += "        env:\n";
            for (env, path) in &self.env_from_fields {
                let _ = writeln!(
                    yaml,
                    "        - name: {env}\n          valueFrom: {{fieldRef: {{fieldPath: {path}}}}}"
                );
            }
        }
        yaml += "        command:\n        - /bin/sh\n        - -c\n        - |\n";
        for line in self.script.trim_end().lines() {
            let _ = writeln!(yaml, "          {line}");
        }
        if let Some(port) = self.port {
            let _ = writeln!(yaml, "        ports: [{{containerPort: {port}}}]");
        }
        yaml
    }
}

/// A Service `name` in `namespace` in front of the pods labelled `app: <name>`, `port` to the
/// same port; a YAML document starting with `---`.
pub fn service(namespace: &str, name: &str, port: u16) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {port}, targetPort: {port}}}]
"
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::Service;

    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let doc = yaml.strip_prefix("---\n").expect("a document starting with ---");
        serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{yaml}"))
    }

    #[test]
    fn a_deployment_runs_its_script_as_written_with_its_labels_annotations_env_and_port() {
        let script = "mkdir -p /www && httpd -p 8080 -h /www\nwhile true; do\n  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$HOST_IP\" 8080; sleep 2\ndone\n";
        let yaml = Workload::deployment("shop", "web", "traffic:1", script)
            .label("otterize/service-name", "invoices")
            .annotation("intents.otterize.com/workload-name", "billing")
            .env_from_field("HOST_IP", "status.hostIP")
            .port(8080)
            .yaml();
        let d: Deployment = parse(&yaml);
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let selector = spec.selector.match_labels.expect("match labels");
        assert_eq!(selector.get("app").map(String::as_str), Some("web"));
        let meta = spec.template.metadata.expect("pod metadata");
        let labels = meta.labels.expect("pod labels");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get("otterize/service-name").map(String::as_str), Some("invoices"));
        let annotations = meta.annotations.expect("pod annotations");
        assert_eq!(
            annotations.get("intents.otterize.com/workload-name").map(String::as_str),
            Some("billing")
        );
        let pod = spec.template.spec.expect("a pod spec");
        assert_eq!(pod.termination_grace_period_seconds, Some(1));
        let main = &pod.containers[0];
        assert_eq!((main.name.as_str(), main.image.as_deref()), ("main", Some("traffic:1")));
        assert_eq!(main.image_pull_policy.as_deref(), Some("Never"));
        let script_as_run = format!("{}\n", script.trim_end());
        assert_eq!(
            main.command.clone().expect("a command"),
            ["/bin/sh", "-c", script_as_run.as_str()].map(str::to_owned)
        );
        let env = main.env.clone().expect("env");
        assert_eq!(env[0].name, "HOST_IP");
        let field = env[0].value_from.clone().and_then(|v| v.field_ref).expect("a field ref");
        assert_eq!(field.field_path, "status.hostIP");
        assert_eq!(main.ports.clone().expect("ports")[0].container_port, 8080);
    }

    #[test]
    fn a_stateful_set_names_its_service_and_a_service_selects_its_pods() {
        let set: StatefulSet = parse(
            &Workload::deployment("shop", "redis", "traffic:1", "sleep 1").stateful_set().yaml(),
        );
        assert_eq!(set.spec.service_name.as_deref(), Some("redis"));
        let svc: Service = parse(&service("shop", "redis", 6379));
        let spec = svc.spec.expect("a spec");
        assert_eq!(
            spec.selector.expect("a selector").get("app").map(String::as_str),
            Some("redis")
        );
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.port, 6379);
    }
}
