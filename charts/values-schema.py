#!/usr/bin/env python3
"""Writes charts/*/values.schema.json, the JSON Schemas (draft 7, as Helm 3 reads them) that
refuse wrong values at `helm install`: wrong types, unknown keys, settings missing when a
feature is on, malformed image tags, URLs, IPs and PEM.

    python3 charts/values-schema.py           # rewrite both schemas
    python3 charts/values-schema.py --check   # exit 1 if a committed schema differs (CI)
"""
import json
import pathlib
import sys

CHARTS = pathlib.Path(__file__).resolve().parent

# === Shared pieces ===

DNS_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"
PEM_CERTS = r"^(\s*-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*)+$"
PEM_PRIVATE_KEY = r"^\s*-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----\s*$"
IP = (r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
      r"|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+)$")


def obj(properties, required=()):
    """An object that refuses keys it does not know."""
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def nonempty(*keys):
    """`if`/`then` helper: these string keys are present and not empty."""
    return {"properties": {key: {"minLength": 1} for key in keys}, "required": list(keys)}


IMAGE = obj({
    "repository": {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$"},
    "tag": {"type": "string", "pattern": r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$",
            "description": "An image tag (a string: quote numbers such as \"1.2\"); empty for the chart's appVersion."},
    "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
}, ["repository", "tag", "pullPolicy"])
PROBE = obj({
    "initialDelaySeconds": {"type": "integer", "minimum": 0},
    "periodSeconds": {"type": "integer", "minimum": 1},
    "timeoutSeconds": {"type": "integer", "minimum": 1},
    "failureThreshold": {"type": "integer", "minimum": 1},
})
QUANTITY = {"oneOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"},
                      {"type": "number", "minimum": 0}]}
RESOURCES = obj({"requests": {"type": "object", "additionalProperties": QUANTITY},
                 "limits": {"type": "object", "additionalProperties": QUANTITY}})
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
EXTRA_ARGS = {"type": "array", "items": {"type": "string", "pattern": "^--"}}
PULL_SECRETS = {"type": "array", "items": obj({"name": {"type": "string", "minLength": 1}}, ["name"])}
LOG_FORMAT = {"enum": ["text", "json"]}
NAMES = {
    "global": {"type": "object"},  # what a parent chart passes down
    "nameOverride": {"type": "string", "maxLength": 40},
    "fullnameOverride": {"type": "string", "maxLength": 45, "pattern": DNS_NAME},
}


def placement():
    """Scheduling, resources and probes: every workload has them."""
    return {"podAnnotations": STRING_MAP, "nodeSelector": STRING_MAP,
            "tolerations": {"type": "array", "items": {"type": "object"}}, "affinity": {"type": "object"},
            "priorityClassName": {"type": "string"}, "extraArgs": EXTRA_ARGS, "resources": RESOURCES,
            "livenessProbe": PROBE, "readinessProbe": PROBE}


def chart(title, properties, required):
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": title, "type": "object",
            "additionalProperties": False, "required": required, "properties": {**NAMES, **properties}}


# === charts/cluster-agent ===

CLOUD = obj({
    "address": {"type": "string", "pattern": r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
                "description": "The cloud API's base URL; empty uploads nothing."},
    "clientId": {"type": "string"},
    "clientSecret": {"type": "string"},
    "existingSecret": {"type": "string", "pattern": DNS_NAME},
    "extraCA": {"type": "string", "pattern": f"^$|{PEM_CERTS}", "description": "PEM certificate(s)."},
    "uploadIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
}, ["address", "clientId", "clientSecret", "existingSecret", "extraCA"])
# Uploading needs credentials: the chart's Secret (clientId and clientSecret) or yours.
CLOUD["if"] = nonempty("address")
CLOUD["then"] = {"anyOf": [nonempty("existingSecret"), nonempty("clientId", "clientSecret")]}

AWS = obj({
    "visibility": obj({
        "enabled": {"type": "boolean"},
        "namespaces": {"type": "array", "uniqueItems": True,
                       "items": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                       "description": "The opted-in namespaces: the only ones the webhook patches and aws-proxy writes in."},
    }, ["enabled", "namespaces"]),
    "dnsClusterIP": {"type": "string", "pattern": f"^$|{IP}"},
    "clusterDNSFallback": {"type": "boolean"},
    "clusterDNSIP": {"type": "string", "pattern": f"^$|{IP}"},
    "accountId": {"type": "string", "pattern": r"^([0-9]{12})?$"},
    "passthroughHosts": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9.-]+$"}},
    "image": IMAGE,
    "replicas": {"type": "integer", "minimum": 1},
    "podDisruptionBudget": obj({"maxUnavailable": {"oneOf": [{"type": "integer", "minimum": 1},
                                                             {"type": "string", "pattern": r"^[0-9]+%$"}]}},
                               ["maxUnavailable"]),
    "maxConnections": {"type": "integer", "minimum": 1},
    "idleTimeoutSeconds": {"type": "integer", "minimum": 1},
    "networkPolicy": obj({"enabled": {"type": "boolean"},
                          "webhookFrom": {"type": "array", "items": {"type": "object", "minProperties": 1}}},
                         ["enabled", "webhookFrom"]),
    "webhookClientCA": {"type": "string", "pattern": f"^$|{PEM_CERTS}", "description": "PEM certificate(s)."},
    "webhookTimeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 30},
    **placement(),
}, ["visibility", "dnsClusterIP", "image", "podDisruptionBudget", "networkPolicy"])
# Patched pods resolve through the DNS server's fixed ClusterIP: there is no default for it; and
# the webhook patches only in the namespaces named.
AWS["if"] = {"properties": {"visibility": {"properties": {"enabled": {"const": True}}}}}
AWS["then"] = nonempty("dnsClusterIP")
AWS["then"]["properties"]["visibility"] = {"properties": {"namespaces": {"minItems": 1}}}

KAFKA = obj({
    "enabled": {"type": "boolean"},
    "brokers": {"type": "array", "items": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/\S+$"}},
    "container": {"type": "string", "pattern": DNS_NAME},
    "readFromStart": {"type": "boolean"},
}, ["enabled", "brokers"])
KAFKA["if"] = {"properties": {"enabled": {"const": True}}}
KAFKA["then"] = {"properties": {"brokers": {"minItems": 1}}}

CLUSTER_AGENT = chart("intentmap cluster-agent values", {
    "clusterName": {"type": "string", "maxLength": 63, "pattern": DNS_NAME},
    "clusterDomain": {"type": "string", "minLength": 1, "pattern": DNS_NAME},
    "logFormat": LOG_FORMAT,
    "imagePullSecrets": PULL_SECRETS,
    "cloud": CLOUD,
    "mapper": obj({
        "image": IMAGE,
        "edgeTTLSeconds": {"type": "integer", "minimum": 1},
        "maxEdges": {"type": "integer", "minimum": 1},
        "outbox": obj({"persistence": obj({
            "enabled": {"type": "boolean"},
            "size": {"type": "string", "pattern": r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"},
            "storageClass": {"type": "string"},
        }, ["enabled", "size"])}, ["persistence"]),
        "service": obj({"port": PORT}, ["port"]),
        "tokenAudience": {"type": "string", "minLength": 1, "pattern": r"^\S+$"},
        "loopbackAccess": {"type": "boolean"},
        "networkPolicy": obj({
            "enabled": {"type": "boolean"},
            "from": {"type": "array", "items": {"type": "object", "minProperties": 1}},
            "nodeCIDRs": {"type": "array", "items": {"type": "string", "pattern": r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$"}},
        }, ["enabled"]),
        **placement(),
    }, ["image", "outbox", "service", "tokenAudience", "networkPolicy"]),
    "node": obj({
        "image": IMAGE,
        "ebpf": {"type": "boolean"},
        "hostNetwork": {"type": "boolean"},
        "hostPID": {"type": "boolean"},
        "fallbackCapabilities": {"type": "boolean"},
        "networkPolicy": obj({"enabled": {"type": "boolean"},
                              "from": {"type": "array", "items": {"type": "object", "minProperties": 1}}}, ["enabled"]),
        "mountDebugfs": {"type": "boolean"},
        "scanIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
        "healthPort": PORT,
        "seccompProfile": {"enum": ["RuntimeDefault", "Unconfined"]},
        "appArmorProfile": {"enum": ["RuntimeDefault", "Unconfined"]},
        "maxUnavailable": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^[0-9]+%$"}]},
        **placement(),
    }, ["image", "ebpf", "hostNetwork", "hostPID", "healthPort"]),
    "aws": AWS,
    "kafka": KAFKA,
    "istio": obj({"enabled": {"type": "boolean"}, "scrapeIntervalSeconds": {"type": "integer", "minimum": 1}, "metricsPort": PORT,
                  "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
                 ["enabled"]),
}, ["clusterDomain", "logFormat", "cloud", "mapper", "node", "aws", "kafka", "istio"])
# Node agents on the host's network reach the mapper from their nodes' addresses: the mapper's
# NetworkPolicy must name them, or it would shut the agents out.
CLUSTER_AGENT["if"] = {"properties": {"node": {"properties": {"hostNetwork": {"const": True}}, "required": ["hostNetwork"]},
                                      "mapper": {"properties": {"networkPolicy": {"properties": {"enabled": {"const": True}}}}}}}
CLUSTER_AGENT["then"] = {"properties": {"mapper": {"properties": {"networkPolicy": {"required": ["nodeCIDRs"],
                                                                                    "properties": {"nodeCIDRs": {"minItems": 1}}}}}}}

# === charts/cloud-api ===

DATABASE = obj({
    "url": {"type": "string", "pattern": r"^(postgres(ql)?://\S+)?$", "description": "The schema owner's URL (migrations only)."},
    "appUrl": {"type": "string", "pattern": r"^(postgres(ql)?://[^\s/@]+@\S+)?$",
               "description": "The serving login role's URL, naming its role: postgres://<role>:<password>@<host>/<database>."},
    "existingSecret": {"type": "string", "pattern": DNS_NAME},
    "existingSecretKey": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"},
    "existingSecretAppKey": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"},
    "maxConnections": {"type": "integer", "minimum": 1},
}, ["url", "appUrl", "existingSecret", "existingSecretKey", "existingSecretAppKey"])
# Both URLs in values, or a Secret with both.
DATABASE["anyOf"] = [nonempty("url"), nonempty("existingSecret")]
DATABASE["if"] = nonempty("url")
DATABASE["then"] = nonempty("appUrl")

JWT = obj({
    "existingSecret": {"type": "string", "pattern": DNS_NAME},
    "existingSecretKeys": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"}},
    "keys": {"type": "array", "items": {"type": "string", "pattern": PEM_PRIVATE_KEY}},
    "generate": {"type": "boolean"},
    "issuer": {"type": "string", "minLength": 1},
    "audience": {"type": "string", "minLength": 1},
    "lifetimeSeconds": {"type": "integer", "minimum": 1},
}, ["existingSecret", "keys", "generate"])

TOKEN_HASH_KEY = obj({
    "existingSecret": {"type": "string", "pattern": DNS_NAME},
    "existingSecretKeys": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"}},
    "generate": {"type": "boolean"},
}, ["existingSecret", "generate"])

AUTH = obj({
    "ratePerAddress": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
    "burstPerAddress": {"type": "integer", "minimum": 1},
    "clientFailuresPerMinute": {"type": "integer", "minimum": 1},
    "concurrency": {"type": "integer", "minimum": 1},
    "trustForwardedFor": {"type": "boolean"},
}, ["ratePerAddress", "burstPerAddress", "clientFailuresPerMinute", "concurrency", "trustForwardedFor"])

CLOUD_API = chart("intentmap cloud-api values", {
    "image": IMAGE,
    "imagePullSecrets": PULL_SECRETS,
    "replicaCount": {"type": "integer", "minimum": 1},
    "logFormat": LOG_FORMAT,
    "database": DATABASE,
    "migrations": obj({"enabled": {"type": "boolean"}, "resources": RESOURCES}, ["enabled"]),
    "jwt": JWT,
    "tokenHashKey": TOKEN_HASH_KEY,
    "auth": AUTH,
    "reads": obj({"maxEdges": {"type": "integer", "minimum": 1}, "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
                  "summaryMaxStaleSeconds": {"type": "number", "minimum": 0}},
                 ["maxEdges", "timeoutSeconds", "summaryMaxStaleSeconds"]),
    "retention": obj({"intervalSeconds": {"type": "number", "minimum": 0.1},
                      "batch": {"type": "integer", "minimum": 1, "maximum": 100000},
                      "reportReplayWindowDays": {"type": "integer", "minimum": 1, "maximum": 3650}},
                     ["intervalSeconds", "batch", "reportReplayWindowDays"]),
    "metrics": obj({"enabled": {"type": "boolean"}, "port": PORT}, ["enabled", "port"]),
    "allowPlainHTTP": {"type": "boolean",
                       "description": "Let an Ingress without TLS, or a NodePort/LoadBalancer Service, serve plain HTTP."},
    "maxBodyBytes": {"type": "integer", "minimum": 1},
    "maxDecompressedBytes": {"type": "integer", "minimum": 1},
    "service": obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "port": PORT, "annotations": STRING_MAP},
                   ["type", "port"]),
    "ingress": obj({
        "enabled": {"type": "boolean"},
        "className": {"type": "string"},
        "annotations": STRING_MAP,
        "host": {"type": "string", "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "tlsSecretName": {"type": "string", "pattern": DNS_NAME},
    }, ["enabled", "host"]),
    "podDisruptionBudget": obj({"maxUnavailable": {"oneOf": [{"type": "integer", "minimum": 1},
                                                             {"type": "string", "pattern": r"^[0-9]+%$"}]}}),
    **placement(),
}, ["image", "replicaCount", "logFormat", "database", "migrations", "jwt", "tokenHashKey", "auth", "reads", "retention", "metrics",
    "allowPlainHTTP", "service"])
# Replicas verify each other's tokens only with shared keys.
CLOUD_API["if"] = {"properties": {"replicaCount": {"minimum": 2}}}
CLOUD_API["then"] = {"properties": {"jwt": {"anyOf": [nonempty("existingSecret"), {"properties": {"keys": {"minItems": 1}}},
                                                      {"properties": {"generate": {"const": True}}}]}}}
# Secrets and tokens cross the network: plain HTTP outside the cluster only when asked for.
PLAIN_HTTP_ALLOWED = {"properties": {"allowPlainHTTP": {"const": True}}, "required": ["allowPlainHTTP"]}
CLOUD_API["allOf"] = [
    {"if": {"properties": {"ingress": {"properties": {"enabled": {"const": True}, "tlsSecretName": {"maxLength": 0}}}}},
     "then": PLAIN_HTTP_ALLOWED},
    {"if": {"properties": {"service": {"properties": {"type": {"enum": ["NodePort", "LoadBalancer"]}}}}},
     "then": PLAIN_HTTP_ALLOWED},
]

SCHEMAS = {"cluster-agent": CLUSTER_AGENT, "cloud-api": CLOUD_API}


def main():
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, schema in SCHEMAS.items():
        path = CHARTS / name / "values.schema.json"
        text = json.dumps(schema, indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 charts/values-schema.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
